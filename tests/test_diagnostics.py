"""Mixer diagnostics (diag/* in the logs): what they report, that they report a QFIX weight stuck at
its bound, and that turning them on changes nothing in training."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_marl.config import load
from lightning_marl.experiment import run
from lightning_marl.models.mixers import build_mixer

SMALL = ["env=box_pushing", "env.horizon=20", "data.num_envs=4", "data.batch_size=8", "data.warmup_episodes=8",
         "total_env_steps=1200", "eval.interval_env_steps=600", "eval.episodes=4", "eval.num_envs=4",
         "trainer.enable_progress_bar=false", "checkpoint.replay=false"]


def pin_w(mixer, value: float) -> None:
    """Make g output ``value`` everywhere (its last layer: weight 0, bias ``value``)."""
    last = mixer.g[-1] if isinstance(mixer.g, torch.nn.Sequential) else mixer.g
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


ALL = torch.ones(16, dtype=torch.bool)


@pytest.mark.parametrize("name, bound", [("qplusfix_sum", -1.0), ("qfix_sum", 0.0), ("qplusfix_lin", -1.0)])
def test_qfix_diagnostics_see_w_at_its_bound(name, bound):
    mixer = build_mixer(name, n_agents=2, n_actions=3, central_dim=4)
    pin_w(mixer, bound)
    q, z = torch.randn(16, 2, 3), torch.randn(16, 4)
    greedy = q.argmax(-1)
    actions = greedy.clone()
    actions[:8, 0] = (greedy[:8, 0] + 1) % 3  # half the steps take a non-greedy joint action
    out = mixer.diagnostics(q, actions, z, None, greedy, ALL, ALL)
    for where in ("nongreedy", "above", "greedy"):
        assert out[f"w_{where}_mean"] == pytest.approx(bound, abs=1e-6)
        assert out[f"w_{where}_near_bound"] == 1.0
    # the taken action's credit factor: 1 + w = 0 for Q+FIX at w = -1 (QFIX: w = 0, also 0)
    assert out["credit_nongreedy_mean"] == out["credit_above_mean"] == pytest.approx(0.0, abs=1e-6)
    pin_w(mixer, bound + 2.0)
    away = mixer.diagnostics(q, actions, z, None, greedy, ALL, ALL)
    assert away["w_nongreedy_near_bound"] == 0.0 and away["w_greedy_mean"] == pytest.approx(bound + 2.0, abs=1e-6)
    # w_above_*: only the non-greedy steps whose target exceeds the greedy value (here the first 4 of 8)
    above = torch.arange(16) < 4
    w = torch.where(above, bound, bound + 2.0)  # at the bound on those steps only
    mixer.fix_weight = lambda central, actions: w.unsqueeze(-1).expand(16, 2) if mixer.per_agent else w
    split = mixer.diagnostics(q, actions, z, None, greedy, ALL, above)
    assert split["w_above_near_bound"] == 1.0 and split["w_nongreedy_near_bound"] == 0.5
    assert split["credit_above_mean"] == pytest.approx(0.0, abs=1e-6)
    assert split["credit_nongreedy_mean"] == pytest.approx(1.0, abs=1e-6)  # (0 + 2) / 2
    nothing_above = mixer.diagnostics(q, actions, z, None, greedy, ALL, torch.zeros(16, dtype=torch.bool))
    assert all(nothing_above[k] != nothing_above[k] for k in ("w_above_mean", "w_above_near_bound",
                                                               "credit_above_mean"))  # NaN: no step counts
    del mixer.fix_weight
    # every taken joint action greedy: nothing to say about non-greedy ones
    none = mixer.diagnostics(q, greedy, z, None, greedy, ALL, ALL)
    assert none["w_nongreedy_mean"] != none["w_nongreedy_mean"]  # NaN


class PinW(Callback):
    """Keeps the online mixer's w at ``value`` through training (g's last layer frozen there)."""

    def __init__(self, value: float):
        self.value = value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pin_w(pl_module.mixer, self.value)


def test_a_weight_at_its_bound_shows_in_the_logged_values(tmp_path):
    cfg = load([*SMALL, "mixer=qplusfix_sum", "diagnostics.every_n_updates=2", "data.prioritized=true"])
    run(cfg, tmp_path, extra_callbacks=[PinW(-1.0)])
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    diag = metrics.dropna(subset=["diag/td_error_max"])
    assert len(diag) >= 3 and diag["env_steps"].is_monotonic_increasing
    assert (diag["diag/mixer/w_greedy_near_bound"] == 1.0).all()
    assert diag["diag/mixer/w_greedy_mean"].tolist() == pytest.approx([-1.0] * len(diag), abs=1e-6)
    assert (diag["diag/td_error_max"] > 0).all() and (diag["diag/priority_max"] >= diag["diag/priority_median"]).all()
    assert diag["diag/share_above_greedy"].between(0, 1).all() and (diag["diag/action_gap"] >= 0).all()
    tests = metrics.dropna(subset=["test/return_mean"])
    assert tests["test/q_tot_start_mean"].notna().all()  # beside every greedy test return


def test_diagnostics_change_nothing_in_training(tmp_path):
    """Same seed with diagnostics on every update and off: the same weights at the end, bitwise
    (z = noise: the greedy-start value draws its noise off the training RNG)."""
    weights = {}
    for every in (1, 0):
        cfg = load([*SMALL, "mixer=qmix", "mixer.central_info=noise", f"diagnostics.every_n_updates={every}"])
        run(cfg, tmp_path / str(every))
        weights[every] = torch.load(tmp_path / str(every) / "checkpoints" / "last.ckpt", weights_only=False,
                                    map_location="cpu")["state_dict"]
    assert weights[1].keys() == weights[0].keys()
    assert all(torch.equal(weights[1][k], weights[0][k]) for k in weights[0])
    assert "diag/action_gap" in pd.read_csv(tmp_path / "1" / "metrics.csv").columns
    assert not any(c.startswith("diag/") for c in pd.read_csv(tmp_path / "0" / "metrics.csv").columns)
