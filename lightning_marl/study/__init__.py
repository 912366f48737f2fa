"""Studies: a grid of training runs from a spec (:mod:`.spec`), run and continued by :mod:`.runner`,
aggregated with robust statistics (:mod:`.aggregate`) into a report (:mod:`.report`).

    lightning-marl-study run studies/box_pushing_reference.yaml --jobs 2 [--until 23:30]
    lightning-marl-study status studies/box_pushing_reference.yaml
    lightning-marl-study report studies/box_pushing_reference.yaml [--out docs/results/box_pushing_reference]
    lightning-marl-study verify studies/box_pushing_reference.yaml [--env-steps 50000] [--dirty] [--trained-by COMMIT]

run --until: start only the runs expected to end by then (each run's estimate as status gives it, a
median: leave a margin; a run with none is not started), leaving the rest for a later call; a started
run is not stopped. For a session or a batch job with an end: its time goes to runs it can finish.
HH:MM is its next occurrence when the command starts: a script calling run several times passes
one ISO date and time instead.

verify trains the first --env-steps of each finished run again and compares its metrics with the
record, row for row (:mod:`.verify`): whether this code on this machine reproduces the archive;
--dirty: only the runs that a session with uncommitted training code trained; --trained-by: only
those a session of that commit trained.
"""
# (this docstring is the command's --help.) The package in layers, each importing only modules below it:
# spec (the grid) <- records (a run's record on disk) <- runner (trains runs), reuse (runs shared
# between studies; the runner gets them as an argument, neither imports the other) <- report (reads
# records; aggregate: the statistics), verify (re-trains runs' starts) <- this command line.
from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional, Sequence

from lightning_marl.errors import ConfigError


def deadline(text: str, now: Optional[datetime] = None) -> float:
    """``--until``: HH:MM (its next occurrence, local time) or an ISO date and time (local time unless it
    names an offset), as :func:`time.time`."""
    now = now or datetime.now()
    when = None
    try:
        if re.fullmatch(r"\d\d:\d\d", text):
            when = now.replace(hour=int(text[:2]), minute=int(text[3:]), second=0, microsecond=0)
            when = when if when > now else when + timedelta(days=1)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        pass
    if when is None or when.timestamp() <= now.timestamp():
        raise ConfigError(f"--until={text} is not a time to come; allowed: HH:MM (its next occurrence, local time) "
                          "or a later ISO date and time such as 2026-12-07T01:05")
    return when.timestamp()


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lightning_marl.cli import preflight
    from lightning_marl.study.records import is_finished, remaining_wall, reused_from
    from lightning_marl.study.report import write_report
    from lightning_marl.study.reuse import twins
    from lightning_marl.study.runner import run_all
    from lightning_marl.study.spec import load_spec, plan

    parser = argparse.ArgumentParser(prog="lightning-marl-study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "status", "report", "verify"))
    parser.add_argument("spec")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (run)")
    parser.add_argument("--limit", type=int, default=None, help="start at most this many runs (run)")
    parser.add_argument("--until", default=None, metavar="HH:MM|ISO",
                        help="start only the runs expected to end by then (run)")
    parser.add_argument("--first-only", action="store_true",
                        help="only the runs of the spec's `first` configurations (run, status)")
    parser.add_argument("--out", default=None, help="report folder (report; default: the study's runs_dir)")
    parser.add_argument("--env-steps", type=int, default=50_000, help="env steps of each run trained again (verify)")
    parser.add_argument("--dirty", action="store_true",
                        help="only the runs that uncommitted training code trained in a session (verify)")
    parser.add_argument("--trained-by", default=None, metavar="COMMIT",
                        help="only the runs that a session of this commit (or its prefix) trained (verify)")
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise ConfigError(f"--jobs={args.jobs} is out of range; allowed: an integer >= 1")
        if args.env_steps < 1:
            raise ConfigError(f"--env-steps={args.env_steps} is out of range; allowed: an integer >= 1")
        if not Path(args.spec).is_file():
            raise ConfigError(f"spec={args.spec} does not exist; allowed: a study spec YAML file")
        if args.until is not None and args.action != "run":
            raise ConfigError(f"--until is for run, not {args.action}; allowed: run <spec> --until HH:MM")
        until = deadline(args.until) if args.until is not None else None
        spec = load_spec(args.spec)
        runs = plan(spec)
        if args.first_only:
            if not spec.first:
                raise ConfigError(f"--first-only: study spec {args.spec} names no `first` configurations; allowed: "
                                  "a spec with first: [<label>, ...]")
            runs = [run for run in runs if run.label in spec.first]
        if args.action == "run":
            todo = [run for run in runs if not is_finished(run)]
            for run in todo:  # every run's command line is checked before the first one starts
                preflight(list(run.argv))
            others = [run for other in spec.reuse for run in plan(load_spec(other))]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.action == "run":
        counts = run_all(runs, jobs=args.jobs, limit=args.limit, twins=twins(todo, others) if others else None,
                         finished_checkpoint=spec.finished_checkpoint, deadline=until)
        print(f"{spec.name}: {counts}")
        sys.exit(128 + counts["stopped_by"] if counts["stopped_by"] else 1 if counts["failed"] else 0)
    if args.action == "status":
        done = sum(is_finished(r) for r in runs)
        try:
            print(f"{spec.name}: {done} of {len(runs)} runs finished")
            seconds, unknown = remaining_wall(runs)
            left = len(runs) - done
            if unknown == left > 0:
                print("remaining: no finished run of these presets to estimate it by")
            elif left:
                print(f"remaining: ~{seconds / 3600:.1f} h of training for {left - unknown} of the {left} "
                      "unfinished runs, one at a time (each: the median wall time of its configuration's "
                      "finished runs, else its preset's of the same framework, less what it has trained if it resumes)"
                      + (f"; the other {unknown} have no finished run of their preset to go by" if unknown else ""))
            for run in runs:
                state = ("reused" if reused_from(run) else "finished") if is_finished(run) else \
                    "started" if (run.folder / "checkpoints").exists() else "-"
                print(f"  {state:<9} {run.preset} {run.label} seed {run.seed}", flush=True)
        except BrokenPipeError:  # the reader stopped early (status | head): nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(141)  # 128 + SIGPIPE, as a shell pipeline reports it
        return
    if args.action == "verify":
        from lightning_marl.study.runner import code_version, machine
        from lightning_marl.study.verify import verify_all

        print(f"{spec.name}: the first {args.env_steps} env steps of each finished run trained again with the "
              f"trainer at {code_version()} on {machine()}", flush=True)
        try:
            counts = verify_all(runs, args.env_steps, dirty_only=args.dirty, commit=args.trained_by)
        except KeyboardInterrupt:
            print(f"{spec.name}: verify stopped; the replay under way was removed", file=sys.stderr)
            sys.exit(130)
        print(f"{spec.name}: {counts}")
        sys.exit(1 if counts["different"] or counts["failed"] else 0)
    report = write_report(spec, runs, Path(args.out or spec.runs_dir), args.spec)
    print(f"report: {report}")
