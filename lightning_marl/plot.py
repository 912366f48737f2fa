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

from lightning_marl.config.schema import MIXER_SCHEMAS
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
    frame = pd.read_csv(run / "metrics.csv")
    if metric not in frame.columns:
        raise SystemExit(f"{run}: no column {metric!r}; allowed: "
                         + ", ".join(c for c in frame.columns if c.startswith("test/")))
    rows = frame.dropna(subset=[metric]).drop_duplicates("env_steps", keep="last").sort_values("env_steps")
    default = getattr(MIXER_SCHEMAS[cfg.mixer.name](), "central_info", None)  # the mixer's own default
    central = cfg.mixer.central_info if "central_info" in cfg.mixer else default
    label = cfg.mixer.name if central == default else f"{cfg.mixer.name} ({central})"
    return label, cfg.env.name, pd.Series(rows[metric].to_numpy(), index=rows["env_steps"].to_numpy())


def summarize(groups: dict[str, list[pd.Series]], grid: np.ndarray):
    table, curves = [], {}
    for label, series in sorted(groups.items()):
        values = np.stack([np.interp(grid, s.index, s.to_numpy()) for s in series])  # seeds x grid
        mean, half = zip(*(mean_ci(values[:, j]) for j in range(len(grid))))
        curves[label] = (np.array(mean), np.array(half))
        final = mean_ci([s.iloc[-1] for s in series])
        best = mean_ci([s.max() for s in series])
        table.append((label, len(series), final, best, [float(s.iloc[-1]) for s in series]))
    return curves, table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run folders or folders that contain runs")
    parser.add_argument("--metric", default="test/return_mean", help="e.g. test/return_mean, test/battle_won_mean")
    parser.add_argument("--out", default="learning_curves.png")
    parser.add_argument("--points", type=int, default=100, help="env-step grid size for averaging")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also count, per group, the seeds whose final value is >= this")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        raise SystemExit(f"no runs (metrics.csv + .hydra/config.yaml) under {', '.join(args.paths)}")
    loaded = [load_curve(run, args.metric) for run in runs]
    envs = {env for _, env, _ in loaded}
    groups: dict[str, list[pd.Series]] = defaultdict(list)
    for label, env, series in loaded:
        groups[label if len(envs) == 1 else f"{env}/{label}"].append(series)
    end = min(s.index.max() for ss in groups.values() for s in ss)
    grid = np.linspace(0, end, args.points)
    curves, table = summarize(groups, grid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (mean, half) in curves.items():
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
