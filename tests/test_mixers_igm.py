"""Property tests of every registered mixer: IGM (the per-agent greedy joint action maximizes Q_tot
over every available joint action), the QFIX weight bounds, stop-gradients, QMIX monotonicity,
and the QFIX intervention (lambda_D) and its annealing callback."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_marl.callbacks.qfix_annealing import InterventionAnnealing
from lightning_marl.errors import ConfigError
from lightning_marl.models.central import CentralInfo
from lightning_marl.models.mixers import MIXERS, build_mixer
from lightning_marl.models.mixers.base import NEG_INF, Mixer, chosen_q
from lightning_marl.models.mixers.qmix import MonotonicMix

ALL = MIXERS.names()
QFIX = [n for n in ALL if "fix" in n]
ADDITIVE = [n for n in QFIX if n.startswith("qplusfix")]
CENTRAL_MODES = ("state", "history", "history_state", "noise", "zeros")
STATE_DIM, HIDDEN_DIM, NOISE_DIM = 6, 8, 5


def test_registry_lists_every_mixer():
    assert set(ALL) == {"vdn", "qmix", "qplex", "duelmix", "qfix_sum", "qfix_mono", "qplusfix_sum",
                        "qplusfix_mono", "qfix_lin", "qplusfix_lin"}
    for name in ALL:
        assert issubclass(MIXERS.config(name).builds, Mixer)


def random_central(mode: str, n_agents: int, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """One z ``[1, D]`` built by :class:`CentralInfo` from a random state and random hidden states."""
    info = CentralInfo(mode, STATE_DIM, n_agents, HIDDEN_DIM, noise_dim=NOISE_DIM, detach_history=True)
    state = torch.randn(1, STATE_DIM, generator=gen, dtype=torch.float64)
    hidden = torch.randn(1, n_agents, HIDDEN_DIM, generator=gen, dtype=torch.float64)
    z = info(state, hidden)
    assert z.shape == (1, info.dim)
    return z, info.dim


def make_mixer(name: str, n_agents: int, n_actions: int, central_dim: int, seed: int, scale: float, **config):
    torch.manual_seed(seed)
    mixer = build_mixer(name, n_agents=n_agents, n_actions=n_actions, central_dim=central_dim, **config).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(scale)
    return mixer


def random_mask(n_agents: int, n_actions: int, gen: torch.Generator) -> torch.Tensor:
    """A random availability mask ``[N, A]`` with at least one available action per agent."""
    mask = torch.rand(n_agents, n_actions, generator=gen) < 0.6
    forced = torch.randint(0, n_actions, (n_agents,), generator=gen)
    mask[torch.arange(n_agents), forced] = True
    return mask


def greedy_gap(mixer, q: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """For utilities ``q [B,N,A]`` (or ``[N,A]``), z ``[B,D]`` and one mask ``[N,A]``:
    ``(max over rows and available joint actions of Q_tot - Q_tot(greedy), max |Q_tot|)``.
    The gap is <= 0 (up to rounding) exactly when IGM holds on every row."""
    q = q.reshape(-1, *q.shape[-2:])
    rows, n, a = q.shape
    greedy = q.masked_fill(~mask, NEG_INF).argmax(-1)                         # [B,N]
    joint = torch.tensor([c for c in itertools.product(range(a), repeat=n)
                          if all(mask[i, c[i]] for i in range(n))], dtype=torch.long)
    actions = torch.cat([greedy.unsqueeze(1), joint.expand(rows, *joint.shape)], dim=1)  # [B,1+J,N]
    cols = actions.shape[1]
    with torch.no_grad():
        q_tot = mixer(q.unsqueeze(1).expand(rows, cols, n, a), actions,
                      z.unsqueeze(1).expand(rows, cols, z.shape[-1]), mask.expand(rows, cols, n, a))
    assert q_tot.shape == (rows, cols)
    assert torch.isfinite(q_tot).all()
    return (q_tot[:, 1:].max(-1).values - q_tot[:, 0]).max().item(), q_tot.abs().max().item()


igm_case = dict(
    n_agents=st.sampled_from([2, 3]),
    n_actions=st.sampled_from([2, 3, 4]),
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(CENTRAL_MODES),
    q_scale=st.sampled_from([0.1, 1.0, 10.0]),
    param_scale=st.floats(0.5, 3.0),
    intervention=st.floats(0.0, 1.0),
)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=30, deadline=None)
@given(**igm_case)
def test_greedy_joint_action_maximizes_q_tot(name, n_agents, n_actions, seed, mode, q_scale, param_scale,
                                             intervention):
    gen = torch.Generator().manual_seed(seed)
    z, dim = random_central(mode, n_agents, gen)
    mixer = make_mixer(name, n_agents, n_actions, dim, seed, param_scale)
    if hasattr(mixer, "set_intervention"):
        mixer.set_intervention(intervention)
    q = torch.randn(n_agents, n_actions, generator=gen, dtype=torch.float64) * q_scale
    mask = random_mask(n_agents, n_actions, gen)
    gap, size = greedy_gap(mixer, q, z, mask)
    assert gap <= 1e-9 * (1.0 + size), f"{name}: a non-greedy joint action beats the greedy one by {gap}"


@pytest.mark.parametrize("mode", CENTRAL_MODES)
@pytest.mark.parametrize("name", ALL)
def test_igm_over_a_batch_of_central_info(name, mode):
    """z from CentralInfo for a batch of states (fresh noise per row for ``noise``): IGM row by row."""
    n, a, batch = 3, 3, 64
    gen = torch.Generator().manual_seed(7)
    info = CentralInfo(mode, STATE_DIM, n, HIDDEN_DIM, noise_dim=NOISE_DIM, detach_history=True)
    z = info(torch.randn(batch, STATE_DIM, generator=gen, dtype=torch.float64),
             torch.randn(batch, n, HIDDEN_DIM, generator=gen, dtype=torch.float64))
    mixer = make_mixer(name, n, a, info.dim, seed=3, scale=2.0)
    q = torch.randn(batch, n, a, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, a, dtype=torch.bool)
    gap, size = greedy_gap(mixer, q, z, mask)
    assert gap <= 1e-9 * (1.0 + size)


class AntiMixer(Mixer):
    """Deliberately not IGM: Q_tot = -sum_i Q_i(a_i)."""

    def forward(self, q_values, actions, central, action_mask=None):
        return -chosen_q(q_values, actions).sum(-1)


def test_the_igm_check_can_fail():
    """The checker is real: it catches an anti-monotone mixer and a QFIX whose weight is forced negative."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    z = torch.randn(1, 4, dtype=torch.float64)
    assert greedy_gap(AntiMixer(2, 3, 4), q, z, mask)[0] > 0.1
    mixer = make_mixer("qfix_sum", 2, 3, 4, seed=0, scale=1.0)
    mixer.fix_weight = lambda central, actions: -torch.ones(actions.shape[:-1], dtype=torch.float64)
    assert greedy_gap(mixer, q, z, mask)[0] > 0.1


@pytest.mark.parametrize("name", QFIX)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), param_scale=st.floats(0.5, 10.0), n_agents=st.sampled_from([2, 3]))
def test_qfix_weight_bounds(name, seed, param_scale, n_agents):
    """QFIX: w > 0; Q+FIX: w > -1, for random z and joint actions."""
    n_actions, batch, dim = 4, 256, 7
    gen = torch.Generator().manual_seed(seed)
    mixer = make_mixer(name, n_agents, n_actions, dim, seed, param_scale)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 3
    actions = torch.randint(0, n_actions, (batch, n_agents), generator=gen)
    w = mixer.fix_weight(z, actions)
    assert w.shape == ((batch, n_agents) if name.endswith("_lin") else (batch,))
    bound = -1.0 if name in ADDITIVE else 0.0
    assert (w > bound).all(), f"{name}: min w = {w.min().item()}"


def test_additive_weight_reaches_below_zero():
    """The Q+FIX bound is -1, not 0: its weight can be negative (and QFIX's cannot)."""
    z = torch.randn(512, 5, dtype=torch.float64)
    actions = torch.randint(0, 3, (512, 2))
    plus = make_mixer("qplusfix_sum", 2, 3, 5, seed=0, scale=1.0)
    with torch.no_grad():
        plus.g[-1].bias.fill_(-0.5)
    w = plus.fix_weight(z, actions)
    assert (w < 0).any() and (w > -1).all()
    base = make_mixer("qfix_sum", 2, 3, 5, seed=0, scale=1.0)
    assert (base.fix_weight(z, actions) > 0).all()


def q_grad(mixer, q, actions, z, mask=None) -> torch.Tensor:
    q = q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixer(q, actions, z, mask).sum(), q)
    return grad


# (name, config that turns the stop-gradient on, config that turns it off); Q+FIX does not detach by
# default (the reference's main runs), QPLEX does
DETACHED = ([(n, {"detach_advantage": True}, {"detach_advantage": False}) for n in ADDITIVE]
            + [("qplex", {"stop_gradient": True}, {"stop_gradient": False})])


def test_qplusfix_does_not_detach_by_default_as_the_reference():
    for name in ADDITIVE:
        assert build_mixer(name, n_agents=2, n_actions=3, central_dim=4).detach_advantage is False


@pytest.mark.parametrize("name,detach,undetach", DETACHED)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detached_advantage_blocks_gradient(name, detach, undetach, seed):
    """With the stop-gradient, V_i = max_b Q_i(b) enters only through the detached advantage: the
    gradient at a greedy action that is not the chosen one is exactly zero; without it, it is not."""
    n, a, batch, dim = 3, 4, 32, 5
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, a, generator=gen, dtype=torch.float64)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, a, (batch, n), generator=gen)
    greedy = q.argmax(-1)
    off = greedy != actions                                  # [batch, n] where V_i is not Q_i(a_i)
    assert off.any()
    at_greedy = lambda g: g.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)[off]  # noqa: E731

    detached = make_mixer(name, n, a, dim, seed, 1.0, **detach)
    g_det = q_grad(detached, q, actions, z)
    assert (at_greedy(g_det) == 0).all()
    # the weight itself still learns through the detached path
    w_params = detached.g if hasattr(detached, "g") else detached.si_weight
    loss = detached(q, actions, z).sum()
    grads = torch.autograd.grad(loss, list(w_params.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    plain = make_mixer(name, n, a, dim, seed, 1.0, **undetach)
    g_plain = q_grad(plain, q, actions, z)
    assert (at_greedy(g_plain).abs() > 1e-8).all()
    # same forward values: the stop-gradient changes gradients only
    with torch.no_grad():
        assert torch.allclose(detached(q, actions, z), plain(q, actions, z))


@pytest.mark.parametrize("name", ADDITIVE)
@pytest.mark.parametrize("seed", [0, 1])
def test_detach_greedy_stops_only_the_greedy_utilities_share(name, seed):
    """``detach_greedy``: where an agent's taken action is not its greedy one, its greedy utility gets no
    gradient (plain: the ``-w`` share); every other utility's gradient, the taken ones' ``1 + w`` included,
    is the plain mixer's, so a step that is greedy for every agent trains exactly as without it (full
    detaching changes the taken ones' too); the values are the plain mixer's."""
    n, a, batch, dim = 3, 4, 32, 5
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, a, generator=gen, dtype=torch.float64)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    greedy = q.argmax(-1)
    actions = torch.where(torch.rand(batch, n, generator=gen) < 0.5, greedy, torch.randint(0, a, (batch, n), generator=gen))
    actions[:4] = greedy[:4]                                  # steps greedy for every agent
    off = greedy != actions
    assert off.any() and (~off).any()
    cut = torch.zeros_like(q, dtype=torch.bool).scatter_(-1, greedy.unsqueeze(-1), off.unsqueeze(-1))

    plain, only_greedy, full = (make_mixer(name, n, a, dim, seed, 1.0, **config) for config in
                                ({}, {"detach_greedy": True}, {"detach_advantage": True}))
    g_plain, g_greedy, g_full = (q_grad(m, q, actions, z) for m in (plain, only_greedy, full))
    assert (g_greedy[cut] == 0).all() and (g_plain[cut].abs() > 1e-8).all()
    assert torch.allclose(g_greedy[~cut], g_plain[~cut])
    assert torch.equal(g_greedy[:4], g_plain[:4])
    taken = lambda g: g.gather(-1, actions.unsqueeze(-1)).squeeze(-1)[off]  # noqa: E731
    assert not torch.allclose(taken(g_greedy), taken(g_full))
    with torch.no_grad():
        assert torch.allclose(only_greedy(q, actions, z), plain(q, actions, z))


def test_qfix_advantage_is_not_detached():
    """Plain QFIX (not Q+FIX) trains the utilities through A_f: the greedy gradient is non-zero."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(16, 2, 3, generator=gen, dtype=torch.float64)
    z = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 3, (16, 2), generator=gen)
    greedy = q.argmax(-1)
    off = greedy != actions
    g = q_grad(make_mixer("qfix_sum", 2, 3, 4, 0, 1.0), q, actions, z)
    assert (g.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)[off].abs() > 1e-8).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_agents=st.sampled_from([2, 3, 5]), q_scale=st.sampled_from([0.1, 1.0, 30.0]),
       hypernet_layers=st.sampled_from([1, 2]), param_scale=st.floats(0.5, 3.0))
def test_qmix_is_monotone(seed, n_agents, q_scale, hypernet_layers, param_scale):
    """dQ_tot / dQ_i(a_i) >= 0 for QMIX (and the light QMIX fixee of QFIX-mono)."""
    gen = torch.Generator().manual_seed(seed)
    mixer = make_mixer("qmix", n_agents, 4, 6, seed, param_scale, hypernet_layers=hypernet_layers)
    x = (torch.randn(64, n_agents, generator=gen, dtype=torch.float64) * q_scale).requires_grad_(True)
    z = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(mixer.mix(x, z).sum(), x)
    assert (grad >= 0).all()
    # through the mixer call contract: only the chosen entries get gradient, all >= 0
    q = torch.randn(64, n_agents, 4, generator=gen, dtype=torch.float64) * q_scale
    actions = torch.randint(0, 4, (64, n_agents), generator=gen)
    g = q_grad(mixer, q, actions, z)
    assert (g >= 0).all()
    assert (g.sum(-1) == g.gather(-1, actions.unsqueeze(-1)).squeeze(-1)).all()


def test_qfix_mono_uses_a_light_monotone_fixee():
    mixer = build_mixer("qfix_mono", n_agents=5, n_actions=11, central_dim=130)
    assert isinstance(mixer.mix, MonotonicMix) and mixer.mix.embed_dim == 32
    assert isinstance(mixer.mix.hyper_w1, torch.nn.Linear)  # single-layer hypernetworks


def test_parameter_counts_at_smacv2_size():
    sizes = {name: sum(p.numel() for p in build_mixer(name, n_agents=5, n_actions=11, central_dim=130).parameters())
             for name in ALL}
    assert sizes["vdn"] == 0
    for name, expected in [("qfix_sum", 20_000), ("qfix_mono", 54_000), ("qmix", 38_000), ("qplex", 135_000)]:
        assert abs(sizes[name] - expected) / expected < 0.05, (name, sizes[name])


@pytest.mark.parametrize("name", QFIX)
def test_intervention_buffer(name):
    mixer = build_mixer(name, n_agents=2, n_actions=3, central_dim=4)
    assert mixer.intervention.item() == 1.0
    assert "intervention" in mixer.state_dict()
    assert all(p is not mixer.intervention for p in mixer.parameters())
    for bad in (-0.1, 1.5, float("nan")):  # lambda_D outside [0, 1]: a broken schedule, not a user's value
        with pytest.raises(AssertionError):
            mixer.set_intervention(bad)
    q, z = torch.randn(8, 2, 3), torch.randn(8, 4)
    actions = torch.randint(0, 3, (8, 2))
    mixer.set_intervention(0.0)
    fixee = mixer.fixee_value(chosen_q(q, actions), z)
    assert torch.allclose(mixer(q, actions, z), fixee)     # lambda_D = 0: the fixee alone
    full = build_mixer(name, n_agents=2, n_actions=3, central_dim=4)
    full.load_state_dict({k: v for k, v in mixer.state_dict().items() if k != "intervention"}, strict=False)
    mixer.set_intervention(0.25)
    expected = fixee + 0.25 * (full(q, actions, z) - fixee)
    assert torch.allclose(mixer(q, actions, z), expected, atol=1e-5)


def test_bad_qfix_config_is_refused():
    with pytest.raises(ConfigError):
        build_mixer("qfix_sum", n_agents=2, n_actions=3, central_dim=4, w_lower_bound=-0.5)
    with pytest.raises(ConfigError):
        build_mixer("qplusfix_sum", n_agents=2, n_actions=3, central_dim=4, w_lower_bound=-2.0)
    with pytest.raises(ConfigError):
        build_mixer("qfix_sum", n_agents=2, n_actions=3, central_dim=4, fixee="mono")
    with pytest.raises(ConfigError):
        build_mixer("qfix_mono", n_agents=2, n_actions=3, central_dim=4, detach_advantage=True)
    with pytest.raises(ConfigError):
        build_mixer("qfix_sum", n_agents=2, n_actions=3, central_dim=4, detach_greedy=True)
    with pytest.raises(ConfigError):
        build_mixer("qfix_lin", n_agents=2, n_actions=3, central_dim=4, fixee="mono")


def test_intervention_annealing_callback():
    mixer = build_mixer("qplusfix_mono", n_agents=2, n_actions=3, central_dim=4)
    target = build_mixer("qplusfix_mono", n_agents=2, n_actions=3, central_dim=4)
    module = SimpleNamespace(mixer=mixer, target_mixer=target)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(env_steps=0))
    cb = InterventionAnnealing(anneal_steps=1000)
    cb.on_train_start(trainer, module)
    assert mixer.intervention.item() == 0.0 and target.intervention.item() == 0.0
    trainer.datamodule.env_steps = 250
    cb.on_train_batch_start(trainer, module, None, 0)
    assert mixer.intervention.item() == pytest.approx(0.25) and target.intervention.item() == pytest.approx(0.25)
    assert cb.logged_values() == {"intervention": pytest.approx(0.25)}  # the value training rows get
    trainer.datamodule.env_steps = 5000
    cb.on_train_batch_start(trainer, module, None, 1)
    assert mixer.intervention.item() == 1.0
    restored = InterventionAnnealing(anneal_steps=1000)
    restored.load_state_dict(cb.state_dict())
    assert restored.value == 1.0
    # 0 steps = off (always 1); mixers without an intervention are left alone
    off = InterventionAnnealing(anneal_steps=0)
    mixer.set_intervention(0.3)
    off.on_train_batch_start(trainer.__class__(datamodule=SimpleNamespace(env_steps=0)), module, None, 0)
    assert mixer.intervention.item() == 1.0
    plain = SimpleNamespace(mixer=build_mixer("qmix", n_agents=2, n_actions=3, central_dim=4), target_mixer=None,
                            log=lambda *a, **k: pytest.fail("logged without a QFIX mixer"))
    off.on_train_batch_start(trainer, plain, None, 0)
    with pytest.raises(AssertionError):  # the config refuses learner.intervention_anneal_steps < 0 first
        InterventionAnnealing(anneal_steps=-1)
