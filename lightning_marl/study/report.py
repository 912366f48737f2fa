"""A study's report: per configuration and preset the IQM of the final score and of its area under
the curve with stratified bootstrap 95% intervals, the probability of improvement between the
spec's pairs, performance profiles and IQM learning curves (``report.md`` and ``figures/``), read
from the runs' records (:mod:`.records`)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from lightning_marl.study import aggregate as agg
from lightning_marl.study.records import finished_record, is_finished, record, reused_from, sessions
from lightning_marl.study.reuse import effective
from lightning_marl.study.spec import Run, StudySpec


def read_curve(run: Run, metric: str) -> Optional[pd.Series]:
    """The run's evaluations of ``metric`` indexed by env step (None if it has none)."""
    path = record(run) / "metrics.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if metric not in frame.columns:
        return None
    rows = frame.dropna(subset=[metric]).drop_duplicates("env_steps", keep="last").sort_values("env_steps")
    return pd.Series(rows[metric].to_numpy(dtype=float), index=rows["env_steps"].to_numpy(dtype=float))


def collect(spec: StudySpec, runs: list[Run]) -> dict:
    """{(preset, label): {"final": [...], "auc": [...], "settled": [...], "fell_back": n, "curves": [...],
    "extra": {metric: [...]}, "wall": [...], "memory": [...], "mixer_parameters": n, "cut": n,
    "horizon": h}}. Scores are taken up to the preset's common horizon (:func:`.aggregate.common_horizon`;
    ``"cut"`` counts the runs whose later evaluations were left out of them); ``"curves"`` are whole."""
    out: dict = defaultdict(lambda: {"final": [], "auc": [], "settled": [], "fell_back": 0, "curves": [],
                                     "extra": defaultdict(list), "wall": [], "memory": [], "cut": 0})
    curves = {run: read_curve(run, spec.metric) for run in runs if is_finished(run)}
    curves = {run: curve for run, curve in curves.items() if curve is not None and not curve.empty}
    horizons = {preset: agg.common_horizon([c.index[-1] for r, c in curves.items() if r.preset == preset])
                for preset in {r.preset for r in curves}}
    for run, curve in curves.items():
        cell = out[(run.preset, run.label)]
        if "mixer_parameters" not in cell:  # the same for every seed of a configuration
            cell["mixer_parameters"] = mixer_parameters(run)
        steps, values = agg.up_to(curve.index.to_numpy(), curve.to_numpy(), horizons[run.preset])
        cell["cut"] += len(steps) < len(curve)
        cell["horizon"] = horizons[run.preset]
        cell["final"].append(float(values[-1]))
        cell["auc"].append(agg.area_under_curve(steps, values))
        cell["settled"].append(agg.settled_at(steps, values, spec.tolerance))
        cell["fell_back"] += agg.fell_back(values, spec.tolerance)
        cell["curves"].append(curve)
        cell["wall"].append(finished_record(run).get("wall_s", float("nan")))
        cell["memory"].append(finished_record(run).get("peak_rss_mb", float("nan")))
        for metric in spec.metrics:
            extra = read_curve(run, metric)
            if extra is not None and not extra.empty:
                _, kept = agg.up_to(extra.index, extra.to_numpy(), horizons[run.preset])
                cell["extra"][metric].append(float(kept[-1]))
    return out


def mixer_parameters(run: Run) -> Optional[int]:
    """The number of parameters of the run's mixing network (its saved config rebuilt; Q1 compares
    mixers of different sizes); None where the run left no config."""
    from omegaconf import OmegaConf

    from lightning_marl.config.migrate import migrate_config
    from lightning_marl.config.schema import EnvWorkers
    from lightning_marl.data.environments import describe_env
    from lightning_marl.envs import env_config, make_env
    from lightning_marl.module import MARLModule

    path = record(run) / ".hydra" / "config.yaml"
    if run.peer is not None or not path.is_file():
        return None
    saved = migrate_config(OmegaConf.to_container(OmegaConf.load(path)))
    env = make_env(env_config(saved["env"]), 1, 0, workers=EnvWorkers.in_process)
    info = describe_env(env)
    env.close()
    module = MARLModule.from_saved(info, saved["agent"], saved["mixer"], saved["learner"])
    return sum(p.numel() for p in module.mixer.parameters())


def provenance(spec: StudySpec, runs: list[Run], spec_path: Optional[str]) -> list[str]:
    """How to reproduce the study and what its runs ran on: the commands, the grid, the effective
    settings of each preset (:func:`preset_settings`), machines, code versions, wall time."""
    finished = [r for r in runs if is_finished(r)]
    records = {r: finished_record(r) for r in finished}
    path = spec_path or f"studies/{spec.name}.yaml"
    lines = ["## How it was run", "", "```bash",
             f"python scripts/study.py run {path} --jobs 1      # skips finished runs; resumes interrupted ones",
             f"python scripts/study.py report {path} --out <this folder>", "```", "",
             f"Grid: presets {', '.join(spec.presets)}; mixers {', '.join(spec.mixers)}; "
             + (f"central_info {', '.join(str(z) for z in spec.central_info)}; " if spec.central_info != [None] else "")
             + (f"variants {', '.join(f'{k or chr(34) * 2}: {v}' for k, v in spec.variants.items())}; "
                if spec.variants != {"": []} else "")
             + f"seeds {', '.join(map(str, spec.seeds))}"
             + (f"; on every run: {' '.join(spec.overrides)}" if spec.overrides else "") + ".", ""]
    if spec.peer is not None:
        peer = spec.peer
        lines += [f"Runs labelled `{peer.name}` are {peer.name}'s own ({', '.join(peer.mixers)}; "
                  f"read by `lightning_marl/study/peers.py: read_{peer.reader}`; each run's config is its "
                  "`peer_config.json` in the archive), started as", "", "```bash",
                  " ".join(peer.command), "```", "",
                  "with `{key}` the setting of this trainer's run of the same preset, mixer and seed.", ""]
    hosts = Counter((rec.get("host", "?"), rec.get("machine", "not recorded")) for rec in records.values())
    lines += ["Machines (runs): " + "; ".join(f"{host}: {desc} ({n})" for (host, desc), n in hosts.items()) + "."
              if hosts else "Machines: no finished run yet.", ""]
    codes = Counter(" + ".join(rec["code"]) if rec.get("code") else "not recorded" for rec in records.values())
    if codes:
        lines += ["Code (commit of each session of a run; runs): "
                  + "; ".join(f"{code} ({n})" for code, n in codes.items()) + ".", ""]
    wall = sum(rec.get("wall_s", 0.0) for r, rec in records.items() if not rec.get("reused_from"))
    lines += [f"Training time of the runs trained for this study: {wall / 3600:.1f} h (sum of wall times).", ""]
    for preset in spec.presets:
        lines += preset_settings(preset, [r for r in finished if r.preset == preset and not r.variant])
    return lines


def preset_settings(preset: str, runs: list[Run]) -> list[str]:
    """The effective settings of ``preset`` as its finished runs (without a variant) recorded them, in
    today's layout and less the mixer, the seed and the output-only settings; says in how many of the
    runs they are exactly these and, where runs differ (e.g. trained before a preset changed), in what."""
    import yaml
    from omegaconf import OmegaConf

    settings = {}
    for run in runs:
        path = record(run) / ".hydra" / "config.yaml"
        if path.is_file():
            cfg = effective(OmegaConf.to_container(OmegaConf.load(path)))
            for key in ("mixer", "seed"):
                cfg.pop(key, None)
            settings[run] = cfg
    if not settings:
        return []
    texts = {run: json.dumps(cfg, sort_keys=True) for run, cfg in settings.items()}  # canonical, compared
    common, count = Counter(texts.values()).most_common(1)[0]
    shown = next(settings[run] for run, text in texts.items() if text == common)
    lines = [f"<details><summary>Effective settings of {preset} (the recorded config in today's layout, less "
             f"mixer, seed and output-only settings; the same in {count} of its {len(settings)} runs without a "
             "variant)</summary>", "", "```yaml", yaml.safe_dump(shown, sort_keys=False).rstrip(), "```"]
    for run, text in texts.items():
        if text != common:
            differing = ", ".join(sorted(_differing(shown, settings[run])))
            lines += ["", f"{run.label} seed {run.seed} differs in: {differing}."]
    return lines + ["</details>", ""]


def _differing(a: dict, b: dict, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between the nested dicts ``a`` and ``b``."""
    keys = set()
    for key in set(a) | set(b):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys |= _differing(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.add(f"{prefix}{key}")
    return keys


def _fmt(triple) -> str:
    value, low, high = triple
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"


def _fmt_steps(triple) -> str:
    def steps(x: float) -> str:
        return f"{x / 1e3:.0f}k" if x >= 1e4 else f"{x:.0f}"

    value, low, high = triple
    return f"{steps(value)} [{steps(low)}, {steps(high)}]"


def _median(values: list[float]) -> str:
    known = [v for v in values if v == v]  # runs finished before memory was recorded have none
    return f"{np.median(known):.0f}" if known else "-"


def _grid(curves: list[pd.Series]) -> np.ndarray:
    """Common env-step grid of a configuration's curves: the shortest run's evaluation steps."""
    return min((c.index.to_numpy() for c in curves), key=len)


def _scores(cells: dict, preset: str, labels: list[str], key: str, metric: Optional[str] = None) -> dict:
    """{label: (seeds, 1) array} of one score of ``preset``'s configurations (``key`` "final", "auc",
    "settled", or "extra" with ``metric``), the layout rliable's aggregation takes; configurations
    without any value of it are left out."""
    values = {lbl: cells[(preset, lbl)][key] if metric is None else cells[(preset, lbl)][key][metric]
              for lbl in labels}
    return {lbl: np.array(v)[:, None] for lbl, v in values.items() if v}


def _score_table(spec: StudySpec, cells: dict, preset: str, labels: list[str]) -> list[str]:
    """The preset's table (IQM final, AUC, settled-at and further metrics with intervals, falls,
    mixer size, wall time, memory), its published values, its horizon cut and its P(X > Y) pairs."""
    finals = _scores(cells, preset, labels, "final")
    final_ci = agg.iqm_with_interval(finals)
    auc_ci = agg.iqm_with_interval(_scores(cells, preset, labels, "auc"))
    settled_ci = agg.iqm_with_interval(_scores(cells, preset, labels, "settled"))
    extra_ci = {}
    for m in spec.metrics:
        scored = _scores(cells, preset, labels, "extra", m)
        extra_ci[m] = agg.iqm_with_interval(scored) if scored else {}
    extra_columns = "".join(f"IQM final {m} | " for m in spec.metrics)
    header = (f"| configuration | seeds | IQM final | IQM AUC | IQM settled at (env steps) | fell back | "
              f"{extra_columns}mixer parameters | wall s (median) | peak memory MiB (median) |")
    lines = [f"## {preset}", "", header, "|" + "---|" * (9 + len(spec.metrics))]
    for lbl in labels:
        cell = cells[(preset, lbl)]
        extras = [_fmt(extra_ci[m][lbl]) if lbl in extra_ci[m] else "-" for m in spec.metrics]
        params = cell["mixer_parameters"]
        lines.append(f"| {lbl} | {len(cell['final'])} | {_fmt(final_ci[lbl])} | {_fmt(auc_ci[lbl])} | "
                     f"{_fmt_steps(settled_ci[lbl])} | {cell['fell_back']} of {len(cell['final'])} | "
                     + " | ".join(extras) + (" | " if extras else "")
                     + f"{'-' if params is None else f'{params:,}'} | {np.median(cell['wall']):.0f} | "
                     + f"{_median(cell['memory'])} |")
    lines.append("")
    published = [f"{lbl}: {text}" for lbl, text in spec.published.items()]
    if published:
        lines += ["Published values (context: their own budgets and settings, not measured here): "
                  + "; ".join(published) + ".", ""]
    cut = {lbl: cells[(preset, lbl)]["cut"] for lbl in labels if cells[(preset, lbl)]["cut"]}
    if cut:
        lines += [f"Scored up to {cells[(preset, labels[0])]['horizon']:,.0f} env steps, the common horizon: "
                  "the later evaluations of " + ", ".join(f"{lbl} ({n} of {len(cells[(preset, lbl)]['final'])})"
                                                          for lbl, n in cut.items())
                  + " are left out of the scores (the curves show them).", ""]
    pairs = [(x, y) for x, y in spec.pairs if x in finals and y in finals]
    if pairs:
        lines += ["| P(X > Y), final score | value [95% CI] |", "|---|---|"]
        for x, y in pairs:
            lines.append(f"| {x} > {y} | {_fmt(agg.probability_of_improvement(finals[x], finals[y]))} |")
        lines.append("")
    return lines


def _save(fig, ax, title: str, xlabel: str, ylabel: str, path: Path) -> None:
    """Label, save and close one figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curve_figure(spec: StudySpec, cells: dict, preset: str, labels: list[str], path: Path) -> None:
    """IQM learning curves over seeds with their bands, on each configuration's shortest run's grid."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    curve_data = {}
    for lbl in labels:
        grid = _grid(cells[(preset, lbl)]["curves"])
        curve_data[lbl] = (grid, np.stack([np.interp(grid, c.index.to_numpy(), c.to_numpy())
                                           for c in cells[(preset, lbl)]["curves"]])[:, None, :])
    bands = agg.iqm_curves({lbl: arr for lbl, (_, arr) in curve_data.items()})
    for lbl, (grid, _) in curve_data.items():
        mid, low, high = bands[lbl]
        ax.plot(grid, mid, label=lbl)
        ax.fill_between(grid, low, high, alpha=0.2)
    _save(fig, ax, preset, "env steps", f"{spec.metric} (IQM over seeds)", path)


def _profile_figure(spec: StudySpec, finals: dict, preset: str, path: Path) -> None:
    """Performance profiles of the final scores: the fraction of runs above each threshold tau."""
    import matplotlib.pyplot as plt

    values = np.concatenate([f.ravel() for f in finals.values()])
    taus = np.linspace(values.min(), values.max(), 41) if values.max() > values.min() else np.array([values.min()])
    profiles, profile_cis = agg.performance_profile(finals, taus)
    fig, ax = plt.subplots(figsize=(7, 4))
    for lbl in finals:
        ax.plot(taus, profiles[lbl], label=lbl)
        ax.fill_between(taus, profile_cis[lbl][0], profile_cis[lbl][1], alpha=0.2)
    _save(fig, ax, preset, f"final {spec.metric} (tau)", "fraction of runs with score > tau", path)


def write_report(spec: StudySpec, runs: list[Run], out_dir: Path, spec_path: Optional[str] = None) -> Path:
    """Write ``report.md`` and the figures into ``out_dir``; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")

    cells = collect(spec, runs)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    total = len(runs)
    done = sum(is_finished(r) for r in runs)
    reused = [r for r in runs if reused_from(r)]
    resumed = [r for r in runs if r.peer is None and is_finished(r) and (sessions(r) or 1) > 1]
    lines = [f"# Study report: {spec.name}", "",
             f"{done} of {total} runs finished. Score: `{spec.metric}` (final = the last greedy evaluation, "
             "AUC = its mean over the run's env steps, both up to the preset's common horizon: the earliest last "
             f"evaluation among its runs, +{agg.HORIZON_SLACK:.0%}, so that runs whose loops stop at different "
             "env steps are scored at the same one). IQM over seeds with stratified bootstrap 95% intervals "
             f"({agg.REPS} resamples, rliable). Settled at: the env step from which every later evaluation stays "
             f"within {spec.tolerance:g} of the run's final score (stability; IQM over seeds); fell back: runs "
             f"that end more than {spec.tolerance:g} below the best score they reached. Wall s: the training time "
             "of a run's sessions that the runner saw end; peak memory: the resident memory of the run's processes "
             "together, sampled every second.", ""]
    if resumed:
        peaks = ", ".join(f"{r.preset} {r.label} seed {r.seed} "
                          f"({finished_record(r).get('peak_rss_mb', float('nan')):,.0f} MiB)" for r in resumed)
        lines[-1:-1] = [f"{len(resumed)} of the finished runs are known to have been resumed from a checkpoint (to "
                        "have trained over several sessions; runs finished before 2026-12-07 17:25, commit 8db2cd3, "
                        "may not say): their peak memory counts the checkpoint read while it restores (its mapped "
                        "pages, page cache the kernel drops under pressure, docs/checkpoints.md; before 2026-12-07 "
                        "14:55, commit 4327b0b, a second copy of the replay), so it can exceed a run's own: "
                        f"{peaks}.", ""]
    if reused:
        lines[-1:-1] = [f"{len(reused)} of the finished runs are shared with other studies (the same config and seed, "
                        "trained once; `reused_from` in their finished.json): "
                        + ", ".join(f"{r.label} seed {r.seed}" for r in reused) + ".", ""]
    for preset in spec.presets:
        labels = [lbl for (p, lbl) in cells if p == preset]
        if not labels:
            lines += [f"## {preset}", "", "no finished run yet", ""]
            continue
        lines += _score_table(spec, cells, preset, labels)
        name = preset.replace("/", "_")
        _curve_figure(spec, cells, preset, labels, figures / f"curves_{name}.png")
        _profile_figure(spec, _scores(cells, preset, labels, "final"), preset, figures / f"profile_{name}.png")
        lines += [f"![learning curves](figures/curves_{name}.png)",
                  f"![performance profile](figures/profile_{name}.png)", ""]
    lines += provenance(spec, runs, spec_path)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
