"""A study: a grid of (env preset, mixer, centralized information, variant, seed) runs, each one an
ordinary ``train.py`` run in a folder of its own. The spec is a YAML file with this schema::

    name: box_pushing_reference
    runs_dir: ~/lightning_marl_studies/box_pushing_reference  # run folders (large checkpoints: outside git)
    archive_dir: results/box_pushing_reference/runs          # each finished run's metrics and config
    presets: [reference/box_pushing_4x4, reference/box_pushing_6x6]   # experiment=... (the tasks)
    mixers: [qmix, qplex, duelmix, qfix_sum, qplusfix_sum]
    central_info: [null]                       # null = each mixer's own default
    variants: {"": []}                         # label -> overrides ("" = none),
                                               # e.g. {detach: [mixer.detach_advantage=true]}
    seeds: [0, 1, 2, 3, 4]
    overrides: []                              # added to every run
    mixer_overrides: {qmix: [mixer.hypernet_layers=1]}   # added to every run of that mixer (the peer's too)
    metric: test/return_mean                   # the score: its final value and its area under the curve
    metrics: [test/big_box_mean]               # also reported (final values)
    tolerance: 0.5                             # score units: a run has settled once every later
                                               # evaluation stays this close to its final score
    pairs: [[duelmix, qmix]]                   # probability of improvement of the first over the second
    first: [qmix, qmix epymarl]                # these configurations' runs (every seed) before the rest
                                               # (``run --first-only``: only them)
    reuse: [studies/central_info.yaml]         # other studies whose finished runs stand in for the
                                               # same runs here (same config and seed; see .reuse)
    published: {qmix epymarl: "1.00 +- 0.00 (maximum return, 2M env steps; Papoudakis et al. 2021, Table 3)"}
                                               # a configuration's published value, printed beside
                                               # the report's table (context: its own budget and settings)
    finished_checkpoint: full                  # what a finished run's checkpoints/last.ckpt keeps: full
                                               # (default) or without_replay (weights, optimizer, counters,
                                               # RNG states: evaluate it, or continue it with a refilled
                                               # replay; a 3s5z SMACLite run's 3.7 GB become 1.6 MB)
    peer:                                      # another framework's runs of the same grid, side by side
      name: epymarl                            # their label: "<mixer> epymarl"
      mixers: [qmix, vdn]                      # the mixers it runs (of this study's)
      command: [~/peers/epymarl/.venv/bin/python, ~/peers/epymarl/src/main.py, "--config={mixer}", ...,
                "env_args.key=lbforaging:{env.key}", "seed={seed}", "t_max={total_env_steps}",
                "local_results_path={folder}/results"]
      reader: epymarl                          # how its results become metrics.csv (.peers.READERS)
      env: {OMP_NUM_THREADS: "1"}              # added to its environment

A peer's command names the run's seed, mixer and folder as ``{seed}``, ``{mixer}``, ``{folder}`` and any
setting of this trainer's config of the same run (preset, mixer, seed, ``overrides``) as ``{key}``
(``{env.key}``, ``{total_env_steps}``): the task and the budget are the preset's, written once.

The archive (committed; the report is a page in ``docs/results/<name>/``) is what makes a study
outlive its run folders: a run whose record is in the archive counts as finished. A configuration's
label is ``<mixer>``, plus ``z=<central_info>`` and ``<variant>`` where given.

The spec's paths (``runs_dir``, ``archive_dir``, ``reuse``) are resolved once, when the spec is read
(:func:`load_spec`): a leading ``~`` is the home folder; relative paths are relative to the working
directory (the repository root for the specs in ``studies/``), and stay relative, so the records a
study commits name repository paths, not one machine's.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from lightning_marl.errors import ConfigError

PEER_READERS = ("epymarl", "benchmarl")  # the frameworks whose results .peers reads
FINISHED_CHECKPOINTS = ("full", "without_replay")  # what a finished run's last.ckpt keeps


@dataclass
class PeerSpec:
    name: str
    mixers: List[str]
    command: List[str]
    reader: str
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class StudySpec:
    name: str
    runs_dir: str
    presets: List[str]
    mixers: List[str]
    seeds: List[int]
    archive_dir: Optional[str] = None
    central_info: List[Optional[str]] = field(default_factory=lambda: [None])
    variants: Dict[str, List[str]] = field(default_factory=lambda: {"": []})
    overrides: List[str] = field(default_factory=list)
    mixer_overrides: Dict[str, List[str]] = field(default_factory=dict)
    metric: str = "test/return_mean"
    metrics: List[str] = field(default_factory=list)
    tolerance: float = 0.5
    pairs: List[List[str]] = field(default_factory=list)
    first: List[str] = field(default_factory=list)
    reuse: List[str] = field(default_factory=list)
    published: Dict[str, str] = field(default_factory=dict)
    finished_checkpoint: str = "full"
    peer: Optional[PeerSpec] = None


@dataclass(frozen=True)
class Run:
    preset: str
    mixer: str
    central_info: Optional[str]
    variant: str
    seed: int
    folder: Path
    argv: tuple
    archive: Optional[Path] = None
    # a run of that framework (argv: this trainer's same run, whose settings its command names)
    peer: Optional[PeerSpec] = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return config_label(self.mixer, self.central_info, self.variant)


def config_label(mixer: str, central_info: Optional[str], variant: str) -> str:
    return " ".join([mixer] + ([f"z={central_info}"] if central_info else []) + ([variant] if variant else []))


def load_spec(path: str | Path) -> StudySpec:
    """The spec at ``path``, checked against :class:`StudySpec` (unknown keys and wrong types refused),
    its paths resolved (a leading ``~`` expanded; relative ones left relative to the working directory)."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.load(path))
        spec = OmegaConf.to_object(node)
    except Exception as err:  # noqa: BLE001 - OmegaConf's errors name the key
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"study spec {path}: {first}; allowed: the keys of StudySpec "
                          f"({', '.join(f.name for f in dataclasses.fields(StudySpec))})") from None
    spec = dataclasses.replace(spec, runs_dir=os.path.expanduser(spec.runs_dir),
                               archive_dir=spec.archive_dir and os.path.expanduser(spec.archive_dir),
                               reuse=[os.path.expanduser(other) for other in spec.reuse])
    labels = {config_label(m, z, v) for m in spec.mixers for z in spec.central_info for v in spec.variants}
    if spec.peer is not None:
        peer = spec.peer
        if peer.reader not in PEER_READERS or not set(peer.mixers) <= set(spec.mixers) or peer.name in spec.variants:
            raise ConfigError(f"study spec {path}: peer {peer.name} (reader {peer.reader}, mixers {peer.mixers}); "
                              f"allowed: a reader of {', '.join(PEER_READERS)}, mixers of the study's, a name that is "
                              "not a variant's")
        spec = dataclasses.replace(spec, peer=dataclasses.replace(
            peer, command=[os.path.expanduser(part) for part in peer.command]))
        labels |= {config_label(m, None, peer.name) for m in peer.mixers}
    if not set(spec.published) <= labels:
        raise ConfigError(f"study spec {path}: published entries {sorted(set(spec.published) - labels)}; allowed: "
                          f"configurations of the study ({', '.join(sorted(labels))})")
    if not set(spec.first) <= labels:
        raise ConfigError(f"study spec {path}: first entries {sorted(set(spec.first) - labels)}; allowed: "
                          f"configurations of the study ({', '.join(sorted(labels))})")
    for pair in spec.pairs:
        if len(pair) != 2 or not set(pair) <= labels:
            raise ConfigError(f"study spec {path}: pairs entry {pair}; allowed: two of {', '.join(sorted(labels))}")
    if spec.finished_checkpoint not in FINISHED_CHECKPOINTS:
        raise ConfigError(f"study spec {path}: finished_checkpoint={spec.finished_checkpoint}; allowed: "
                          f"{' or '.join(FINISHED_CHECKPOINTS)}")
    if not spec.tolerance > 0:
        raise ConfigError(f"study spec {path}: tolerance={spec.tolerance} is out of range; allowed: a number > 0")
    if not set(spec.mixer_overrides) <= set(spec.mixers):
        unknown = sorted(set(spec.mixer_overrides) - set(spec.mixers))
        raise ConfigError(f"study spec {path}: mixer_overrides for {unknown}; allowed: mixers of the study "
                          f"({', '.join(spec.mixers)})")
    for other in spec.reuse:
        if not Path(other).is_file():
            raise ConfigError(f"study spec {path}: reuse entry {other} does not exist; allowed: paths of other "
                              "study specs")
    return spec


def plan(spec: StudySpec) -> list[Run]:
    """Every run of the grid: the ``first`` configurations' runs, then the others, each part in an order
    that finishes whole seeds first."""
    runs = []
    for seed in spec.seeds:
        for preset in spec.presets:
            for mixer in spec.mixers:
                for z in spec.central_info:
                    for variant, extra in spec.variants.items():
                        label = config_label(mixer, z, variant).replace(" ", "_").replace("=", "-")
                        relative = Path(preset.replace("/", "_")) / label / f"s{seed}"
                        folder = Path(spec.runs_dir) / relative
                        archive = Path(spec.archive_dir) / relative if spec.archive_dir else None
                        argv = [f"experiment={preset}", f"mixer={mixer}", f"seed={seed}", *spec.overrides,
                                *spec.mixer_overrides.get(mixer, []), *extra]
                        if z:
                            argv.append(f"mixer.central_info={z}")
                        runs.append(Run(preset, mixer, z, variant, seed, folder, tuple(argv), archive))
            for mixer in spec.peer.mixers if spec.peer is not None else ():
                relative = Path(preset.replace("/", "_")) / f"{mixer}_{spec.peer.name}" / f"s{seed}"
                argv = [f"experiment={preset}", f"mixer={mixer}", f"seed={seed}", *spec.overrides,
                        *spec.mixer_overrides.get(mixer, [])]
                runs.append(Run(preset, mixer, None, spec.peer.name, seed, Path(spec.runs_dir) / relative, tuple(argv),
                                Path(spec.archive_dir) / relative if spec.archive_dir else None, spec.peer))
    return sorted(runs, key=lambda run: run.label not in spec.first)  # stable: the order above within each part
