"""Box Pushing (Xiao & Amato's primitive-action version), a whole batch of games in tensor ops.

Grid ``X x X`` (X in 4, 6, 8, 10, ..., 30), the goal row at the top. Every quantity is a tensor
over the batch of games; there is no Python loop over games, agents or boxes.

Coordinates. Internally every object sits on an integer cell ``(col, row)``, ``row`` growing
north; the continuous coordinates of DESIGN.md (cells centred at half-integers) are
``(col + 0.5, row + 0.5)``. The big box spans the two cells ``(c, r)`` and ``(c + 1, r)``; its
centre is ``(c + 1.0, r + 0.5)``. Orientation 0 = north, 1 = east, 2 = south, 3 = west; turn left
is ``o - 1``, turn right ``o + 1`` (mod 4). The goal row is the top row ``X - 1``.

Layouts (DESIGN.md section 5, the reference layouts):

==========  =====================================  ==========================  ==================
grid        agents (col, row, facing)              small boxes                 big box (left cell)
==========  =====================================  ==========================  ==================
4x4         (0, 0) east, (3, 0) west               (0, 2), (3, 2)              (1, 2)
6x6         (0, 1) east, (5, 1) west               (0, 3), (5, 3)              (2, 3)
NxN, N>=8   (1, 1) east, (N-2, 1) west             (1, N/2), (N-2, N/2)        (N/2-1, N/2)
==========  =====================================  ==========================  ==================

With ``n_agents=3`` the third agent starts in the agents' row at column ``X/2 - 1`` (below the
left half of the big box) facing north: it is one move away from the big box and must team up
with one of the others to push it. ``random_init=True`` places every agent independently and
uniformly on any cell of the rows strictly below the boxes' row (all of them free), with a
uniformly random orientation; agents may share a cell.

Dynamics. All moves are simultaneous and judged against the boxes' positions at the start of
the step (the reference steps agents one after the other; the two only differ when an agent walks
into the cell a small box is leaving in the same step, which the reference allows for the
second-processed agent and this version counts as a bump). Forward into a small box while facing
north pushes it one row north (the agent follows); the big box moves one row north when each of
its two cells has a north-facing agent right below it that moves forward (those agents follow).
Moving off the grid, into the big box otherwise, or into a small box facing any other direction
cancels the move and costs ``bump_penalty`` for that agent. Agents never block each other and
boxes are not blocked by agents (as in the reference). Team reward: ``step_reward`` every step,
plus the bump penalties, plus ``small_box_reward`` per small box and ``big_box_reward`` for the
big box reaching the top row. Any box in the top row terminates the episode; the ``horizon``-th
step truncates it (``truncated`` True, ``terminated`` False; a step that does both is reported as
terminated only). With ``success_prob < 1`` every agent's action independently fails with
probability ``1 - success_prob`` and acts as "stay" (Seuken & Zilberstein's variant: 0.9).

Observation per agent, 5 bits for the cell in front: [small box, big box, empty, wall, teammate]
(computed from the actual layout, also at reset). State: per agent [x/X, y/Y, one-hot
orientation (4)], then per box [x/X, y/Y] (small, small, big), continuous centre coordinates:
``6 N + 6`` values (18 for 2 agents, 24 for 3).

Statistics (``stat_keys``): ``small_boxes`` and ``big_box``, the number of small boxes / big
boxes delivered in the current episode, emitted as ``[B, 1]`` float observations (0 at reset).

Partial steps: a ``"_step"`` mask in the input (TorchRL writes it for batch-locked envs in
``rollout(break_when_all_done=True)``) steps only the flagged games; the others keep their state
and step counter untouched, and their outputs (current observation, reward 0, stored done flags)
are discarded by TorchRL. Partial resets (``"_reset"``) reset only the flagged games.

Randomness (random initial positions, action failures) comes from a private ``torch.Generator``
on the env device, seeded by ``set_seed``; ``rng_state()`` (alias ``get_rng_state()``) and
``set_rng_state(state)`` save and restore it for checkpoints, and ``get_env_state()`` /
``set_env_state()`` snapshot the whole batch of games (positions, counters and generator).
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.contract import ACTION, make_specs
from lightning_marl.registry import ENVS

ALLOWED_GRIDS = tuple(range(4, 31, 2))  # 4, 6, 8, ..., 30 (the big box needs an even width)
N_ACTIONS = 4
FORWARD, TURN_LEFT, TURN_RIGHT, STAY = 0, 1, 2, 3
NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
OBS_DIM = 5  # [small box, big box, empty, wall, teammate]
STAT_KEYS = ("small_boxes", "big_box")
# (dcol, drow) per orientation: north, east, south, west
_DIRS = [[0, 1], [1, 0], [0, -1], [-1, 0]]
_STATE_KEYS = ("pos", "ori", "box", "t", "small_count", "big_count", "terminated", "truncated")


def initial_layout(grid: int, n_agents: int):
    """The fixed start: ``(agent cells [N,2], orientations [N], box cells [3,2])``, integer cells.

    Box 0 and 1 are the small boxes, box 2 is the big box given by its left cell.
    """
    assert grid in ALLOWED_GRIDS and n_agents in (2, 3), (grid, n_agents)  # BoxPushingEnvConfig's ranges
    row = grid // 2                                   # boxes' row (centre y = X/2 + 0.5)
    agent_row = 0 if grid == 4 else 1
    side = 0 if grid <= 6 else 1                      # column of agent 0 and of small box 0
    agents = [[side, agent_row], [grid - 1 - side, agent_row]]
    oris = [EAST, WEST]
    if n_agents == 3:
        agents.append([grid // 2 - 1, agent_row])
        oris.append(NORTH)
    boxes = [[side, row], [grid - 1 - side, row], [grid // 2 - 1, row]]
    return agents, oris, boxes


class BoxPushingEnv(EnvBase):
    """A batch of ``num_envs`` Box Pushing games (see the module docstring for the rules)."""

    batch_locked = True

    def __init__(self, num_envs: int, grid: int, n_agents: int, horizon: int, step_reward: float,
                 bump_penalty: float, small_box_reward: float, big_box_reward: float, random_init: bool,
                 success_prob: float, device: str | torch.device):
        # the options and their ranges are BoxPushingEnvConfig's (checked once, by the config)
        assert horizon >= 1 and 0.0 < success_prob <= 1.0, (horizon, success_prob)
        agents, oris, boxes = initial_layout(grid, n_agents)
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        dev = self.device
        self.grid = grid
        self.n_agents = n_agents
        self.n_actions = N_ACTIONS
        self.horizon = horizon
        self.episode_limit = horizon
        self.step_reward = float(step_reward)
        self.bump_penalty = float(bump_penalty)
        self.small_box_reward = float(small_box_reward)
        self.big_box_reward = float(big_box_reward)
        self.random_init = bool(random_init)
        self.success_prob = float(success_prob)
        self.stat_keys: tuple[str, ...] = STAT_KEYS
        self.obs_dim = OBS_DIM
        self.state_dim = 6 * n_agents + 6
        make_specs(self, n_agents=n_agents, n_actions=N_ACTIONS, obs_dim=OBS_DIM, state_dim=self.state_dim,
                   stat_keys=STAT_KEYS, obs_low=0.0, obs_high=1.0)

        self._dirs = torch.tensor(_DIRS, dtype=torch.long, device=dev)
        self._init_pos = torch.tensor(agents, dtype=torch.long, device=dev)
        self._init_ori = torch.tensor(oris, dtype=torch.long, device=dev)
        self._init_box = torch.tensor(boxes, dtype=torch.long, device=dev)
        self._not_self = ~torch.eye(n_agents, dtype=torch.bool, device=dev)
        # continuous centre = cell + offset (the big box's centre is its left cell + 1.0)
        self._box_offset = torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 0.5]], device=dev)
        self._rng = torch.Generator(device=dev)
        self._rng.manual_seed(0)

        # the games' state, in a plain namespace (cheaper to update than nn.Module attributes)
        b = num_envs
        self._g = SimpleNamespace(
            pos=self._init_pos.expand(b, -1, -1).clone(),             # [B,N,2] (col, row)
            ori=self._init_ori.expand(b, -1).clone(),                 # [B,N]
            box=self._init_box.expand(b, -1, -1).clone(),             # [B,3,2], box 2 = big (left cell)
            t=torch.zeros(b, dtype=torch.long, device=dev),          # steps taken in the episode
            small_count=torch.zeros(b, device=dev),                   # boxes delivered in the episode
            big_count=torch.zeros(b, device=dev),
            terminated=torch.zeros(b, dtype=torch.bool, device=dev),
            truncated=torch.zeros(b, dtype=torch.bool, device=dev),
        )

    # ------------------------------------------------------------------ observation
    def _front(self, pos: torch.Tensor, ori: torch.Tensor) -> torch.Tensor:
        return pos + self._dirs[ori]

    def _cell_bits(self, front: torch.Tensor, pos: torch.Tensor, box: torch.Tensor, teammates: bool = True):
        """What lies in the cells ``front [B,N,2]``: (small [B,N,2 boxes], big, wall, teammate) masks."""
        x, y = front[..., 0], front[..., 1]
        small = (front.unsqueeze(2) == box[:, None, :2]).all(-1)                  # [B,N,2]
        bx, by = box[:, None, 2, 0], box[:, None, 2, 1]
        big = (y == by) & ((x == bx) | (x == bx + 1))                             # [B,N]
        wall = (x < 0) | (x >= self.grid) | (y < 0) | (y >= self.grid)
        if not teammates:
            return small, big, wall, None
        mate = ((front.unsqueeze(2) == pos.unsqueeze(1)).all(-1) & self._not_self).any(-1)
        return small, big, wall, mate

    def _observe(self) -> TensorDict:
        pos, ori, box = self._g.pos, self._g.ori, self._g.box
        b, n = ori.shape
        small, big, wall, mate = self._cell_bits(self._front(pos, ori), pos, box)
        small = small.any(-1)
        empty = ~(small | big | wall | mate)
        obs = torch.stack((small, big, empty, wall, mate), -1).float()
        scale = 1.0 / self.grid
        agent_state = torch.cat(((pos.float() + 0.5) * scale,
                                 torch.nn.functional.one_hot(ori, 4).float()), -1).reshape(b, -1)
        box_state = ((box.float() + self._box_offset) * scale).reshape(b, -1)
        return TensorDict(
            {
                "agents": TensorDict(
                    {"observation": obs,
                     "action_mask": torch.ones(b, n, N_ACTIONS, dtype=torch.bool, device=self.device)},
                    batch_size=(b, n), device=self.device),
                "state": torch.cat((agent_state, box_state), -1),
                "small_boxes": self._g.small_count.unsqueeze(-1).clone(),
                "big_box": self._g.big_count.unsqueeze(-1).clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _with_done(self, td: TensorDict) -> TensorDict:
        term, trunc = self._g.terminated.unsqueeze(-1), self._g.truncated.unsqueeze(-1)
        td.set("terminated", term.clone())
        td.set("truncated", trunc.clone())
        td.set("done", term | trunc)
        return td

    # ------------------------------------------------------------------ reset / step
    def _flags(self, tensordict: Optional[TensorDictBase], key: str) -> Optional[torch.Tensor]:
        if tensordict is None:
            return None
        flags = tensordict.get(key, None)
        if flags is None:
            return None
        flags = flags.to(self.device).reshape(self.batch_size[0]).bool()
        return None if bool(flags.all()) else flags

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        b, n = self.batch_size[0], self.n_agents
        dev = self.device
        if self.random_init:
            rows = int(self._init_box[0, 1])                           # rows strictly below the boxes
            cells = torch.randint(0, self.grid * rows, (b, n), generator=self._rng, device=dev)
            pos = torch.stack((cells % self.grid, cells // self.grid), -1)
            ori = torch.randint(0, 4, (b, n), generator=self._rng, device=dev)
        else:
            pos = self._init_pos.expand(b, -1, -1)
            ori = self._init_ori.expand(b, -1)
        box = self._init_box.expand(b, -1, -1)
        mask = self._flags(tensordict, "_reset")
        if mask is None:
            self._g.pos, self._g.ori, self._g.box = pos.clone(), ori.clone(), box.clone()
            self._g.t.zero_()
            self._g.small_count.zero_()
            self._g.big_count.zero_()
            self._g.terminated.zero_()
            self._g.truncated.zero_()
        else:
            m1, m2 = mask[:, None], mask[:, None, None]
            self._g.pos = torch.where(m2, pos, self._g.pos)
            self._g.ori = torch.where(m1, ori, self._g.ori)
            self._g.box = torch.where(m2, box, self._g.box)
            self._g.t.masked_fill_(mask, 0)
            self._g.small_count.masked_fill_(mask, 0.0)
            self._g.big_count.masked_fill_(mask, 0.0)
            self._g.terminated.masked_fill_(mask, False)
            self._g.truncated.masked_fill_(mask, False)
        return self._with_done(self._observe())

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        pos, ori, box = self._g.pos, self._g.ori, self._g.box
        b, n = ori.shape
        action = tensordict.get(ACTION).to(self.device).long()
        if self.success_prob < 1.0:
            fail = torch.rand((b, n), generator=self._rng, device=self.device) >= self.success_prob
            action = action.masked_fill(fail, STAY)
        fwd = action == FORWARD
        north = ori == NORTH
        push = fwd & north
        step = self._dirs[ori]
        front = pos + step
        small, big, wall, _ = self._cell_bits(front, pos, box, teammates=False)

        # big box: each of its two cells needs a north-facing agent right below it moving forward
        bx, by = box[:, None, 2, 0], box[:, None, 2, 1]
        below = push & (pos[..., 1] == by - 1)
        left, right = below & (pos[..., 0] == bx), below & (pos[..., 0] == bx + 1)
        big_moves = left.any(-1) & right.any(-1)                                  # [B]
        big_pushers = (left | right) & big_moves.unsqueeze(-1)                    # [B,N]
        small_moves = (small & push.unsqueeze(-1)).any(1)                          # [B,2]

        bump = fwd & (wall | (small.any(-1) & ~north) | (big & ~big_pushers))
        moved = fwd & ~bump
        new_pos = pos + step * moved.unsqueeze(-1)
        new_ori = (ori + (action == TURN_RIGHT).long() - (action == TURN_LEFT).long()) % 4
        box_moves = torch.cat((small_moves, big_moves.unsqueeze(-1)), -1)         # [B,3]
        new_box = box.clone()
        new_box[..., 1] += box_moves.long()

        delivered = box_moves & (new_box[..., 1] == self.grid - 1)                 # [B,3]
        n_small = delivered[:, :2].sum(-1).float()
        n_big = delivered[:, 2].float()
        reward = (self.step_reward + self.bump_penalty * bump.sum(-1).float()
                  + self.small_box_reward * n_small + self.big_box_reward * n_big)
        new_t = self._g.t + 1
        terminated = delivered.any(-1)
        truncated = (new_t >= self.horizon) & ~terminated

        mask = self._flags(tensordict, "_step")
        if mask is None:
            self._g.pos, self._g.ori, self._g.box, self._g.t = new_pos, new_ori, new_box, new_t
            self._g.small_count = self._g.small_count + n_small
            self._g.big_count = self._g.big_count + n_big
            self._g.terminated, self._g.truncated = terminated, truncated
        else:
            m1, m2 = mask[:, None], mask[:, None, None]
            self._g.pos = torch.where(m2, new_pos, pos)
            self._g.ori = torch.where(m1, new_ori, ori)
            self._g.box = torch.where(m2, new_box, box)
            self._g.t = torch.where(mask, new_t, self._g.t)
            self._g.small_count = self._g.small_count + n_small * mask
            self._g.big_count = self._g.big_count + n_big * mask
            self._g.terminated = torch.where(mask, terminated, self._g.terminated)
            self._g.truncated = torch.where(mask, truncated, self._g.truncated)
            reward = reward * mask
        td = self._with_done(self._observe())
        td.set("reward", reward.unsqueeze(-1))
        return td

    # ------------------------------------------------------------------ seeding / state
    def _set_seed(self, seed: Optional[int]) -> None:
        if seed is None:
            self._rng.seed()
        else:
            self._rng.manual_seed(int(seed))

    def get_rng_state(self) -> torch.Tensor:
        """The private generator's state (a CPU uint8 tensor), for checkpoints."""
        return self._rng.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self._rng.set_state(state.cpu())

    def rng_state(self) -> torch.Tensor:
        """Alias of ``get_rng_state`` (the name the DataModule's checkpointing calls)."""
        return self.get_rng_state()

    def get_env_state(self) -> dict:
        """A copy of every game's state and of the generator (restore with ``set_env_state``)."""
        state = {key: getattr(self._g, key).clone() for key in _STATE_KEYS}
        state["rng"] = self.get_rng_state()
        return state

    def set_env_state(self, state: dict) -> None:
        """Restore a ``get_env_state`` snapshot (tensors with this env's batch size)."""
        for key in _STATE_KEYS:
            value = torch.as_tensor(state[key]).to(self.device)
            current = getattr(self._g, key)
            if value.shape != current.shape:
                raise ValueError(f"env state {key!r} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
            setattr(self._g, key, value.to(current.dtype).clone())
        if "rng" in state:
            self.set_rng_state(state["rng"])

    # ------------------------------------------------------------------ rendering
    def render(self, index: int = 0) -> str:
        """A text picture of game ``index``: arrows ^ > v < for agents (a digit when several share
        a cell), ``b`` small boxes, ``BB`` the big box, the goal row marked on the right."""
        g = self.grid
        cells = [["." for _ in range(g)] for _ in range(g)]
        box = self._g.box[index].tolist()
        for (x, y) in box[:2]:
            if 0 <= x < g and 0 <= y < g:
                cells[y][x] = "b"
        bx, by = box[2]
        for x in (bx, bx + 1):
            if 0 <= x < g and 0 <= by < g:
                cells[by][x] = "B"
        counts: dict = {}
        for (x, y), o in zip(self._g.pos[index].tolist(), self._g.ori[index].tolist()):
            counts[(x, y)] = counts.get((x, y), 0) + 1
            cells[y][x] = "^>v<"[o] if counts[(x, y)] == 1 else str(counts[(x, y)])
        border = "+" + "-" * g + "+"
        lines = [border]
        for y in reversed(range(g)):
            lines.append("|" + "".join(cells[y]) + "|" + ("  <- goal" if y == g - 1 else ""))
        lines.append(border)
        lines.append(f"t={int(self._g.t[index])} small_boxes={int(self._g.small_count[index])} "
                     f"big_box={int(self._g.big_count[index])}")
        return "\n".join(lines)

    def render_rgb(self, index: int = 0, cell: int = 16) -> np.ndarray:
        """An ``[X*cell, X*cell, 3]`` uint8 picture of game ``index`` (north up)."""
        g = self.grid
        img = np.full((g * cell, g * cell, 3), 255, dtype=np.uint8)

        def fill(x, y, color, w=1, pad=1):
            r = g - 1 - y
            img[r * cell + pad:(r + 1) * cell - pad, x * cell + pad:(x + w) * cell - pad] = color

        for x in range(g):
            fill(x, g - 1, (250, 230, 120), pad=0)                     # goal row
        img[::cell, :] = 200
        img[:, ::cell] = 200
        box = self._g.box[index].tolist()
        for (x, y) in box[:2]:
            if 0 <= y < g:
                fill(x, y, (170, 110, 5), pad=2)
        if 0 <= box[2][1] < g:
            fill(box[2][0], box[2][1], (110, 70, 5), w=2, pad=2)
        colors = [(30, 160, 60), (40, 60, 200), (200, 40, 40)]
        q = cell // 4
        for i, ((x, y), o) in enumerate(zip(self._g.pos[index].tolist(), self._g.ori[index].tolist())):
            fill(x, y, colors[i % 3], pad=cell // 4)
            dx, dy = _DIRS[o]
            cy, cx = (g - 1 - y) * cell + cell // 2 - dy * q, x * cell + cell // 2 + dx * q
            img[cy - 1:cy + 2, cx - 1:cx + 2] = 0                   # a dot on the facing side
        return img


def make_env(num_envs: int, seed: int, device: str, *, grid: int, n_agents: int, horizon: int, step_reward: float,
             bump_penalty: float, small_box_reward: float, big_box_reward: float, random_init: bool,
             success_prob: float) -> BoxPushingEnv:
    """Build a batch of ``num_envs`` Box Pushing games from config values (the options and their
    defaults: ``BoxPushingEnvConfig``; build through :func:`lightning_marl.envs.make_env`)."""
    env = BoxPushingEnv(num_envs=num_envs, grid=grid, n_agents=n_agents, horizon=horizon,
                        step_reward=step_reward, bump_penalty=bump_penalty,
                        small_box_reward=small_box_reward, big_box_reward=big_box_reward,
                        random_init=random_init, success_prob=success_prob, device=device)
    env.set_seed(seed)
    return env


@ENVS.register
@dataclasses.dataclass
class BoxPushingEnvConfig(EnvConfig):
    """Box Pushing, Xiao & Amato's primitive-action version (lightning_marl/envs/box_pushing.py)."""

    builds = staticmethod(make_env)
    text_frames = True
    gif_frame_ms = 400
    name: str = "box_pushing"
    grid: int = spec(4, "grid side (even: the big box spans two cells)", ge=4, le=30, even=True)
    n_agents: int = spec(2, "2, or 3 (the third starts below the big box's left half)", choices=(2, 3))
    horizon: int = spec(100, "time limit (truncation, not termination)", ge=1)
    step_reward: float = spec(-0.1, "team reward per step")
    bump_penalty: float = spec(-5.0, "per agent bumping into a wall, the big box alone or a box sideways")
    small_box_reward: float = spec(10.0, "a small box reaching the top row")
    big_box_reward: float = spec(100.0, "the big box reaching the top row")
    random_init: bool = spec(False, "agents anywhere below the boxes' row, random orientation")
    success_prob: float = spec(1.0, "each action succeeds with this probability (0.9: Seuken & Zilberstein)",
                               gt=0.0, le=1.0)


if __name__ == "__main__":  # python -m lightning_marl.envs.box_pushing: the optimal 4x4 play
    from lightning_marl.envs import make_env as make_any_env

    demo = make_any_env("box_pushing")
    td = demo.reset()
    print(demo.render())
    for joint in ([0, 0], [1, 2], [0, 0], [0, 0]):
        td.set(ACTION, torch.tensor([joint]))
        td = demo.step(td)["next"]
        print(f"actions {joint} -> reward {td['reward'].item():.1f} done {td['done'].item()}")
        print(demo.render())
