"""Issue 29's question of the QFIX stability study, per run: did the run fall back after its best greedy
return, and was the fixing weight w at its lower bound before it did?

    python scripts/qfix_collapse.py studies/qfix_stability_qplusfix.yaml --out docs/results/qfix_stability_qplusfix

For every finished run of the study (its archived ``metrics.csv``): the best greedy return before its first
fall and where, whether it fell back (once its best return is above ``--reached``, an evaluation at or below
it: in Box Pushing, 0 lies between no box delivered, -10 or less, and one small box, ~9, so this is issue 29's
"reach a box, then fall back to no box at all"; moves between box plans and early wobbles do not count; the
first such evaluation is the collapse; a run that ends above ``--reached`` again has recovered), and, from the
diagnostics logged from 50k env steps up to the collapse (or the end; before 50k the first fits, and
QFIX's w = |g| starts at its bound 0 where g ~ 0 at initialisation), the largest share of taken non-greedy steps whose w
is within 0.1 of its lower bound, the smallest mean w on them, the taken action's credit, the share of steps
whose TD target exceeds the greedy joint action's value, the mean of Q_tot minus its TD target over the
training batches (optimistic weighting fits Q_tot to an upper expectile of its targets, a
positive premium; the squared error fits their mean), and Q_tot at the start of the greedy test episodes
beside their return at the collapse. Where the run logged them (``diag/mixer/w_above_*``, since session 17),
the same for the taken non-greedy steps whose target exceeds the greedy value, the steps issue 29's hypothesis
is about: the share of them with w near its bound and their credit, each averaged over the last 100k env steps
of the window before the collapse (or the end; shorter when the window is: a fall at 120k gives 50k-120k);
"at its bound" there means that mean share >= ``--at-bound``. "w at its bound" means a share of at least
``--at-bound`` (0.5) at some logged update in that window (all taken non-greedy steps: the largest share).
And the other reading the data offered: how far the greedy value Q_tot at
the start of the test episodes stood above the return those episodes got, at the evaluation before the
collapse (or the last one, when the run did not fall back) and at the end: an overestimated greedy value.
Writes ``collapse.md`` into ``--out``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lightning_marl.arguments import OneLineParser
from lightning_marl.study.records import is_finished, record
from lightning_marl.study.spec import load_spec, plan

NEAR = "diag/mixer/w_nongreedy_near_bound"
NEAR_ABOVE, CREDIT_ABOVE = "diag/mixer/w_above_near_bound", "diag/mixer/credit_above_mean"
LAST = 100_000  # env steps before the fall (or the end) over which the above-target values are averaged
W_MEAN = "diag/mixer/w_nongreedy_mean"
CREDIT = "diag/mixer/credit_nongreedy_mean"
ABOVE = "diag/share_above_greedy"
RETURN, START, BIG = "test/return_mean", "test/q_tot_start_mean", "test/big_box_mean"
Q_TOT, TARGET = "train/q_tot_mean", "train/target_mean"
# env steps: the diagnostics are read from here on, after the first fits (at initialisation g ~ 0, so
# QFIX's w = |g| starts at its bound 0 on most steps: not what the question is about)
DIAG_FROM = 50_000


def analyse(metrics: pd.DataFrame, at_bound: float, reached: float, diag_from: int = DIAG_FROM) -> dict:
    """The run's row: best, collapse and the diagnostics before it (see the module docstring)."""
    tests = metrics.dropna(subset=[RETURN]).drop_duplicates("env_steps", keep="last").sort_values("env_steps")
    steps, returns = tests["env_steps"].to_numpy(), tests[RETURN].to_numpy()
    below = np.nonzero((returns <= reached) & (np.maximum.accumulate(returns) > reached))[0]
    collapse = int(below[0]) if len(below) else None
    best = int(np.argmax(returns[:collapse]))  # (the whole curve when it never fell)
    until = steps[collapse] if collapse is not None else np.inf
    diag = metrics[(metrics["env_steps"] > diag_from) & (metrics["env_steps"] <= until)]

    def column(name, how, frame=diag):
        values = frame[name].dropna() if name in frame else pd.Series(dtype=float)
        return float(getattr(values, how)()) if len(values) else float("nan")

    near = column(NEAR, "max")
    last = diag[diag["env_steps"] > min(until, metrics["env_steps"].max()) - LAST]
    near_above, credit_above = column(NEAR_ABOVE, "mean", last), column(CREDIT_ABOVE, "mean", last)
    fitted = diag.dropna(subset=[Q_TOT, TARGET]) if {Q_TOT, TARGET} <= set(diag) else diag.iloc[:0]
    premium = float((fitted[Q_TOT] - fitted[TARGET]).mean()) if len(fitted) else float("nan")
    at = collapse if collapse is not None else len(returns) - 1
    starts = tests[START].to_numpy() if START in tests else np.full(len(returns), np.nan)
    before = collapse - 1 if collapse is not None else len(returns) - 1
    return {"best": returns[best], "best_at": steps[best], "final": returns[-1],
            "recovered": collapse is not None and returns[-1] > reached,
            "collapse_at": steps[collapse] if collapse is not None else None,
            "near_bound_max": near, "w_min": column(W_MEAN, "min"), "credit_min": column(CREDIT, "min"),
            "above_greedy_max": column(ABOVE, "max"), "premium": premium,
            "q_start": float(starts[at]), "return_at": returns[at],
            "over_before": float(starts[before] - returns[before]), "over_end": float(starts[-1] - returns[-1]),
            "at_bound": bool(near >= at_bound), "near_above": near_above, "credit_above": credit_above,
            "at_bound_above": None if np.isnan(near_above) else bool(near_above >= at_bound),
            "big_box_end": bool(BIG in tests and tests[BIG].iloc[-1] >= 0.5), "curve": (steps, returns, starts)}


def figure(per_label: dict[str, list[dict]], path: Path) -> None:
    """One panel per configuration: each run's greedy test return (solid) and the greedy value Q_tot at the
    start of those test episodes (dashed, same colour) against env steps; y clipped to [-25, 110] (a run
    that bumps scores down to -1000)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not per_label:
        return
    cols = min(3, len(per_label))
    rows = -(-len(per_label) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, (label, rs) in zip(axes.flat, per_label.items()):
        for i, r in enumerate(rs):
            steps, returns, starts = r["curve"]
            ax.plot(steps / 1e3, returns, color=f"C{i}", lw=1.2)
            ax.plot(steps / 1e3, starts, color=f"C{i}", lw=1.0, ls="--")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-25, 110)
        ax.axhline(0, color="grey", lw=0.5)
    for ax in axes.flat[len(per_label):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("env steps (k)")
    for ax in axes[:, 0]:
        ax.set_ylabel("return (-), Q_tot start (--)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def above_cell(r: dict) -> str:
    """The above-target steps' mean share of w near its bound and mean credit (``-`` where not logged)."""
    return "-" if r["at_bound_above"] is None else f"{r['near_above']:.2f} / {r['credit_above']:.2f}"


def span(xs: list[float]) -> str:
    """``min to max`` of the values that are not NaN, ``-`` when none."""
    xs = [x for x in xs if not np.isnan(x)]
    return f"{min(xs):+.1f} to {max(xs):+.1f}" if xs else "-"


def above_count(fell: list[dict]) -> str:
    """``k of n``: falls with the above-target diagnostic, k of them with w at its bound there."""
    logged = [r for r in fell if r["at_bound_above"] is not None]
    return f"{sum(r['at_bound_above'] for r in logged)} of {len(logged)}" if logged else "-"


def summary(per_label: dict[str, list[dict]]) -> list[str]:
    """Per configuration: how its runs ended, and what came before their falls."""
    lines = ["Per configuration (finished runs):", "",
             "| configuration | runs | big box at the end | fell back | still fallen at the end | w at its bound "
             "before the fall | Q_tot start above the return before the fall | Q_tot start - return at the end, "
             "still fallen / the others | mean Q_tot - target | w at its bound on above-target steps before "
             "the fall (mean share near it >= the threshold over the last 100k; falls with that diagnostic) |",
             "|" + "---|" * 10]
    for label, rs in per_label.items():
        fell = [r for r in rs if r["collapse_at"] is not None]
        stuck = [r["over_end"] for r in fell if not r["recovered"]]
        others = [r["over_end"] for r in rs if r["collapse_at"] is None or r["recovered"]]
        lines.append(f"| {label} | {len(rs)} | {sum(r['big_box_end'] for r in rs)} | {len(fell)} | {len(stuck)} | "
                     f"{sum(r['at_bound'] for r in fell)} | {sum(r['over_before'] > 0 for r in fell)} | "
                     f"{span(stuck)} / {span(others)} | {span([r['premium'] for r in rs])} | "
                     f"{above_count(fell)} |")
    return lines


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("--out", required=True)
    parser.add_argument("--at-bound", type=float, default=0.5)
    parser.add_argument("--reached", type=float, default=0.0,
                        help="a run falls back when, its best return above this, a later one is at or below it")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    rows, collapses, bound_first, over_first = [], 0, 0, 0
    per_label: dict[str, list[dict]] = {}
    for run in plan(spec):
        if not is_finished(run):
            continue
        r = analyse(pd.read_csv(record(run) / "metrics.csv"), args.at_bound, args.reached)
        per_label.setdefault(run.label, []).append(r)
        fell = r["collapse_at"] is not None
        collapses += fell
        bound_first += fell and r["at_bound"]
        over_first += fell and r["over_before"] > 0
        fell_at = f"{r['collapse_at'] / 1e3:.0f}k" if fell else "-"
        final = f"{r['final']:.1f}" + (" (recovered)" if r["recovered"] else "")
        rows.append(f"| {run.label} | {run.seed} | {r['best']:.1f} at {r['best_at'] / 1e3:.0f}k | {final} | "
                    f"{fell_at} | {r['near_bound_max']:.2f} | "
                    f"{r['w_min']:.2f} | {r['credit_min']:.2f} | {r['above_greedy_max']:.3f} | {r['premium']:+.2f} | "
                    f"{above_cell(r)} | "
                    f"{r['q_start']:.1f} / {r['return_at']:.1f} | {'yes' if r['at_bound'] else 'no'} | "
                    f"{r['over_before']:+.1f} | {r['over_end']:+.1f} |")
    lines = [f"# {spec.name}: falling back, and w at its bound", "",
             f"`python scripts/qfix_collapse.py {args.spec} --out {args.out}` ('fell back': a return at or below "
             f"{args.reached:g} after a best above it; 'at bound': "
             f"a share >= {args.at_bound:g} of taken non-greedy steps with w within 0.1 of its lower bound). "
             f"{len(rows)} finished runs; {collapses} fell back; of those, {bound_first} had w at its bound before "
             f"the collapse, and {over_first} had the greedy value Q_tot at the start of the test episodes above "
             f"their return at the evaluation before the collapse. Diagnostics are read from {DIAG_FROM // 1000}k env "
             "steps (before, the first fits; QFIX's w starts at its bound) up to the collapse (or the end of a run "
             "that did not fall back).",
             "", "| configuration | seed | best return | final | fell back at | max share w near bound | min mean w "
             "(non-greedy) | min credit (non-greedy) | max share target > greedy | mean Q_tot - target | "
             f"above-target steps, last {LAST // 1000}k before the fall (or the end): share w near bound / credit | "
             "Q_tot start / return at collapse (or end) | w at bound before | Q_tot start - return before the fall "
             "(or at the end) | Q_tot start - return at the end |", "|" + "---|" * 15, *rows, "",
             *summary(per_label), "", "Per run, the greedy test return (solid) and the greedy value Q_tot at the start "
             "of those test episodes (dashed, same colour; y clipped to [-25, 110]):", "",
             "![greedy value and return](figures/greedy_value.png)", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure(per_label, out / "figures" / "greedy_value.png")
    (out / "collapse.md").write_text("\n".join(lines))
    print(f"{out / 'collapse.md'}: {len(rows)} runs, {collapses} fell back, {bound_first} with w at its bound first, "
          f"{over_first} with the greedy value above the return first")


if __name__ == "__main__":
    main()
