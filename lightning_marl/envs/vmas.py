"""VMAS (the vectorized multi-agent simulator, ``vmas`` from the package index) through TorchRL's
``VmasEnv``, with discrete actions: ``env=vmas env.task=balance`` (tasks named as BenchMARL names
them; :data:`TASKS`). One object simulates all ``num_envs`` games in torch, on the CPU or the GPU
(``device=cuda``); every step stays on that device (no copies to the host, no Python loop over games).

- observations: each agent's own ``[N, obs]``; the state: the agents' observations joined (VMAS has
  no global state; EPyMARL's and BenchMARL's convention);
- the team reward: the mean of the agents' rewards (``env.team_reward=mean``, BenchMARL's choice for
  QMIX and VDN; VMAS gives a shared reward to every agent in most tasks, and the mean is that
  reward); ``env.team_reward=sum`` is EPyMARL's common reward;
- actions: VMAS's discrete actions, all always available (no masks);
- the time limit (``env.max_steps``, BenchMARL's value per task unless set) is a truncation, which
  bootstraps: VMAS itself would report it as a termination (``done`` without a ``truncated`` key), so
  it is counted here instead; ``env.timeout_as_terminal=true`` stores time-outs as terminals, as
  BenchMARL does, for parity with it. A task's own end (e.g. balance's package falling) terminates.
- seeding: VMAS draws its resets from the global torch RNG, which ``seed`` seeds when the games are
  made (as VMAS does); a run's checkpoint holds the global RNG states, so a resumed run continues
  exactly (the games have no RNG of their own).

Games that finished inside a round are stepped along with the others (VMAS steps every game) but
keep their final done flags and get no reward until the round's reset.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.contract import ACTION, MASK, OBS, STATE, make_specs
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

# task -> (BenchMARL 1.5.2's max_steps, its scenario settings: benchmarl/conf/task/vmas/<task>.yaml)
TASKS: dict[str, tuple[int, dict[str, Any]]] = {
    "balance": (100, {"n_agents": 4, "random_package_pos_on_line": True, "package_mass": 5}),
    "navigation": (100, {"n_agents": 3, "collisions": True, "agents_with_same_goal": 1, "split_goals": False,
                         "observe_all_goals": False, "shared_rew": False, "lidar_range": 0.35, "agent_radius": 0.1}),
    "transport": (100, {"n_agents": 4, "n_packages": 1, "package_width": 0.15, "package_length": 0.15,
                        "package_mass": 50}),
    "wheel": (100, {"n_agents": 4, "line_length": 1, "line_mass": 30, "desired_velocity": 0.05}),
    "sampling": (100, {"n_agents": 3, "shared_rew": False, "n_gaussians": 3, "lidar_range": 0.2, "cov": 0.05,
                       "collisions": True, "spawn_same_pos": False}),
    "dispersion": (100, {"n_agents": 4, "n_food": 4, "share_reward": True, "food_radius": 0.02,
                         "penalise_by_time": False}),
    "give_way": (100, {"mirror_passage": False, "observe_rel_pos": False, "done_on_completion": False,
                       "final_reward": 0.01}),
    "reverse_transport": (100, {"n_agents": 4, "package_width": 0.6, "package_length": 0.6, "package_mass": 50}),
}
TEAM_REWARDS = ("mean", "sum")
INSTALL = "pip install 'lightning_marl[vmas]'"


def _vmas_env(task: str, num_envs: int, seed: Optional[int], device, scenario: dict[str, Any]):
    if task not in TASKS:
        raise ConfigError(f"env.task={task} is not a VMAS task here; allowed: {', '.join(TASKS)}")
    try:
        from torchrl.envs.libs.vmas import VmasEnv
    except ImportError as err:  # pragma: no cover - torchrl is a dependency
        raise ImportError(f"env=vmas needs TorchRL's VmasEnv ({err})") from err
    try:
        import vmas  # noqa: F401
    except ImportError as err:
        raise ImportError(f"env=vmas needs the vmas package ({err}).\n    {INSTALL}") from err
    settings = {**TASKS[task][1], **scenario}
    try:
        return VmasEnv(task, num_envs=num_envs, continuous_actions=False, categorical_actions=True, max_steps=None,
                       device=device, seed=seed, **settings)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"env.scenario={scenario} is refused by VMAS's {task} ({type(err).__name__}: "
                          f"{str(err)[:160]}); allowed: the scenario's own keyword options") from None


class VMASEnv(EnvBase):
    """``num_envs`` VMAS games of one task, batch size ``[num_envs]``; see the module docstring."""

    batch_locked = True

    def __init__(self, task: str, num_envs: int, max_steps: Optional[int], team_reward: str, seed: Optional[int],
                 device, scenario: Optional[dict[str, Any]] = None):
        inner = _vmas_env(task, num_envs, seed, device, dict(scenario or {}))
        super().__init__(batch_size=torch.Size([num_envs]), device=inner.device)
        groups = inner.group_map
        if list(groups) != ["agents"]:
            inner.close()
            raise ConfigError(f"env.task={task} has agents in several groups ({', '.join(groups)}: different "
                              f"observation or action spaces); allowed: {', '.join(TASKS)} with their own agents")
        self._inner, self.task, self.team_reward = inner, task, team_reward
        obs_shape = inner.full_observation_spec[OBS].shape
        self.n_agents, self.obs_dim = int(obs_shape[-2]), int(obs_shape[-1])
        self.n_actions = int(inner.full_action_spec[ACTION].space.n)
        self.state_dim = self.n_agents * self.obs_dim
        self.episode_limit = max_steps or TASKS[task][0]  # (None: BenchMARL's for the task)
        self.stat_keys: tuple[str, ...] = ()
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=self.obs_dim,
                   state_dim=self.state_dim)
        b = num_envs
        self._mask = torch.ones(b, self.n_agents, self.n_actions, dtype=torch.bool, device=self.device)
        self._t = torch.zeros(b, dtype=torch.long, device=self.device)
        self._terminated = torch.zeros(b, 1, dtype=torch.bool, device=self.device)
        self._truncated = torch.zeros_like(self._terminated)

    def _observe(self, inner_td: TensorDictBase) -> TensorDict:
        obs = inner_td.get(OBS).to(torch.float32)
        agents = TensorDict({OBS[1]: obs, MASK[1]: self._mask.clone()}, batch_size=[*self.batch_size, self.n_agents],
                            device=self.device)
        done = self._terminated | self._truncated
        return TensorDict({OBS[0]: agents, STATE: obs.reshape(obs.shape[0], -1), "done": done,
                           "terminated": self._terminated.clone(), "truncated": self._truncated.clone()},
                          batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        rows = tensordict.get("_reset", None) if tensordict is not None else None
        if rows is None or bool(rows.all()):
            inner_td = self._inner.reset()
            self._t.zero_()
            self._terminated.zero_()
            self._truncated.zero_()
        else:
            inner_td = self._inner.reset(TensorDict({"_reset": rows.reshape(-1, 1)}, batch_size=self.batch_size,
                                                    device=self.device))
            rows = rows.reshape(-1)
            self._t.masked_fill_(rows, 0)
            self._terminated.masked_fill_(rows[:, None], False)
            self._truncated.masked_fill_(rows[:, None], False)
        return self._observe(inner_td)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        action = tensordict.get(ACTION)
        inner_td = TensorDict({ACTION: action}, batch_size=self.batch_size, device=self.device)
        out = self._inner.step(inner_td).get("next")
        rewards = out.get(("agents", "reward")).squeeze(-1)  # [B, N]
        reward = rewards.mean(-1, keepdim=True) if self.team_reward == "mean" else rewards.sum(-1, keepdim=True)
        stepping = tensordict.get("_step", None)
        stepping = (torch.ones_like(self._t, dtype=torch.bool) if stepping is None
                    else stepping.reshape(-1).to(torch.bool))
        live = stepping & ~(self._terminated | self._truncated).squeeze(-1)
        self._t += live.long()
        terminated = out.get("terminated").reshape(-1, 1) & live[:, None]
        truncated = (self._t >= self.episode_limit)[:, None] & live[:, None] & ~terminated
        self._terminated |= terminated
        self._truncated |= truncated
        td = self._observe(out)
        td.set("reward", reward.to(torch.float32) * live[:, None])
        return td

    def _set_seed(self, seed: Optional[int]) -> None:
        self._inner.set_seed(seed)

    def close(self, *, raise_if_closed: bool = True) -> None:
        self._inner.close(raise_if_closed=False)
        super().close(raise_if_closed=raise_if_closed)


def make_env(num_envs: int, seed: int, device: str, *, task: str, max_steps: Optional[int], team_reward: str,
             scenario: dict[str, Any]) -> VMASEnv:
    """``num_envs`` games of ``task`` in one VMAS object on ``device``."""
    return VMASEnv(task, num_envs, max_steps, team_reward, seed, device, scenario)


@ENVS.register
@dataclasses.dataclass
class VMASConfig(EnvConfig):
    """VMAS through TorchRL's VmasEnv, discrete actions, tasks and settings as BenchMARL names them."""

    builds = staticmethod(make_env)
    name: str = "vmas"
    task: str = spec("balance", " | ".join(TASKS), choices=tuple(TASKS))
    max_steps: Optional[int] = spec(None, "time limit in steps (truncation); null: BenchMARL's for the task (100)",
                                    ge=1)
    team_reward: str = spec("mean", "mean (BenchMARL) | sum (EPyMARL) of the agents' rewards", choices=TEAM_REWARDS)
    scenario: dict[str, Any] = spec(factory=dict, help="the scenario's keyword options over BenchMARL's for the "
                                                       "task, e.g. +env.scenario.n_agents=3")
