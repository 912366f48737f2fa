"""Overcooked-AI (``overcooked-ai`` 1.1.0) behind the TorchRL contract of :mod:`.contract`.

One :class:`OvercookedEnv` is one two-chef game (batch size ``[]``); :func:`make_env` stacks
``num_envs`` of them in a TorchRL ``ParallelEnv`` (one process per game) or ``SerialEnv``.

Keys (N = 2 agents, A = 6 actions ``Action.INDEX_TO_ACTION``: 0 north/up, 1 south/down,
2 east/right, 3 west/left, 4 stay, 5 interact; all always available):

==============================  ==========================================================
``("agents", "observation")``   ``[2, 96]`` ``featurize_state`` (``obs=featurized``), or
                                ``[2, 26*W*H]`` ``lossless_state_encoding`` (``obs=lossless``)
                                transposed to channels first and flattened: unflatten
                                with ``env.obs_grid_shape == (26, W, H)`` for a CNN torso
``("agents", "action_mask")``   ``[2, 6]`` all True
``"state"``                     ``state=concat``: both observations concatenated
                                (``[2 * obs_dim]``); ``state=lossless_global``: the lossless
                                grid seen from chef 0 (it holds both chefs), ``[26*W*H]``
``"reward"``                    ``[1]`` sparse reward (20 per onion soup delivered)
``"shaped_reward"``             ``[1]`` the package's shaping (placement in pot 3, useful dish
                                pickup 3, soup pickup 5), *unscaled*: the learner adds
                                ``factor * shaped_reward`` with an annealed factor
``"soups"``, ``"sparse_return"``,
``"shaped_return"``,
``"deliveries"``                ``[1]`` running totals over the episode (0 at reset): soups
                                that scored (on the recipe), sparse and shaped return, and
                                all soups delivered (a 1-onion soup scores 0 but earns the
                                dish and soup-pickup shaping: ``deliveries > soups`` shows a
                                policy gaming the shaping)
``done/terminated/truncated``   the game never terminates; at ``horizon`` steps it is
                                truncated (``terminated=False, truncated=True, done=True``)
==============================  ==========================================================

Randomness: none. The game starts from the layout's standard state and is deterministic given
the actions, so seeds only label the games (``seed + i`` for game ``i``).

Planner cache: ``featurize_state`` needs a "MediumLevelActionManager", but only uses its
``motion_planner.min_cost_to_feature``. The package builds a full manager (slow) and pickles it
into its own ``data/planners`` folder (site-packages: possibly read-only, written without a
lock or atomic rename, so concurrent workers can read a torn pickle). We never use that cache:
each process builds the ``MotionPlanner`` (counter goals ``[]``, what the package's default
``NO_COUNTERS_PARAMS`` manager holds) in memory, once per layout (0.02-0.3 s on the classic
layouts, 2 s on the largest, ``corridor``). The package's ``PLANNERS_DIR`` is additionally
redirected to a writable cache folder (``$LIGHTNING_MARL_CACHE/overcooked`` or
``~/.cache/lightning_marl/overcooked``) so that other package code (its agents,
``OvercookedEnv.mlam``) never writes into site-packages.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv
from torchrl.envs.utils import step_mdp

from lightning_marl.config.schema import StrEnum, spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import GameBatch, batch_games
from lightning_marl.envs.contract import ACTION, MASK, OBS, SHAPED_REWARD, STATE, make_specs
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

CLASSIC_LAYOUTS = ("cramped_room", "asymmetric_advantages", "coordination_ring", "forced_coordination",
                   "counter_circuit_o_1order")
STAT_KEYS = ("soups", "sparse_return", "shaped_return", "deliveries")
N_AGENTS = 2
N_ACTIONS = 6
LOSSLESS_CHANNELS = 26
OBS_MODES = ("featurized", "lossless")
STATE_MODES = ("concat", "lossless_global")


# ----------------------------------------------------------------------------- package access

def cache_dir() -> Path:
    """Writable folder for Overcooked artefacts: ``$LIGHTNING_MARL_CACHE/overcooked`` or
    ``~/.cache/lightning_marl/overcooked``."""
    root = os.environ.get("LIGHTNING_MARL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lightning_marl")
    return Path(root) / "overcooked"


@functools.lru_cache(maxsize=None)
def _package():
    """Import ``overcooked_ai_py`` (quietly: it imports the unmaintained ``gym``, which prints a
    banner) and point its planner cache away from site-packages."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not hasattr(np, "Inf"):  # overcooked-ai 1.1.0 uses np.Inf, removed in numpy 2
                np.Inf = np.inf
            import overcooked_ai_py  # noqa: F401
            import overcooked_ai_py.data.planners as data_planners
            import overcooked_ai_py.planning.planners as planners
            import overcooked_ai_py.static as static
            from overcooked_ai_py.mdp import overcooked_mdp
            from overcooked_ai_py.mdp.actions import Action
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("env=overcooked needs the optional dependency overcooked-ai==1.1.0 (with numpy<2 and "
                          "scipy): pip install 'lightning_marl[overcooked]'") from err
    planners_dir = cache_dir() / "planners"
    try:
        planners_dir.mkdir(parents=True, exist_ok=True)
        for module in (static, data_planners, planners):
            module.PLANNERS_DIR = str(planners_dir)
    except OSError:  # no writable home: we never need the package's cache ourselves
        pass
    return overcooked_mdp, planners, static, Action


@functools.lru_cache(maxsize=None)
def layout_names() -> tuple[str, ...]:
    """The package's two-chef layouts (the files of its ``data/layouts`` folder)."""
    _, _, static, _ = _package()
    from overcooked_ai_py.utils import read_layout_dict

    names = []
    for file in sorted(os.listdir(static.LAYOUTS_DIR)):
        if not file.endswith(".layout"):
            continue
        name = file[: -len(".layout")]
        grid = read_layout_dict(name)["grid"]
        if sum(ch.isdigit() for ch in grid) == N_AGENTS:  # chefs are the digits 1-9 of the grid
            names.append(name)
    return tuple(names)


def check_layout(layout: str) -> None:
    allowed = layout_names()
    if layout not in allowed:
        raise ConfigError(f"env.layout={layout!r} is not an Overcooked layout; allowed: {', '.join(allowed)} "
                          "(counter_circuit_o_1order is the classic counter circuit)")


def check_config(layout, horizon, obs, state) -> None:
    """The layout must be one the installed package has."""
    check_layout(layout)


_PLANNERS: dict = {}


class _PlannerView:
    """Duck-typed MediumLevelActionManager: all ``featurize_state`` reads is ``.motion_planner``."""

    def __init__(self, motion_planner):
        self.motion_planner = motion_planner


def motion_planner_for(mdp) -> _PlannerView:
    """The in-memory motion planner of ``mdp``, built once per process and layout."""
    key = (mdp.layout_name, str(mdp.terrain_mtx), tuple(mdp.start_player_positions))
    if key not in _PLANNERS:
        _, planners, _, _ = _package()
        with contextlib.redirect_stdout(io.StringIO()):
            _PLANNERS[key] = _PlannerView(planners.MotionPlanner(mdp, counter_goals=[]))
    return _PLANNERS[key]


# ----------------------------------------------------------------------------- the env

class OvercookedEnv(EnvBase):
    """One two-chef Overcooked game (batch size ``[]``); see the module docstring for the keys."""

    batch_locked = True

    def __init__(self, layout: str, horizon: int, obs: str, state: str, seed: Optional[int] = None,
                 device: Union[str, torch.device] = "cpu"):
        # the options' ranges are the config's (OvercookedEnvConfig); the layout needs the package
        assert horizon >= 1 and obs in OBS_MODES and state in STATE_MODES, (horizon, obs, state)
        check_layout(layout)
        super().__init__(batch_size=torch.Size([]), device=device)
        overcooked_mdp, _, _, Action = _package()
        self._actions = list(Action.INDEX_TO_ACTION)
        assert len(self._actions) == N_ACTIONS
        self.layout = layout
        self.horizon = horizon
        self.obs_mode = obs
        self.state_mode = state
        self.mdp = overcooked_mdp.OvercookedGridworld.from_layout_name(layout)
        self._planner = motion_planner_for(self.mdp) if obs == "featurized" else None
        width, height = self.mdp.shape
        self.obs_grid_shape = (LOSSLESS_CHANNELS, width, height)  # (C, W, H) of a lossless observation
        lossless_dim = LOSSLESS_CHANNELS * width * height
        if obs == "featurized":  # 96 for two chefs and two pots (num_pots=2)
            start = self.mdp.get_standard_start_state()
            self.obs_dim = int(len(self.mdp.featurize_state(start, self._planner)[0]))
        else:
            self.obs_dim = lossless_dim
        self.state_dim = N_AGENTS * self.obs_dim if state == "concat" else lossless_dim
        self.n_agents = N_AGENTS
        self.n_actions = N_ACTIONS
        self.episode_limit = horizon
        self.stat_keys: tuple[str, ...] = STAT_KEYS
        make_specs(self, n_agents=N_AGENTS, n_actions=N_ACTIONS, obs_dim=self.obs_dim, state_dim=self.state_dim,
                   stat_keys=STAT_KEYS, shaped_reward=True)
        self._mask = torch.ones(N_AGENTS, N_ACTIONS, dtype=torch.bool, device=self.device)
        self.state = None  # the current OvercookedState
        self._totals = np.zeros(len(STAT_KEYS))  # soups, sparse return, shaped return, deliveries
        self._seed = seed

    # -- encodings
    def _lossless(self, game_state) -> np.ndarray:
        grids = self.mdp.lossless_state_encoding(game_state, horizon=self.horizon)  # 2 x (W, H, 26)
        return np.stack([np.transpose(g, (2, 0, 1)).reshape(-1) for g in grids])  # 2 x 26*W*H, channels first

    def _observe(self) -> dict:
        lossless = None
        if self.obs_mode == "featurized":
            obs = np.stack(self.mdp.featurize_state(self.state, self._planner))
        else:
            obs = lossless = self._lossless(self.state)
        if self.state_mode == "concat":
            glob = obs.reshape(-1)
        else:
            glob = (lossless if lossless is not None else self._lossless(self.state))[0]
        dev = self.device
        agents = TensorDict({OBS[1]: torch.as_tensor(obs, dtype=torch.float32, device=dev),
                             MASK[1]: self._mask.clone()},
                            batch_size=[N_AGENTS], device=dev)  # batch [N], as the spec's "agents" Composite
        out = {OBS[0]: agents, STATE: torch.as_tensor(glob, dtype=torch.float32, device=dev)}
        for key, value in zip(STAT_KEYS, self._totals):
            out[key] = torch.full((1,), float(value), dtype=torch.float32, device=dev)
        return out

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        self.state = self.mdp.get_standard_start_state().deepcopy()
        self._totals[:] = 0.0
        out = self._observe()
        false = torch.zeros(1, dtype=torch.bool, device=self.device)
        out.update({SHAPED_REWARD: torch.zeros(1, device=self.device), "done": false,
                    "terminated": false.clone(), "truncated": false.clone()})
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        indices = tensordict.get(ACTION).reshape(-1).tolist()
        joint_action = tuple(self._actions[int(i)] for i in indices)
        self.state, infos = self.mdp.get_state_transition(self.state, joint_action)
        sparse = float(sum(infos["sparse_reward_by_agent"]))
        shaped = float(sum(infos["shaped_reward_by_agent"]))
        delivered = infos["event_infos"]["soup_delivery"]  # per chef; a soup off the recipe scores 0
        scored = sum(bool(d) and r > 0 for d, r in zip(delivered, infos["sparse_reward_by_agent"]))
        self._totals += (scored, sparse, shaped, sum(delivered))
        truncated = self.state.timestep >= self.horizon
        out = self._observe()
        dev = self.device
        out.update({
            "reward": torch.tensor([sparse], dtype=torch.float32, device=dev),
            SHAPED_REWARD: torch.tensor([shaped], dtype=torch.float32, device=dev),
            "done": torch.tensor([truncated], device=dev),
            "terminated": torch.zeros(1, dtype=torch.bool, device=dev),
            "truncated": torch.tensor([truncated], device=dev),
        })
        return TensorDict(out, batch_size=self.batch_size, device=dev)

    def _set_seed(self, seed: Optional[int]) -> None:
        """The game has no randomness (standard start state, deterministic dynamics): the seed is
        only recorded."""
        self._seed = seed

    def rng_state(self) -> torch.Tensor:
        """The game has no random state: an empty tensor (for checkpointing code that asks)."""
        return torch.empty(0)

    get_rng_state = rng_state

    def set_rng_state(self, state) -> None:
        return None

    # -- rendering
    def game_text(self) -> str:
        """:meth:`render`, under the name a batch of games forwards to each game."""
        return self.render()

    def render(self, mode: str = "text") -> str:
        """The current game as text (``mdp.state_string``): ``X`` counter, ``P`` pot, ``O`` onion,
        ``T`` tomato, ``D`` dish dispensers, ``S`` serving; a chef is an arrow (its facing) + its
        index (+ held object)."""
        if self.state is None:
            raise RuntimeError("reset the environment before rendering it")
        soups, sparse, shaped, _ = self._totals
        return (f"{self.layout} t={self.state.timestep}/{self.horizon} soups={int(soups)} "
                f"sparse_return={sparse:g} shaped_return={shaped:g}\n" + self.mdp.state_string(self.state))


def render_episode(layout: str, actions: Union[Sequence[Sequence[int]], Callable[[TensorDictBase], TensorDictBase]],
                   path: Union[str, os.PathLike], horizon: int, obs: str, state: str, max_steps: Optional[int] = None,
                   fmt: str = "auto") -> dict:
    """Play one game and save it.

    ``actions`` is either a sequence of joint action indices ``[[a_0, a_1], ...]`` or a policy:
    a callable mapping the env's tensordict (batch size ``[]``, with ``("agents", "observation")``
    and ``("agents", "action_mask")``) to one holding ``("agents", "action")``, e.g. a greedy
    TorchRL policy module. The episode ends at the horizon, after ``max_steps`` or at the end of
    the action sequence.

    ``fmt``: ``"gif"`` (the package's pygame visualizer, headless with ``SDL_VIDEODRIVER=dummy``),
    ``"txt"`` (text frames), or ``"auto"`` (from the suffix of ``path``; a GIF falls back to text
    frames next to it if pygame cannot render). Returns ``{"path", "steps", "soups",
    "sparse_return", "shaped_return"}``.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = "gif" if path.suffix.lower() in (".gif", ".png") else "txt"
    if fmt not in ("gif", "txt"):
        raise ConfigError(f"fmt={fmt} is out of range; allowed: auto, gif or txt")
    env = OvercookedEnv(layout=layout, horizon=horizon, obs=obs, state=state)
    td = env.reset()
    states, texts = [env.state], [env.render()]
    limit = horizon if max_steps is None else min(horizon, max_steps)
    scripted = not callable(actions)
    steps = 0
    while steps < limit and (not scripted or steps < len(actions)):
        if scripted:
            td.set(ACTION, torch.as_tensor(list(actions[steps]), dtype=torch.int64, device=env.device))
        else:
            with torch.no_grad():
                td = actions(td)
        td = env.step(td)
        steps += 1
        states.append(env.state)
        texts.append(env.render())
        done = bool(td.get(("next", "done")).item())
        td = step_mdp(td)
        if done:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    written = None
    if fmt == "gif":
        try:
            written = _save_gif(env, states, path)
        except Exception as err:  # headless pygame, fonts, ...: fall back to text frames
            warnings.warn(f"Overcooked GIF rendering failed ({err!r}); writing text frames instead", stacklevel=2)
            path = path.with_suffix(".txt")
    if written is None:
        path.write_text("\n".join(f"--- step {i}\n{t}" for i, t in enumerate(texts)))
        written = path
    soups, sparse, shaped, _ = env._totals
    return {"path": str(written), "steps": steps, "soups": int(soups), "sparse_return": float(sparse),
            "shaped_return": float(shaped)}


def _save_gif(env: OvercookedEnv, states: list, path: Path) -> Path:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame
    from overcooked_ai_py.visualization.state_visualizer import StateVisualizer
    from PIL import Image

    visualizer = StateVisualizer()
    frames = []
    for game_state in states:
        surface = visualizer.render_state(game_state, env.mdp.terrain_mtx,
                                          hud_data={"timestep": game_state.timestep})
        raw = pygame.image.tostring(surface, "RGB")
        frames.append(Image.frombytes("RGB", surface.get_size(), raw))
    if path.suffix.lower() == ".png":  # one PNG per frame: <stem>_0000.png, ...
        for i, frame in enumerate(frames):
            frame.save(path.with_name(f"{path.stem}_{i:04d}.png"))
        return path.with_name(f"{path.stem}_0000.png")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=150, loop=0)
    return path


# ----------------------------------------------------------------------------- factory

class _OvercookedBatch(GameBatch):
    def render(self, index: int = 0) -> str:
        """Game ``index`` as text (asked of the games by a name the batch lacks, so that TorchRL
        forwards it: each game answers with its ``render()``)."""
        return self.game_text()[index]


class OvercookedParallelEnv(_OvercookedBatch, ParallelEnv):
    """A ``ParallelEnv`` of Overcooked games (one worker process each)."""


class OvercookedSerialEnv(_OvercookedBatch, SerialEnv):
    """A ``SerialEnv`` of Overcooked games (stepped in turn in this process)."""


def _make_game(layout: str, horizon: int, obs: str, state: str, seed: int, device: str) -> OvercookedEnv:
    return OvercookedEnv(layout=layout, horizon=horizon, obs=obs, state=state, seed=seed, device=device)


def make_env(num_envs: int, seed: int, device: str, *, layout: str, horizon: int, obs: str, state: str,
             parallel: Union[bool, str], start_method: Optional[str]) -> Union[ParallelEnv, SerialEnv]:
    """``num_envs`` games (game ``i`` seeded ``seed + i``) batched to ``[num_envs]``: a ``ParallelEnv``
    (one worker process per game) when ``parallel`` and ``num_envs > 1``, else a ``SerialEnv``.
    ``parallel="auto"``: a ``ParallelEnv`` only when this process may use more than ``num_envs``
    CPU cores. TorchRL's parent process spin-polls its workers, so on fewer cores the workers
    fight it (and each other) and a ``ParallelEnv`` is slower than stepping the games in turn
    (2 cores, 2 games: ~130 vs ~300 env steps/s in total).

    The batch exposes ``n_agents``, ``n_actions``, ``episode_limit``, ``stat_keys``, ``obs_dim``,
    ``state_dim``, ``obs_grid_shape`` and ``layout``. Call ``env.close()`` to stop the workers.
    ``start_method``: the workers' multiprocessing start method (None: TorchRL's default, "spawn",
    unless the program set one; each spawned worker imports torch and builds its planner, ~2-4 s).
    """
    # Validate in this process, so that a bad value raises a ConfigError here, not in a worker.
    probe = OvercookedEnv(layout=layout, horizon=horizon, obs=obs, state=state, seed=seed, device=device)
    factories = [functools.partial(_make_game, layout, horizon, obs, state, seed + i, str(device))
                 for i in range(num_envs)]
    # the games have no randomness: GameBatch's empty RNG state is all a checkpoint needs
    return batch_games(factories, probe, ("n_agents", "n_actions", "episode_limit", "stat_keys", "obs_dim",
                                          "state_dim", "obs_grid_shape", "layout", "horizon"),
                       parallel=parallel, device=device, parallel_cls=OvercookedParallelEnv,
                       serial_cls=OvercookedSerialEnv, start_method=start_method, spare_cores=1)


class OvercookedObs(StrEnum):
    featurized = "featurized"
    lossless = "lossless"


class OvercookedState(StrEnum):
    concat = "concat"
    lossless_global = "lossless_global"


@ENVS.register
@dataclasses.dataclass
class OvercookedEnvConfig(EnvConfig):
    """Overcooked-AI 1.1.0, two chefs (lightning_marl/envs/overcooked.py)."""

    builds = staticmethod(make_env)
    text_frames = True
    gif_by_package = True
    shaped_reward = True
    worker_processes = True
    name: str = "overcooked"
    layout: str = spec("cramped_room", "a two-chef layout of the package (counter_circuit_o_1order is the "
                                       "classic counter circuit)")
    horizon: int = spec(400, "time limit (truncation, not termination)", ge=1)
    obs: OvercookedObs = spec(OvercookedObs.featurized, "featurized (96 per chef) or lossless (26*W*H grids)")
    state: OvercookedState = spec(OvercookedState.concat, "concat (both observations) or lossless_global")

    def check(self) -> None:
        check_config(**self.options())

    def grid_observations(self) -> bool:
        return self.obs == OvercookedObs.lossless

