"""The installed package: callbacks and configs inside lightning_marl, console entry points, no
top-level `callbacks` module (checked on the wheel that `pip install <checkout>` builds)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("lightning_marl-*.whl")
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) if name.endswith("entry_points.txt") else None for name in zf.namelist()}


def test_the_wheel_holds_callbacks_and_configs_inside_the_package(wheel):
    names = set(wheel)
    assert "lightning_marl/callbacks/epsilon.py" in names and "lightning_marl/callbacks/evaluation.py" in names
    assert "lightning_marl/configs/config.yaml" in names
    assert "lightning_marl/configs/env_defaults/box_pushing.yaml" in names
    assert "lightning_marl/configs/experiment/reference/smaclite_2s3z.yaml" in names
    assert not any(name.startswith(("callbacks/", "configs/", "tests/", "scripts/")) for name in names)


def test_the_wheel_has_the_console_entry_points(wheel):
    (entry,) = [v for k, v in wheel.items() if k.endswith("entry_points.txt")]
    text = entry.decode()
    for line in ("lightning-marl-train = lightning_marl.cli:train", "lightning-marl-evaluate = lightning_marl.evaluate:main",
                 "lightning-marl-plot = lightning_marl.plot:main"):
        assert line in text


def test_scripts_do_not_edit_sys_path():
    for script in (ROOT / "scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script
