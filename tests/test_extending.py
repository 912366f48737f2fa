"""docs/extending.md's examples, as a newcomer would use them: the toy mixer and the toy environment
are taken from the page, imported (which registers them), checked and trained with."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import check_env_specs

import lightning_marl as lm

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The page's Python files, written where their first line says and imported once."""
    folder = tmp_path_factory.mktemp("extending")
    names = []
    for code in blocks("python"):
        target = Path(code.splitlines()[0].lstrip("# ").strip())
        assert target.parts[0] == "lightning_marl" and target.suffix == ".py", target
        path = folder / target.name
        path.write_text(code)
        name = f"extending_{target.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        names.append(target.stem)
    assert names == ["weighted_sum", "coin_match"]
    yield names
    lm.MIXERS.unregister("weighted_sum")
    lm.ENVS.unregister("coin_match")
    assert "weighted_sum" not in lm.MIXERS.names() and "coin_match" not in lm.ENVS.names()


def test_the_toy_mixer_is_registered_and_keeps_igm(examples):
    assert "weighted_sum" in lm.MIXERS.names()
    mixer = lm.build_mixer("weighted_sum", n_agents=3, n_actions=4, central_dim=2, init_weight=0.5)
    q, z = torch.randn(64, 3, 4), torch.randn(64, 2)
    greedy = q.argmax(-1)
    best = mixer(q, greedy, z)
    for _ in range(5):  # no joint action beats the agents' greedy ones
        other = torch.randint(0, 4, (64, 3))
        assert (mixer(q, other, z) <= best + 1e-6).all()
    with pytest.raises(lm.ConfigError, match="mixer.init_weight=-1.0 is out of range; allowed: a finite number > 0"):
        lm.build_mixer("weighted_sum", n_agents=3, n_actions=4, central_dim=2, init_weight=-1.0)


def test_the_toy_env_honours_the_contract(examples):
    check_env_specs(lm.make_env("coin_match", num_envs=3, horizon=4))
    roll = lm.make_env("coin_match", num_envs=3, horizon=4, seed=5).rollout(4, break_when_any_done=False)
    assert roll["next", "truncated"][:, -1].all() and not roll["next", "terminated"].any()
    assert tuple(roll["agents", "observation"].shape) == (3, 4, 2, 2)
    again = lm.make_env("coin_match", num_envs=3, horizon=4, seed=5).rollout(4, break_when_any_done=False)
    other = lm.make_env("coin_match", num_envs=3, horizon=4, seed=6).rollout(4, break_when_any_done=False)
    assert torch.equal(roll["state"], again["state"]) and not torch.equal(roll["state"], other["state"])  # seeded
    with pytest.raises(lm.ConfigError, match="env.horizon=0 is out of range"):
        lm.make_env("coin_match", horizon=0)


def test_training_with_both_and_the_budget_config(examples, tmp_path):
    """The page's budget file, found by Hydra where env_defaults/<env>.yaml files are (here a folder
    added to the search path; in the repository, configs/env_defaults/), then a short run."""
    (tmp_path / "env_defaults").mkdir()
    (tmp_path / "env_defaults" / "coin_match.yaml").write_text(blocks("yaml")[0])
    found = lm.load_config(["env=coin_match", "mixer=weighted_sum", f"hydra.searchpath=[file://{tmp_path}]"])
    assert (found.total_env_steps, found.learner.epsilon_anneal_steps, found.eval.episodes) == (4000, 1000, 8)
    cfg = lm.load_config(["env=coin_match", "mixer=weighted_sum", f"hydra.searchpath=[file://{tmp_path}]",
                          "total_env_steps=600", "data.warmup_episodes=8", "trainer.enable_progress_bar=false"])
    result = lm.run(cfg, tmp_path / "run")
    assert result["env_steps"] >= 600 and 0.0 <= result["final"]["test/return_mean"] <= 10.0


def test_a_file_in_the_package_is_found_without_being_listed(examples, tmp_path, monkeypatch):
    """The registry imports every module of its package: a package holding only the page's env file
    (standing in for lightning_marl/envs/) registers coin_match when the registry loads it."""
    from lightning_marl.registry import Registry

    package = tmp_path / "more_envs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "coin_match.py").write_text(blocks("python")[1])
    monkeypatch.syspath_prepend(str(tmp_path))
    lm.ENVS.unregister("coin_match")
    assert "coin_match" not in lm.ENVS.names()
    Registry("env", "more_envs").load()
    assert "coin_match" in lm.ENVS.names() and lm.ENVS.config("coin_match").__module__ == "more_envs.coin_match"
