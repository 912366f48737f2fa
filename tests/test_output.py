"""What a run prints: a progress bar over env steps (starting at a resumed run's step), no known-
harmless library noise, and the run's own messages in its log file."""
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from callbacks.progress import postfix
from lightning_marl.config.schema import LoggerConfig, MLflowLoggerConfig, WandbLoggerConfig
from lightning_marl.config.validate import check_logger_packages
from lightning_marl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RUN = ["env=matrix", "mixer=qmix", "data.warmup_episodes=8", "data.batch_size=8", "checkpoint.every_n_updates=20",
       "eval.interval_env_steps=200", "eval.episodes=4"]
# the four kinds of message issue 16 names; none of them may reach the console
NOISE = ("Tip:", "litlogger", "dataloader_iter", "LeafSpec", "weights_only", "Traceback")
BAR = re.compile(r"train: (\d+)/(\d+) env steps \|.*\| +\d+% \[[\d:]+<[\d:?]+, +(?:[\d.]+k?|\?) env steps/s"
                 r"(?:, (?:train -?[\d.]+ \| )?test -?[\d.]+ \| eps [\d.]+)?\]")


def train(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def bar_lines(stdout: str) -> list[re.Match]:
    return [m for line in stdout.replace("\r", "\n").splitlines() if (m := BAR.search(line))]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("output") / "run"
    return folder, train(*RUN, "total_env_steps=600", f"hydra.run.dir={folder}")


def test_console_has_the_progress_bar_and_no_known_noise(short_run):
    folder, proc = short_run
    console = proc.stdout + proc.stderr
    for text in NOISE:
        assert text not in console, f"{text!r} on the console"
    bars = bar_lines(proc.stdout)
    assert bars, proc.stdout[-2000:]
    last = bars[-1]
    assert int(last.group(2)) == 600 and int(last.group(1)) == 600  # the budget, reached; integers
    assert "test " in last.group(0) and "eps " in last.group(0)


def test_the_log_file_holds_the_runs_messages(short_run):
    folder, proc = short_run
    text = (folder / "train.log").read_text()
    assert f"run folder: {folder}" in text
    evaluations = pd.read_csv(folder / "metrics.csv").dropna(subset=["test/return_mean"])
    logged = re.findall(r"greedy evaluation at env step (\d+)", text)
    assert [int(s) for s in logged] == [int(s) for s in evaluations["env_steps"]]
    assert "checkpoint written: " in text and "last.ckpt" in text
    assert re.search(r"final greedy evaluation after \d+ env steps: test/return_mean=", text)
    for noise in NOISE:
        assert noise not in text


def test_a_resumed_run_starts_its_bar_at_its_step(short_run, tmp_path):
    folder, proc = short_run
    done = int(re.search(r"final greedy evaluation after (\d+) env steps", proc.stdout).group(1))
    resumed = train(f"resume={folder}", "total_env_steps=1200")
    bars = bar_lines(resumed.stdout)
    assert int(bars[0].group(1)) == done and int(bars[0].group(2)) == 1200
    assert int(bars[-1].group(1)) == 1200
    session_logs = list((folder / "resumed").glob("*/train.log"))
    assert len(session_logs) == 1 and "continuing from " in session_logs[0].read_text()


def test_postfix_shows_what_the_env_reports():
    assert postfix(None, {}, 1.0) == "eps 1.000"
    assert postfix(18.104, {"test/return_mean": 19.3}, 0.05) == "train 18.10 | test 19.30 | eps 0.050"
    assert postfix(1.0, {"test/return_mean": 2.0, "test/battle_won_mean": 0.6}, 0.05) == \
        "train 1.00 | test 2.00 | won 0.60 | eps 0.050"


@pytest.mark.parametrize("logger, module, extra", [("wandb", "wandb", "wandb"), ("mlflow", "mlflow", "mlflow")])
def test_a_missing_logger_package_is_refused_with_its_install_line(monkeypatch, logger, module, extra):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    chosen = LoggerConfig(wandb=WandbLoggerConfig()) if logger == "wandb" else LoggerConfig(mlflow=MLflowLoggerConfig())
    with pytest.raises(ConfigError, match=rf"logger={logger} needs the {module} package.*pip install "
                                          rf"'lightning_marl\[{extra}\]'"):
        check_logger_packages(chosen)


def test_warnings_still_reach_stderr_while_the_bar_is_shown(capsys):
    """Console handlers as the run sets them up (information on stdout, warnings on stderr) keep
    their streams and filters when they write above the bar."""
    import logging

    from callbacks.progress import restore_handlers, write_above_bar
    from lightning_marl.output import BelowWarning

    logger = logging.getLogger("test_bar_console")
    logger.propagate, logger.level = False, logging.INFO
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(BelowWarning())
    err.setLevel(logging.WARNING)
    logger.handlers = [out, err]
    swaps = write_above_bar(logger)
    assert len(swaps) == 2 and out not in logger.handlers
    logger.info("information")
    logger.warning("a warning")
    restore_handlers(logger, swaps)
    assert set(logger.handlers) == {out, err}
    captured = capsys.readouterr()
    assert "information" in captured.out and "a warning" not in captured.out
    assert "a warning" in captured.err and "information" not in captured.err
