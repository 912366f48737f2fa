"""The house rules that keep the trainer easy to extend: no import circles, one registry per
extension point (each entry registered once, naming the class it builds), and no default written
below the schema."""
from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore

from lightning_marl.registry import ENVS, MIXERS

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package it is installed as
PACKAGES = {ROOT / "lightning_marl": "lightning_marl", ROOT / "callbacks": "lightning_marl.callbacks"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (also inside functions; not under
    ``if TYPE_CHECKING``). ``from a import b`` counts as importing ``a.b`` where that is a module."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    known = modules()
    graph = {name: imports(path, name, known) for name, path in known.items()}
    assert len(graph) > 50 and graph["lightning_marl.module"], "the import graph was not read"
    assert cycles(graph) == []


def test_the_circle_check_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("registry", [ENVS, MIXERS], ids=["env", "mixer"])
def test_each_entry_is_registered_once_and_names_what_it_builds(registry):
    names = registry.names()
    assert len(names) == len(set(names)) >= 5
    group = ConfigStore.instance().repo[registry.group]
    for name in names:
        config = registry.config(name)
        assert group[f"{name}.yaml"].node._metadata.object_type is config  # the option env=<name> / mixer=<name>
        assert callable(config.builds)
        # the entry lives in its own file: the config and what it builds are defined in the same module
        assert config.__module__ == config.builds.__module__, (name, config.__module__, config.builds.__module__)


def test_a_name_registered_twice_is_refused():
    from lightning_marl.models.mixers.vdn import VDNConfig

    @dataclasses.dataclass
    class Impostor(VDNConfig):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        MIXERS.register(Impostor)


def _defaults_of(function, names) -> list[str]:
    parameters = inspect.signature(function).parameters
    return [n for n in names if n in parameters and parameters[n].default is not inspect.Parameter.empty]


@pytest.mark.parametrize("name", MIXERS.names())
def test_mixers_take_their_options_from_their_config_only(name):
    config = MIXERS.config(name)
    options = [f.name for f in dataclasses.fields(config) if f.name not in config.trainer_keys]
    assert _defaults_of(config.builds.__init__, options) == []


def test_no_default_below_the_schema_in_envs_and_callbacks():
    from lightning_marl.callbacks.epsilon import EpsilonAnnealing
    from lightning_marl.callbacks.qfix_annealing import InterventionAnnealing
    from lightning_marl.callbacks.target_update import TargetNetworkUpdate
    from lightning_marl.envs.box_pushing import BoxPushingEnv, BoxPushingEnvConfig
    from lightning_marl.envs.overcooked import OvercookedEnv, OvercookedEnvConfig

    for env, config in ((BoxPushingEnv, BoxPushingEnvConfig), (OvercookedEnv, OvercookedEnvConfig)):
        assert _defaults_of(env.__init__, [f.name for f in dataclasses.fields(config)]) == []
    for callback in (EpsilonAnnealing, TargetNetworkUpdate, InterventionAnnealing):
        assert _defaults_of(callback.__init__, list(inspect.signature(callback.__init__).parameters)) == []


def test_the_validated_config_is_read_only():
    from lightning_marl.config import load

    cfg = load(["env=matrix"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.learner.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    assert dataclasses.replace(cfg.learner, lr=1.0).lr == 1.0  # a changed copy


def test_a_single_run_is_composed_once_and_validated_once(tmp_path, monkeypatch):
    """``train.py key=value ...``: one Hydra composition and one validation from the command line to
    the values' use (the run, the module, the mixer and the envs read the typed config, none checks
    or completes it again). Counted: Hydra's compose, and the range check every validation ends with
    (the command line's ``to_typed`` and the API's ``typed_options`` both run it)."""
    import importlib
    import logging

    import hydra

    from lightning_marl.cli import train

    validate = importlib.import_module("lightning_marl.config.validate")  # (the package's validate() is a function)

    counts = {"compose": 0, "validate": 0}
    compose, check_ranges = hydra.compose, validate.check_ranges

    def counted_compose(*args, **kwargs):
        counts["compose"] += 1
        return compose(*args, **kwargs)

    def counted_check(obj, prefix=""):
        if not prefix:  # a whole config (nested nodes are checked by recursion with a prefix)
            counts["validate"] += 1
        return check_ranges(obj, prefix)

    monkeypatch.setattr(hydra, "compose", counted_compose)
    monkeypatch.setattr(validate, "check_ranges", counted_check)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = train(["env=matrix", "mixer=qmix", "total_env_steps=80", "data.warmup_episodes=8",
                        "trainer.enable_progress_bar=false"])
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
    assert result == result  # a finished run (its final greedy return, not NaN)
    assert counts == {"compose": 1, "validate": 1}


def test_a_validated_config_travels_to_worker_processes():
    """Read-only mappings (e.g. SMACv2's env_args) pickle and copy as read-only mappings."""
    import copy
    import pickle

    from lightning_marl.config import load

    cfg = load(["env=matrix", "+eval.env.penalty_k=-50"])
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and copy.deepcopy(cfg) == cfg
    with pytest.raises(TypeError, match="read-only"):
        again.eval.env["penalty_k"] = 1.0
