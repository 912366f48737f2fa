"""The QFIX family: a thin "fixing" layer that makes a non-IGM-complete mixer (the "fixee":
VDN or a light QMIX) IGM-complete (Baisero et al., "Fixing incomplete value function decomposition
for multi-agent reinforcement learning").

Notation: ``Q_i(a_i)`` the chosen utilities, ``V_i = max_b Q_i(b)`` over available actions,
``A_i = Q_i(a_i) - V_i <= 0``; the fixee ``f`` gives ``Q_f = f(Q(a); z)``, ``V_f = f(max Q; z)``
and ``A_f = Q_f - V_f <= 0`` (``f`` is monotone, so ``A_f = 0`` at the greedy joint action).
The fixing weight is ``w(z, a) = |g([z; onehot(a)]) - t| + t + 1e-10 > t`` (``g`` an MLP, ``t`` the
lower bound ``w_lower_bound``), the bias ``b(z)`` an MLP.

=================  ===================================================  ======
mixer              ``Q_fix``                                             ``t``
=================  ===================================================  ======
QFIX-sum/-mono     ``w A_f + b``                                         0
Q+FIX-sum/-mono    ``Q_f + w sg(A_f) + b``                               -1
QFIX-lin           ``sum_i w_i A_i + b``                                 0
Q+FIX-lin          ``sum_i Q_i(a_i) + sum_i w_i sg(A_i) + b``            -1
=================  ===================================================  ======

(the ``-lin`` variants have one weight per agent and the VDN fixee ``Q_f = sum_i Q_i(a_i)``).

Intervention annealing: ``Q_tot = Q_f + lambda_D (Q_fix - Q_f)`` with ``lambda_D`` in [0, 1] (the
buffer ``intervention``, 1 by default, set by :meth:`QFIXMixer.set_intervention`). Writing
``Q_f = V_f + A_f``, ``Q_tot = const(z) + c A_f`` with ``c = 1 - lambda_D + lambda_D w > 0`` (QFIX,
``w > 0``) or ``c = 1 + lambda_D w > 0`` (Q+FIX, ``w > -1``): the greedy joint action maximizes
``Q_tot`` for every ``lambda_D`` (per agent for the ``-lin`` variants).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch.nn import functional as F

from lightning_marl.config.schema import spec
from lightning_marl.models.mixers.base import CentralMixerConfig, Mixer, chosen_q, max_q
from lightning_marl.models.mixers.qmix import MonotonicMix
from lightning_marl.models.mixers.qplex import mlp
from lightning_marl.registry import MIXERS

FIXEES = ("sum", "mono")


class QFIXMixer(Mixer):
    """The generic QFIX mixer; the registered classes below fix ``fixee``, ``additive`` and ``per_agent``.

    ``Q_tot = Q_f + lambda_D (Q_fix - Q_f)`` with
    ``Q_fix = w A_f + b`` (``additive=False``) or ``Q_fix = Q_f + w sg(A_f) + b`` (``additive=True``),
    ``w = |g([z; onehot(a)]) - t| + t + 1e-10``; with ``per_agent`` the fixee is VDN and
    ``w A_f`` becomes ``sum_i w_i A_i``.

    Config (values and defaults: the variants' config dataclasses at the end of this file):
    ``fixee`` (``sum`` = VDN, ``mono`` = light QMIX with ``embed_dim``, ``hypernet_layers``,
    ``hypernet_embed``), ``w_lower_bound`` (t), ``w_hidden`` and ``w_layers`` (g), ``b_hidden`` (b),
    ``detach_advantage`` (the sg() of Q+FIX; QFIX never detaches), ``detach_greedy`` (Q+FIX: in the
    fixing term, each agent's greedy utility ``V_i`` enters ``V_f`` through sg() where the agent's taken
    action is not its greedy one. Plain Q+FIX is ``Q_tot = (1 + w) Q_f - w V_f + b``: an error on a
    non-greedy joint action reaches those greedy utilities with the factor ``-w``, upwards where ``w < 0``;
    with ``detach_greedy`` they get nothing from it, the taken utilities keep ``1 + w``, and a step whose
    taken action is greedy for every agent trains exactly as without it; issue 29's test of that path).
    lambda_D starts at 1.
    """

    additive: bool = False
    per_agent: bool = False

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, *, fixee: str, w_lower_bound: float,
                 w_hidden: int, w_layers: int, b_hidden: int, detach_advantage: bool, detach_greedy: bool,
                 embed_dim: Optional[int] = None, hypernet_layers: Optional[int] = None,
                 hypernet_embed: Optional[int] = None):
        super().__init__(n_agents, n_actions, central_dim)
        # invariants of the registered variants (the user's values are checked by their configs)
        assert fixee in FIXEES and not (self.per_agent and fixee != "sum"), fixee
        assert w_lower_bound >= (-1.0 if self.additive else 0.0), w_lower_bound  # IGM needs w > t
        assert self.additive or not (detach_advantage or detach_greedy), (detach_advantage, detach_greedy)
        self.fixee, self.w_lower_bound, self.detach_advantage = fixee, float(w_lower_bound), bool(detach_advantage)
        self.detach_greedy = bool(detach_greedy)
        self.mix = (MonotonicMix(n_agents, central_dim, embed_dim, hypernet_layers, hypernet_embed)
                    if fixee == "mono" else None)
        self.g = mlp(central_dim + n_agents * n_actions, n_agents if self.per_agent else 1, w_layers, w_hidden)
        self.b = mlp(central_dim, 1, 2, b_hidden)
        self.register_buffer("intervention", torch.tensor(1.0))  # lambda_D = 1: the full fix

    def set_intervention(self, value: float) -> None:
        """Set lambda_D in [0, 1] (0: the fixee alone, 1: the full fix)."""
        value = float(value)
        assert 0.0 <= value <= 1.0, value
        self.intervention.fill_(value)

    def fixee_value(self, x: torch.Tensor, central: torch.Tensor) -> torch.Tensor:
        """``f(x; z)``: ``[*B,N] -> [*B]``."""
        return x.sum(-1) if self.mix is None else self.mix(x, central)

    def fix_weight(self, central: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``w(z, a) = |g([z; onehot(a)]) - t| + t + 1e-10``: ``[*B]`` (``[*B,N]`` for the -lin variants)."""
        onehot = F.one_hot(actions.long(), self.n_actions).to(central.dtype).flatten(-2)
        g = self.g(torch.cat([central, onehot], dim=-1))
        t = self.w_lower_bound
        w = (g - t).abs() + t + 1e-10
        return w if self.per_agent else w.squeeze(-1)

    def fixee_advantage(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                        action_mask: Optional[torch.Tensor] = None, *,
                        detach_greedy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q_f, A_f)`` of the joint action ``actions``: ``[*B]`` each (``A_f`` is ``[*B,N]``, the
        per-agent ``A_i``, for the -lin variants). With ``detach_greedy``, ``V_i`` enters through sg()
        where agent i's taken action is not its greedy one (``Q_i(a_i) < V_i``): the same values."""
        q = chosen_q(q_values, actions)
        v = max_q(q_values, action_mask)
        if detach_greedy:
            v = torch.where(q >= v, v, v.detach())
        if self.per_agent:
            return q.sum(-1), q - v
        q_f = self.fixee_value(q, central)
        return q_f, q_f - self.fixee_value(v, central)

    @torch.no_grad()
    def diagnostics(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                    action_mask: Optional[torch.Tensor], greedy: torch.Tensor, valid: torch.Tensor,
                    above: torch.Tensor) -> dict[str, float]:
        """The fixing weight where it decides the fit: ``w`` of the taken joint action on steps where it
        is not the greedy one (``w_nongreedy_*``), on those of them whose TD target exceeds the greedy
        joint action's value (``w_above_*``, ``above`` ``[*B]``: the error no IGM mixer can close there,
        e.g. the rare joint actions that deliver the big box) and ``w`` of the greedy joint action
        (``w_greedy_*``), each as mean, 5th percentile and share within 0.1 of the lower bound t; the
        credit factor of the taken non-greedy action (``credit_nongreedy_mean``, ``credit_above_mean``:
        ``1 + lambda_D w`` for Q+FIX, ``1 - lambda_D + lambda_D w`` for QFIX, the factor on ``A_f`` in
        ``Q_tot``) and its ``|A_f|``. ``valid`` ``[*B]``: the steps that count. NaN where no step counts
        (e.g. every taken action greedy)."""
        nongreedy = (actions != greedy).any(-1) & valid
        decisive = nongreedy & above
        w_taken, w_greedy = self.fix_weight(central, actions), self.fix_weight(central, greedy)
        _, adv = self.fixee_advantage(q_values, actions, central, action_mask, detach_greedy=False)
        lam, t = float(self.intervention), self.w_lower_bound
        credit = 1.0 + lam * w_taken if self.additive else 1.0 - lam + lam * w_taken
        out = {}
        for name, w, mask in (("nongreedy", w_taken, nongreedy), ("above", w_taken, decisive),
                              ("greedy", w_greedy, valid)):
            values = w[mask].flatten().double()
            empty = values.numel() == 0
            out[f"w_{name}_mean"] = float("nan") if empty else float(values.mean())
            out[f"w_{name}_p5"] = float("nan") if empty else float(torch.quantile(values, 0.05))
            out[f"w_{name}_near_bound"] = float("nan") if empty else float((values - t < 0.1).double().mean())
        for name, mask in (("nongreedy", nongreedy), ("above", decisive)):
            taken = credit[mask].flatten()
            out[f"credit_{name}_mean"] = float(taken.mean()) if taken.numel() else float("nan")
        fixee = adv[nongreedy].abs().flatten()
        out["adv_fixee_abs_nongreedy_mean"] = float(fixee.mean()) if fixee.numel() else float("nan")
        return out

    def forward(self, q_values: torch.Tensor, actions: torch.Tensor, central: torch.Tensor,
                action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q_f, adv = self.fixee_advantage(q_values, actions, central, action_mask,  # A_f [*B] ([*B,N] for -lin)
                                        detach_greedy=self.detach_greedy)
        w = self.fix_weight(central, actions)
        b = self.b(central).squeeze(-1)
        if self.additive:
            if self.detach_advantage:
                adv = adv.detach()
            fix = w * adv
            q_fix = q_f + (fix.sum(-1) if self.per_agent else fix) + b
        else:
            fix = w * adv
            q_fix = (fix.sum(-1) if self.per_agent else fix) + b
        lam = self.intervention
        return (1.0 - lam) * q_f + lam * q_fix


class QFIXSumMixer(QFIXMixer):
    """QFIX-sum: ``Q_tot = Q_f + lambda_D (w A_f + b - Q_f)``, fixee ``Q_f = sum_i Q_i(a_i)`` (VDN),
    ``A_f = sum_i A_i``, ``w = |g(z, a)| + 1e-10 > 0``."""

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="sum", detach_advantage=False,
                         detach_greedy=False, **config)


class QFIXMonoMixer(QFIXMixer):
    """QFIX-mono: ``Q_tot = Q_f + lambda_D (w A_f + b - Q_f)``, fixee a light QMIX
    ``Q_f = f(Q(a); z)``, ``A_f = f(Q(a); z) - f(max Q; z)`` (single-layer hypernetworks, embed 32),
    ``w = |g(z, a)| + 1e-10 > 0``."""

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="mono", detach_advantage=False,
                         detach_greedy=False, **config)


class QPlusFIXSumMixer(QFIXMixer):
    """Q+FIX-sum: ``Q_tot = Q_f + lambda_D (w sg(A_f) + b)``, fixee ``Q_f = sum_i Q_i(a_i)`` (VDN),
    ``w = |g(z, a) + 1| - 1 + 1e-10 > -1``."""

    additive = True

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="sum", **config)


class QPlusFIXMonoMixer(QFIXMixer):
    """Q+FIX-mono: ``Q_tot = Q_f + lambda_D (w sg(A_f) + b)``, fixee a light QMIX ``Q_f = f(Q(a); z)``,
    ``w = |g(z, a) + 1| - 1 + 1e-10 > -1``."""

    additive = True

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="mono", **config)


class QFIXLinMixer(QFIXMixer):
    """QFIX-lin: ``Q_tot = Q_f + lambda_D (sum_i w_i A_i + b - Q_f)``, ``Q_f = sum_i Q_i(a_i)``,
    one weight per agent ``w_i = |g_i(z, a)| + 1e-10 > 0``."""

    per_agent = True

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="sum", detach_advantage=False,
                         detach_greedy=False, **config)


class QPlusFIXLinMixer(QFIXMixer):
    """Q+FIX-lin: ``Q_tot = Q_f + lambda_D (sum_i w_i sg(A_i) + b)``, ``Q_f = sum_i Q_i(a_i)``,
    one weight per agent ``w_i = |g_i(z, a) + 1| - 1 + 1e-10 > -1``."""

    additive = True
    per_agent = True

    def __init__(self, n_agents: int, n_actions: int, central_dim: int, **config):
        super().__init__(n_agents, n_actions, central_dim, fixee="sum", **config)


# ----------------------------------------------------------------------------- configs
@dataclasses.dataclass
class QFIXConfig(CentralMixerConfig):
    """QFIX-sum / QFIX-lin: Q_tot = w(z,a) A_f + b(z), w = |g([z; onehot(a)]) - t| + t + 1e-10 > t."""

    supports_intervention = True
    has_diagnostics = True
    w_lower_bound: float = spec(0.0, "t in w = |g - t| + t + 1e-10 (IGM needs t >= 0 for QFIX)", ge=0.0)
    w_hidden: int = spec(64, "g: hidden size", ge=1)
    w_layers: int = spec(2, "layers of g (2 = one hidden layer)", ge=1)
    b_hidden: int = spec(64, "b(z): hidden size", ge=1)


@dataclasses.dataclass
class QPlusFIXConfig(QFIXConfig):
    """Q+FIX-sum / Q+FIX-lin: Q_tot = Q_f + w(z,a) sg(A_f) + b(z), w > t >= -1."""

    w_lower_bound: float = spec(-1.0, "t in w = |g - t| + t + 1e-10 (IGM needs t >= -1 for Q+FIX)", ge=-1.0)
    detach_advantage: bool = spec(False, "sg() on the fixee advantage (the reference's main runs: false; "
                                         "true is its -detach ablation)")
    detach_greedy: bool = spec(False, "in the fixing term, sg() on each agent's greedy utility where its taken "
                                      "action is not the greedy one: no -w share of an error reaches them, the "
                                      "taken utilities keep 1 + w (issue 29's test; implied by detach_advantage)")


@dataclasses.dataclass
class MonoFixee:
    """The light QMIX fixee of the -mono variants."""

    embed_dim: int = spec(32, "the light QMIX fixee's embedding", ge=1)
    hypernet_layers: int = spec(1, "layers of the fixee's hypernetworks", choices=(1, 2))
    hypernet_embed: int = spec(64, "hidden size of 2-layer hypernetworks", ge=1)


@MIXERS.register
@dataclasses.dataclass
class QFIXSumConfig(QFIXConfig):
    builds = QFIXSumMixer
    name: str = "qfix_sum"


@MIXERS.register
@dataclasses.dataclass
class QFIXLinConfig(QFIXConfig):
    builds = QFIXLinMixer
    name: str = "qfix_lin"


@MIXERS.register
@dataclasses.dataclass
class QFIXMonoConfig(QFIXConfig, MonoFixee):
    builds = QFIXMonoMixer
    name: str = "qfix_mono"


@MIXERS.register
@dataclasses.dataclass
class QPlusFIXSumConfig(QPlusFIXConfig):
    builds = QPlusFIXSumMixer
    name: str = "qplusfix_sum"


@MIXERS.register
@dataclasses.dataclass
class QPlusFIXLinConfig(QPlusFIXConfig):
    builds = QPlusFIXLinMixer
    name: str = "qplusfix_lin"


@MIXERS.register
@dataclasses.dataclass
class QPlusFIXMonoConfig(QPlusFIXConfig, MonoFixee):
    builds = QPlusFIXMonoMixer
    name: str = "qplusfix_mono"
