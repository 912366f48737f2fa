"""Acting: the shared recurrent agent with masked epsilon-greedy, as a TensorDict module.

The policy's state lives in the TensorDict, next to what the env wrote:

==========================  ===========  ===================================================
key                         shape        meaning
==========================  ===========  ===================================================
``("agents", "observation")``  ``[*B,N,O]``  read
``("agents", "action_mask")``  ``[*B,N,A]``  read
``("agents", "hidden")``       ``[*B,N,H]``  read and written: the GRU state after the last step
``("agents", "prev_action")``  ``[*B,N]``    read and written: the action of the last step
``"is_init"``                  ``[*B,1]``    read if present (TorchRL's ``InitTracker``)
``("agents", "action_value")`` ``[*B,N,A]``  written with ``action_values=True``: Q_i(tau_i, .)
``("agents", "action")``       ``[*B,N]``    written
==========================  ===========  ===================================================

An episode starts from a zero hidden state and no previous action: where ``hidden`` is absent (a
TensorDict fresh from ``env.reset()``, as every round of ``EnvBase.rollout`` starts) or where
``is_init`` is True. TorchRL's ``step_mdp`` carries the written state to the next step's
TensorDict (``keep_other``), so ``rollout``, a stepping loop and TorchRL's collectors all work.
"""
from __future__ import annotations

from typing import Optional

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from lightning_marl.envs.contract import ACTION, MASK, OBS
from lightning_marl.errors import DivergenceError
from lightning_marl.models.agent import RNNAgent, epsilon_greedy

HIDDEN = ("agents", "hidden")
PREV_ACTION = ("agents", "prev_action")
ACTION_VALUE = ("agents", "action_value")
IS_INIT = "is_init"


class RecurrentPolicy(TensorDictModuleBase):
    """``a_i = epsilon-greedy over available actions of Q_i(o_i, a_i^prev, h_i)`` for every agent,
    with the GRU state and previous action read from and written to the TensorDict (keys in the
    module docstring). ``epsilon`` is a buffer (float64, so the value compared is the float given):
    :meth:`set_epsilon` changes it between rounds, and it travels with the agent's weights to
    TorchRL's collector workers.

    Why not TorchRL's ``QValueModule`` + ``EGreedyModule``: they handle per-agent masks, but draw
    from the global RNG only (worker processes and collector threads here draw from a generator of
    their own) and in another order than :func:`~lightning_marl.models.agent.epsilon_greedy`, which
    would change every seeded run; TorchRL's ``GRUModule`` keeps one state per TensorDict row, not
    one per agent of a row.

    ``require_finite``: raise a :class:`DivergenceError` on non-finite Q values (greedy evaluation).
    ``action_values``: also write the Q values (off for collection: a rollout stacks every key it is
    given, and at 1024 games the Q values cost ~5% of the collection speed).
    """

    in_keys = [OBS, MASK, HIDDEN, PREV_ACTION, IS_INIT]
    out_keys = [ACTION, HIDDEN, PREV_ACTION, ACTION_VALUE]

    def __init__(self, agent: RNNAgent, epsilon: float = 0.0, device: Optional[torch.device] = None,
                 generator: Optional[torch.Generator] = None, require_finite: bool = False,
                 action_values: bool = False):
        super().__init__()
        self.action_values = action_values
        self.agent, self.generator = agent, generator
        self.device = device if device is not None else next(agent.parameters()).device
        self.register_buffer("epsilon", torch.tensor(float(epsilon), dtype=torch.float64))
        self.require_finite = require_finite

    @torch.no_grad()
    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs = td.get(OBS).to(self.device, non_blocking=True)
        mask = td.get(MASK).to(self.device, non_blocking=True)
        hidden, prev = td.get(HIDDEN, None), td.get(PREV_ACTION, None)
        if hidden is not None:
            hidden, prev = hidden.to(self.device), prev.to(self.device)
            init = td.get(IS_INIT, None)
            if init is not None:  # games whose episode starts at this step
                init = init.to(self.device).reshape(init.shape[0], 1)
                hidden = torch.where(init[..., None], 0.0, hidden)
                prev = torch.where(init, -1, prev)
        action, hidden, q = self.act(obs, mask, hidden, prev)
        out = td.device
        written = ((ACTION, action), (HIDDEN, hidden), (PREV_ACTION, action)) + (
            ((ACTION_VALUE, q),) if self.action_values else ())
        for key, value in written:
            td.set(key, value.to(out, non_blocking=True) if out is not None else value.cpu())
        return td

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mask: torch.Tensor, hidden: Optional[torch.Tensor],
            prev: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of a batch of games on the policy's device: observations ``[B,N,O]``, masks
        ``[B,N,A]``, the state after the last step (``hidden`` ``[B,N,H]``, ``prev`` ``[B,N]``; ``None``
        at the episode's first step) -> (actions ``[B,N]``, new hidden, Q values ``[B,N,A]``)."""
        if hidden is None:  # the episode's first step
            hidden, prev = self.agent.initial_state(obs.shape[0], device=self.device), None
        q, hidden = self.agent.step(obs, prev, hidden, mask)
        if self.require_finite and not torch.isfinite(q).all():
            raise DivergenceError("the agent's Q values are not finite: no greedy evaluation of a diverged agent")
        return epsilon_greedy(q, mask, float(self.epsilon), generator=self.generator), hidden, q

    def set_epsilon(self, epsilon: float) -> "RecurrentPolicy":
        self.epsilon.fill_(float(epsilon))
        return self
