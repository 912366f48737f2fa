"""Learning curves and a summary table from run folders (or a multirun folder).

    lightning-marl-plot multirun/2026-11-21/12-00-00 --metric test/return_mean --out curves.png

Every folder below the given paths that holds a ``metrics.csv`` and a ``.hydra/config.yaml`` is one
run; runs are grouped by mixer (and central information when it is not the mixer's default), and
each group is drawn as its mean over seeds with a 95% interval (Student t) against env steps.
The summary gives, per group, the final and the best evaluation (mean ± 95% CI over seeds).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from lightning_marl.arguments import OneLineParser, at_least, fail
from lightning_marl.registry import MIXERS
from lightning_marl.stats import mean_ci


def find_runs(paths: list[str]) -> list[Path]:
    runs = []
    for path in map(Path, paths):
        for csv in sorted(path.rglob("metrics.csv")):
            if (csv.parent / ".hydra" / "config.yaml").is_file():
                runs.append(csv.parent)
    return runs


def load_curve(run: Path, metric: str) -> tuple[str, str, pd.Series]:
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    try:
        frame = pd.read_csv(run / "metrics.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        fail(f"{run / 'metrics.csv'} is not a metrics table ({str(err).splitlines()[0][:100]}); allowed: a "
             "metrics.csv written by train.py")
    if "env_steps" not in frame.columns:
        fail(f"{run / 'metrics.csv'} has no env_steps column; allowed: a metrics.csv written by train.py")
    if metric not in frame.columns:
        fail(f"--metric {metric}: {run / 'metrics.csv'} has no such column; allowed: "
             + ", ".join(c for c in frame.columns if c.startswith("test/")))
    rows = frame.dropna(subset=[metric]).drop_duplicates("env_steps", keep="last").sort_values("env_steps")
    if rows.empty:
        fail(f"{run / 'metrics.csv'} has no {metric} value; allowed: runs with at least one evaluation")
    default = getattr(MIXERS.config(cfg.mixer.name)(), "central_info", None)  # the mixer's own default
    central = cfg.mixer.central_info if "central_info" in cfg.mixer else default
    label = cfg.mixer.name if central == default else f"{cfg.mixer.name} ({central})"
    return label, cfg.env.name, pd.Series(rows[metric].to_numpy(), index=rows["env_steps"].to_numpy())


def summarize(groups: dict[str, list[pd.Series]], grids: dict[str, np.ndarray]):
    table, curves = [], {}
    for label, series in sorted(groups.items()):
        grid = grids[label]
        values = np.stack([np.interp(grid, s.index, s.to_numpy()) for s in series])  # seeds x grid
        mean, half = zip(*(mean_ci(values[:, j]) for j in range(len(grid))))
        curves[label] = (np.array(mean), np.array(half))
        final = mean_ci([s.iloc[-1] for s in series])
        best = mean_ci([s.max() for s in series])
        table.append((label, len(series), final, best, [float(s.iloc[-1]) for s in series]))
    return curves, table


def same_length(groups: dict[str, list[tuple[Path, pd.Series]]], truncate: bool) -> dict[str, list[pd.Series]]:
    """Each group's runs, cut at the group's shortest run when ``truncate``; runs of one group that
    end at different env steps are refused otherwise (a mean over them would mix budgets)."""
    out = {}
    for label, runs in groups.items():
        ends = {run: int(series.index.max()) for run, series in runs}
        shortest = min(ends.values())
        if len(set(ends.values())) > 1:
            listed = ", ".join(f"{run} ({end})" for run, end in sorted(ends.items(), key=lambda kv: kv[1]))
            if not truncate:
                fail(f"the runs of {label} end at different env steps: {listed}; allowed: runs of one budget, or "
                     "--truncate to cut them all at the shortest")
            print(f"warning: the runs of {label} end at different env steps ({listed}); cut at {shortest}",
                  file=sys.stderr)
        out[label] = [series[series.index <= shortest] for _, series in runs]
    return out


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain runs")
    parser.add_argument("--metric", default="test/return_mean", help="e.g. test/return_mean, test/battle_won_mean")
    parser.add_argument("--out", default="learning_curves.png")
    parser.add_argument("--points", type=at_least(2), default=100, help="env-step grid size for averaging")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also count, per group, the seeds whose final value is >= this")
    parser.add_argument("--truncate", action="store_true",
                        help="cut the runs of a group at its shortest run (else runs of different lengths are refused)")
    args = parser.parse_args(argv)
    if not Path(args.out).resolve().parent.is_dir():
        fail(f"--out {args.out}: the folder {Path(args.out).resolve().parent} does not exist; allowed: a path in an "
             "existing folder")
    runs = find_runs(args.paths)
    if not runs:
        fail(f"no runs (metrics.csv + .hydra/config.yaml) under {', '.join(args.paths)}; allowed: run folders or "
             "folders that hold them")
    loaded = [(run, *load_curve(run, args.metric)) for run in runs]
    envs = {env for _, _, env, _ in loaded}
    by_label: dict[str, list[tuple[Path, pd.Series]]] = defaultdict(list)
    for run, label, env, series in loaded:
        by_label[label if len(envs) == 1 else f"{env}/{label}"].append((run, series))
    groups = same_length(by_label, args.truncate)
    grids = {label: np.linspace(0, max(s.index.max() for s in ss), args.points) for label, ss in groups.items()}
    curves, table = summarize(groups, grids)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (mean, half) in curves.items():
        grid = grids[label]
        line, = ax.plot(grid, mean, label=f"{label} (n={len(groups[label])})")
        ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(args.metric)
    ax.set_title(f"{', '.join(sorted(envs))}: mean and 95% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")
    extra = f"  final >= {args.threshold:g}" if args.threshold is not None else ""
    print(f"{'group':<24} {'seeds':>5} {'final':>18} {'best':>18}{extra}")
    for label, n, final, best, finals in table:
        count = f"  {sum(v >= args.threshold for v in finals)}/{n}" if args.threshold is not None else ""
        print(f"{label:<24} {n:>5} {final[0]:>9.3f} ± {final[1]:<6.3f} {best[0]:>9.3f} ± {best[1]:<6.3f}{count}")


if __name__ == "__main__":
    main()
