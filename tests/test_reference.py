"""docs/reference.md's table against the configs: the default (or the env/mixer in brackets) has
the `here` value; every `experiment=reference/...` preset (of that env) has the reference's value."""
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lightning_marl.cli.overrides import experiment_names
from lightning_marl.config import compose, load, validate

TABLE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
PRESETS = [name for name in experiment_names() if name.startswith("reference/")]


def rows():
    out = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`(?: \((env|mixer)=(\w+)\))?", cells[0]) if len(cells) == 5 else None
        if match:
            key, group, option = match.groups()
            out.append((key, f"{group}={option}" if group else None, yaml.safe_load(cells[1]), yaml.safe_load(cells[2])))
    return out


ROWS = rows()


def value(cfg, key):
    v = OmegaConf.select(cfg, key)
    return v.value if hasattr(v, "value") else v


def test_the_table_has_every_reference_setting_the_issue_names():
    keys = {key for key, _, _, _ in ROWS}
    assert {"data.num_envs", "data.updates_per_round", "data.batch_size", "data.warmup_episodes", "learner.td_loss_scale",
            "learner.target_update_interval", "learner.lr", "learner.td_lambda", "learner.double_q",
            "mixer.detach_advantage", "env.timeout_as_terminal"} <= keys
    assert len(PRESETS) == 10


@pytest.mark.parametrize("key, scope, here, reference", ROWS, ids=[f"{k} {s or ''}" for k, s, _, _ in ROWS])
def test_the_default_has_the_value_the_table_gives(key, scope, here, reference):
    assert value(compose([scope] if scope else []), key) == here


@pytest.mark.parametrize("preset", PRESETS)
def test_each_reference_preset_has_the_references_values(preset):
    cfg = compose([f"experiment={preset}"])
    validate(cfg, env_checks=False)  # the schema's rules (SMACv2 and SMACLite need not be installed)
    env = cfg.env.name
    for key, scope, _, reference in ROWS:
        if scope and scope.startswith("env=") and scope != f"env={env}":
            continue
        if scope and scope.startswith("mixer="):
            checked = compose([f"experiment={preset}", scope])
        elif scope is None and env == "box_pushing" and key == "total_env_steps":
            continue
        else:
            checked = cfg
        assert value(checked, key) == reference, f"{preset}: {key}={value(checked, key)}, the reference has {reference}"


@pytest.mark.parametrize("preset", PRESETS)
def test_reference_presets_take_any_mixer(preset):
    for mixer in ("qmix", "qplex", "duelmix", "qplusfix_sum"):
        cfg = compose([f"experiment={preset}", f"mixer={mixer}"])
        assert cfg.mixer.name == mixer and cfg.data.batch_size == 128


def peer_rows():
    """(presets, key, value) of the tables under docs/reference.md's "The peers' presets"."""
    text = TABLE.read_text().split("## The peers' presets", 1)[1]
    out = []
    for section in text.split("\n### ")[1:]:
        presets = re.findall(r"(\w+/\w+)", section.splitlines()[0])
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            match = re.fullmatch(r"`([\w.]+)`", cells[0]) if len(cells) == 4 else None
            if match:
                out += [(preset, match.group(1), yaml.safe_load(cells[1])) for preset in presets]
    return out


PEER_ROWS = peer_rows()


def test_every_peer_preset_has_its_table():
    assert {p for p, _, _ in PEER_ROWS} == {n for n in experiment_names() if n.split("/")[0] in ("epymarl", "benchmarl")}
    assert len(PEER_ROWS) > 40


@pytest.mark.parametrize("preset", sorted({p for p, _, _ in PEER_ROWS}))
def test_each_peer_preset_has_the_peers_values_and_takes_any_mixer(preset):
    cfg = compose([f"experiment={preset}"])
    wrong = {k: (value(cfg, k), v) for p, k, v in PEER_ROWS if p == preset and value(cfg, k) != v}
    assert not wrong, f"{preset}: key: (preset, peer) {wrong}"
    for mixer in ("qmix", "vdn", "qplex", "duelmix", "qfix_sum", "qplusfix_sum", "qplusfix_mono"):
        validate(compose([f"experiment={preset}", f"mixer={mixer}"]))


def test_the_recommended_qplusfix_preset_is_the_recipe_with_the_fixee_advantage_detached():
    """Issue 29's stability study: with the big-box recipe Q+FIX-sum keeps the big box only detached."""
    recipe = load(["experiment=box_pushing_4x4_big_box", "mixer=qplusfix_sum", "mixer.detach_advantage=true"])
    assert load(["experiment=box_pushing_4x4_big_box_qplusfix_sum"]) == recipe


def test_the_recommended_qfix_preset_is_the_recipe_with_a_raised_bound_and_uniform_replay():
    """Issue 29's stability study: with the big-box recipe QFIX-sum keeps the big box with w >= 0.5, no PER."""
    recipe = load(["experiment=box_pushing_4x4_big_box", "mixer=qfix_sum", "mixer.w_lower_bound=0.5",
                   "data.prioritized=false"])
    assert load(["experiment=box_pushing_4x4_big_box_qfix_sum"]) == recipe
    assert load(["experiment=box_pushing_4x4_big_box", "mixer=qfix_sum"]) != recipe
