"""Another framework's runs in a study (``peer:`` in the spec): its command for a run, and its results
read into this trainer's record format (``metrics.csv`` with ``env_steps`` and ``test/return_mean``;
its own config as ``peer_config.json``), so that one report aggregates both frameworks alike.

A peer run is never resumed: one stopped before it finished starts over (its folder emptied).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from lightning_marl.errors import ConfigError
from lightning_marl.study.spec import PEER_READERS, Run

PLACEHOLDER = re.compile(r"\{([\w.]+)\}")
METRICS, CONFIG = "metrics.csv", "peer_config.json"


def command(run: Run) -> list[str]:
    """The peer's command for ``run``: ``{seed}``, ``{mixer}``, ``{folder}`` and ``{<key>}`` of this
    trainer's config of the same run filled in."""
    from omegaconf import OmegaConf

    from lightning_marl.config import compose

    cfg = None
    fixed = {"seed": str(run.seed), "mixer": run.mixer, "folder": str(run.folder)}

    def fill(match: re.Match) -> str:
        nonlocal cfg
        key = match.group(1)
        if key in fixed:
            return fixed[key]
        if cfg is None:
            cfg = compose(list(run.argv))
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            raise ConfigError(f"peer {run.peer.name}: {{{key}}} in its command is not a setting of the run "
                              f"({' '.join(run.argv)}); allowed: seed, mixer, folder and the run's config keys")
        return str(value.value if hasattr(value, "value") else value)

    return [PLACEHOLDER.sub(fill, part) for part in run.peer.command]


def start_over(run: Run, keep: tuple[str, ...]) -> None:
    """Empty the folder of a peer run that did not finish, but for ``keep`` (the runner's own files)."""
    for path in run.folder.iterdir() if run.folder.is_dir() else ():
        if path.name in keep:
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def read_epymarl(folder: Path) -> tuple[pd.DataFrame, dict]:
    """EPyMARL's sacred files (``<results>/sacred/.../<id>/metrics.json`` and ``config.json``): its test
    returns (``test_return_mean``, at the env steps sacred recorded) and its training returns."""
    base = folder / "results" if (folder / "results").is_dir() else folder  # (not a link to its source)
    found = sorted(base.rglob("metrics.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: {len(found)} sacred metrics.json files; expected 1")
    metrics = json.loads(found[0].read_text())
    columns = {"test/return_mean": "test_return_mean", "train/return": "return_mean"}
    frames = [pd.DataFrame({"env_steps": metrics[key]["steps"], name: metrics[key]["values"]})
              for name, key in columns.items() if key in metrics]
    if not frames or "test_return_mean" not in metrics:
        raise KeyError(f"{found[0]}: no test_return_mean")
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.merge(other, on="env_steps", how="outer")
    config = found[0].parent / "config.json"
    return frame.sort_values("env_steps"), json.loads(config.read_text()) if config.is_file() else {}


def read_benchmarl(folder: Path) -> tuple[pd.DataFrame, dict]:
    """BenchMARL's csv logger (``<save_folder>/<experiment>/<experiment>/scalars/*.csv``, rows of iteration
    and value, no header) and its Hydra config (``.hydra/config.yaml`` of its run folder): the evaluation
    return (``eval_reward_episode_reward_mean``: the episode's summed reward, averaged over the agents)
    against frames (``counters_total_frames`` of the same iteration)."""
    scalars = sorted(folder.rglob("scalars"))
    if len(scalars) != 1:
        raise FileNotFoundError(f"{folder}: {len(scalars)} BenchMARL scalars folders; expected 1")
    read = {p.stem: pd.read_csv(p, header=None, names=["step", "value"]) for p in scalars[0].glob("*.csv")}
    if "eval_reward_episode_reward_mean" not in read or "counters_total_frames" not in read:
        raise KeyError(f"{scalars[0]}: no eval_reward_episode_reward_mean or counters_total_frames")
    frames = read["counters_total_frames"].rename(columns={"value": "env_steps"})
    test = read["eval_reward_episode_reward_mean"].rename(columns={"value": "test/return_mean"})
    frame = test.merge(frames, on="step", how="left")[["env_steps", "test/return_mean"]]
    config = folder / ".hydra" / "config.yaml"
    if config.is_file():
        import yaml

        return frame.sort_values("env_steps"), yaml.safe_load(config.read_text())
    return frame.sort_values("env_steps"), {}


READERS: dict[str, Callable[[Path], tuple[pd.DataFrame, dict]]] = {"epymarl": read_epymarl,
                                                                   "benchmarl": read_benchmarl}
assert tuple(READERS) == PEER_READERS


def record_results(run: Run) -> None:
    """Write the finished peer run's ``metrics.csv`` and ``peer_config.json`` into its folder."""
    frame, config = READERS[run.peer.reader](run.folder)
    frame.to_csv(run.folder / METRICS, index=False)
    (run.folder / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
