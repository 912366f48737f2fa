"""SMACLite (github.com/uoe-agents/smaclite) behind the TorchRL contract of :mod:`.contract`.

SMACLite re-implements the StarCraft Multi-Agent Challenge in Python/numpy (no StarCraft II).
It is not on the package index: install it from its repository *without* its dependencies
(it pins ``Rtree==1.0.0``, which has no Python 3.11 wheel), then the dependencies::

    pip install --no-deps git+https://github.com/uoe-agents/smaclite.git
    pip install "lightning_marl[smaclite]"   # gymnasium pygame "scikit-learn<1.9" "rtree>=1.1"

One :class:`SMACliteEnv` is one game (batch size ``[]``); :func:`make_env` stacks ``num_envs``
of them in a TorchRL ``ParallelEnv`` (one worker process per game) or ``SerialEnv``.

Keys (N agents, A actions = 6 + number of attack/heal targets):

==============================  ==========================================================
``("agents", "observation")``   ``[N, obs_dim]`` ``get_obs()`` (zeros for dead agents)
``("agents", "action_mask")``   ``[N, A]`` ``get_avail_actions()`` as bool (dead: no-op only)
``"state"``                     ``[state_dim]`` ``get_state()`` (includes the last actions)
``"reward"``                    ``[1]`` SMACLite's reward, already normalized as SMAC's
                                (``reward_scale_rate=20``): damage + 10 per kill + 200 for
                                the win, divided by ``max_reward / 20``, so that a
                                perfect episode returns 20 (regenerating shields and
                                enemy medivacs can push it slightly higher, as in SMAC)
``"battle_won"``                ``[1]`` float: 0 at reset, then the info flag ``battle_won``
``done/terminated/truncated``   terminated when either side is wiped out; at the map's
                                episode limit (SMAC's, table :data:`EPISODE_LIMITS`) the
                                game is truncated: ``terminated=False, truncated=True``
==============================  ==========================================================

Actions are passed to SMACLite as Python ints; an unavailable action makes SMACLite raise.
A finished game (terminated or truncated) must be reset before it is stepped again: this
wrapper raises if it is not (TorchRL's partial steps never do).

Randomness: unit placement is fixed per map; the game's RNG only shuffles the order in which
units act within a frame. Game ``i`` of :func:`make_env` is seeded ``seed + i``; the RNG runs
on across resets.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
from typing import Optional, Union

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv

from lightning_marl.config.schema import spec
from lightning_marl.envs.base import EnvConfig
from lightning_marl.envs.batching import SeededGameBatch, batch_games, numpy_rng_state, set_numpy_rng_state
from lightning_marl.envs.contract import ACTION, MASK, OBS, STATE, make_specs, reset_flags
from lightning_marl.errors import ConfigError
from lightning_marl.registry import ENVS

# SMAC's episode limits (oxwhirl/smac, smac/env/starcraft2/maps/smac_maps.py, "limit") for the 12
# maps SMACLite ships (smaclite.env.maps.MapPreset). SMACLite itself has no time limit.
EPISODE_LIMITS: dict[str, int] = {
    "10m_vs_11m": 150,
    "27m_vs_30m": 180,
    "2c_vs_64zg": 400,
    "2s3z": 120,
    "2s_vs_1sc": 300,
    "3s5z": 150,
    "3s5z_vs_3s6z": 170,
    "3s_vs_5z": 250,
    "MMM": 150,
    "MMM2": 180,
    "bane_vs_bane": 200,
    "corridor": 400,
}
STAT_KEYS = ("battle_won",)

INSTALL_HINT = (
    "SMACLite is not on the package index; install it from its repository without its dependencies "
    "(its Rtree==1.0.0 pin has no Python 3.11 wheel), then its dependencies:\n"
    "    pip install --no-deps git+https://github.com/uoe-agents/smaclite.git\n"
    "    pip install \"lightning_marl[smaclite]\"   # i.e. gymnasium pygame \"scikit-learn<1.9\" \"rtree>=1.1\""
)
CPP_RVO2_HINT = (
    "env.use_cpp_rvo2=true needs SMACLite's C++ collision solver, the `rvo2` module built from "
    "github.com/micadam/SMAClite-Python-RVO2 (needs CMake, Cython and a C++ compiler):\n"
    "    pip install cython cmake\n"
    "    pip install --no-build-isolation git+https://github.com/micadam/SMAClite-Python-RVO2.git\n"
    "or set env.use_cpp_rvo2=false (the numpy solver)."
)


# ----------------------------------------------------------------------------- package access

def _import_smaclite():
    """Import ``gymnasium`` and ``smaclite`` (which registers the ``smaclite/<map>-v0`` ids)."""
    try:
        gymnasium = importlib.import_module("gymnasium")
        importlib.import_module("smaclite")
    except ImportError as err:
        raise ImportError(f"env=smaclite needs the SMACLite package ({err}).\n{INSTALL_HINT}") from err
    return gymnasium


def map_names() -> tuple[str, ...]:
    """The maps SMACLite ships (its ``MapPreset`` enum), e.g. ``2s3z``, ``MMM2``, ``corridor``."""
    _import_smaclite()
    from smaclite.env.maps.map import MapPreset

    return tuple(sorted(preset.value.name for preset in MapPreset))


def check_map(map_name: str) -> None:
    allowed = map_names()
    if map_name not in allowed:
        raise ConfigError(f"env.map={map_name!r} is not a SMACLite map; allowed: {', '.join(allowed)} "
                          "(MMM and MMM2 are upper case)")


def check_cpp_rvo2() -> None:
    """Raise an ImportError with build instructions unless SMACLite's C++ ``rvo2`` module is importable."""
    try:
        rvo2 = importlib.import_module("rvo2")
    except ImportError as err:
        raise ImportError(f"{CPP_RVO2_HINT}\n({err})") from err
    simulator = getattr(rvo2, "PyRVOSimulator", None)
    if simulator is None or not all(hasattr(simulator, m) for m in ("removeAgent", "resetAgents")):
        raise ImportError("the installed `rvo2` module is not SMACLite's fork (it lacks "
                          f"PyRVOSimulator.removeAgent/resetAgents).\n{CPP_RVO2_HINT}")


def episode_limit_for(map_name: str, episode_limit: Optional[int]) -> int:
    """``episode_limit`` if given, else SMAC's limit for ``map_name``."""
    if episode_limit is not None:
        return episode_limit
    if map_name not in EPISODE_LIMITS:
        raise ConfigError(f"env.map={map_name!r} has no known SMAC episode limit; set env.episode_limit "
                          f"(known: {', '.join(f'{k} {v}' for k, v in EPISODE_LIMITS.items())})")
    return EPISODE_LIMITS[map_name]


def check_config(map, use_cpp_rvo2, episode_limit) -> None:
    """The package is installed, the map exists and has an episode limit, the C++ solver if asked for."""
    check_map(map)
    episode_limit_for(map, episode_limit)
    if use_cpp_rvo2:
        check_cpp_rvo2()


# ----------------------------------------------------------------------------- the env

class SMACliteEnv(EnvBase):
    """One SMACLite game (batch size ``[]``); see the module docstring for the keys."""

    batch_locked = True

    def __init__(self, map: str, seed: Optional[int], device: Union[str, torch.device], use_cpp_rvo2: bool,
                 episode_limit: Optional[int], game_index: int = 0):
        gymnasium = _import_smaclite()
        check_map(map)
        limit = episode_limit_for(map, episode_limit)
        if use_cpp_rvo2:
            check_cpp_rvo2()
        super().__init__(batch_size=torch.Size([]), device=device)
        # The solver prints which port it uses: keep worker logs clean.
        with contextlib.redirect_stdout(io.StringIO()):
            wrapped = gymnasium.make(f"smaclite/{map}-v0", seed=seed, use_cpp_rvo2=use_cpp_rvo2,
                                     disable_env_checker=True)
        self._game = wrapped.unwrapped  # no wrapper needed: we call reset/step in order ourselves
        self.map = map
        self.n_agents = int(self._game.n_agents)
        self.n_actions = int(self._game.n_actions)
        self.n_enemies = int(self._game.n_enemies)
        self.obs_dim = int(self._game.obs_size)
        self.state_dim = int(self._game.state_size)
        self.episode_limit = limit
        self.use_cpp_rvo2 = use_cpp_rvo2
        self.stat_keys: tuple[str, ...] = STAT_KEYS
        make_specs(self, n_agents=self.n_agents, n_actions=self.n_actions, obs_dim=self.obs_dim,
                   state_dim=self.state_dim, stat_keys=STAT_KEYS)
        self._t = 0
        self._finished = True  # reset before the first step
        self._seed = seed
        self.game_index = game_index  # position in a batch (make_env), for set_batch_rng_state

    def _observe(self, obs) -> dict:
        dev = self.device
        mask = torch.as_tensor(np.stack(self._game.get_avail_actions()) > 0, device=dev)
        self.full_action_spec[ACTION].update_mask(mask)  # so that rand_action() respects it
        agents = TensorDict(
            {
                OBS[1]: torch.as_tensor(np.stack(obs), dtype=torch.float32, device=dev),
                MASK[1]: mask,
            },
            batch_size=[self.n_agents],
            device=dev,
        )
        return {OBS[0]: agents, STATE: torch.as_tensor(self._game.get_state(), dtype=torch.float32, device=dev)}

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs) -> TensorDict:
        obs, _ = self._game.reset()
        self._t = 0
        self._finished = False
        out = self._observe(obs)
        out.update({"battle_won": torch.zeros(1, device=self.device), **reset_flags((1,), self.device)})
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        if self._finished:
            raise RuntimeError(f"SMACLite {self.map}: step() on a finished game (t={self._t}); reset it first")
        actions = [int(a) for a in tensordict.get(ACTION).reshape(-1).tolist()]
        obs, reward, terminated, _, info = self._game.step(actions)
        self._t += 1
        terminated = bool(terminated)
        truncated = not terminated and self._t >= self.episode_limit  # a time-out is not a terminal
        self._finished = terminated or truncated
        out = self._observe(obs)
        dev = self.device
        out.update({
            "reward": torch.tensor([float(reward)], dtype=torch.float32, device=dev),
            "battle_won": torch.tensor([float(bool(info.get("battle_won", False)))], device=dev),
            "done": torch.tensor([self._finished], device=dev),
            "terminated": torch.tensor([terminated], device=dev),
            "truncated": torch.tensor([truncated], device=dev),
        })
        return TensorDict(out, batch_size=self.batch_size, device=dev)

    def _set_seed(self, seed: Optional[int]) -> None:
        """Reseed the game's RNG (it orders the units' actions within a frame)."""
        if seed is not None:
            self._game.seed(int(seed))
        self._seed = seed

    def rng_state(self) -> torch.Tensor:
        """The game's RNG state (numpy bit generator state as JSON text in a uint8 tensor: data, never
        code, so a checkpoint loads with weights_only=True)."""
        return numpy_rng_state(self._game.np_random)

    get_rng_state = game_rng_state = rng_state

    def set_rng_state(self, state: torch.Tensor) -> None:
        set_numpy_rng_state(self._game.np_random, state)

    def set_batch_rng_state(self, states) -> None:
        """Take this game's entry (``game_index``) of a batch's states (see :class:`SMACliteSerialEnv`)."""
        self.set_rng_state(states[self.game_index])

    def game_render_rgb(self) -> np.ndarray:
        """The battle drawn by SMACLite's own renderer (pygame, off screen: no display needed):
        terrain, units as circles filled to their health, attack lines."""
        import os

        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        self._game.render_mode = "rgb_array"
        return np.array(self._game.render(), dtype=np.uint8)  # a copy: pygame's array is a view of its surface

    def close(self, *, raise_if_closed: bool = True):
        self._game.close()
        return super().close(raise_if_closed=raise_if_closed)


# ----------------------------------------------------------------------------- factory

class _SMACliteBatch(SeededGameBatch):
    """What the batched envs answer in this process (see :class:`SeededGameBatch`)."""

    def render_rgb(self, index: int = 0) -> np.ndarray:
        """Game ``index`` drawn by SMACLite's renderer, ``[H, W, 3]`` uint8."""
        return self.game_render_rgb()[index]


class SMACliteParallelEnv(_SMACliteBatch, ParallelEnv):
    """A ``ParallelEnv`` of SMACLite games (one worker process each)."""


class SMACliteSerialEnv(_SMACliteBatch, SerialEnv):
    """A ``SerialEnv`` of SMACLite games (stepped in turn in this process)."""


def _make_game(map: str, seed: int, device: str, use_cpp_rvo2: bool, episode_limit: Optional[int],
               game_index: int = 0) -> SMACliteEnv:
    return SMACliteEnv(map=map, seed=seed, device=device, use_cpp_rvo2=use_cpp_rvo2, episode_limit=episode_limit,
                       game_index=game_index)


def make_env(num_envs: int, seed: int, device: str, *, map: str, use_cpp_rvo2: bool, episode_limit: Optional[int],
             parallel: Union[bool, str], start_method: Optional[str]) -> Union[ParallelEnv, SerialEnv]:
    """``num_envs`` SMACLite games (game ``i`` seeded ``seed + i``) batched to ``[num_envs]``: a
    ``ParallelEnv`` (one worker process per game) when ``parallel`` and ``num_envs > 1``, else a
    ``SerialEnv`` (all games in this process). ``parallel="auto"``: workers only when this process
    may use at least ``num_envs`` CPU cores.

    The workers exchange data through pipes (``use_buffers=False``): the parent then blocks until
    they are done, whereas with TorchRL's shared buffers it spin-polls them and burns a core that
    the games need on a small machine. A step's data is a few KB, next to ~10-30 ms of game time.

    ``episode_limit``: None = SMAC's limit of the map (:data:`EPISODE_LIMITS`); reaching it
    truncates the game. ``use_cpp_rvo2``: SMACLite's C++ collision solver (a separate build,
    see :data:`CPP_RVO2_HINT`). ``start_method``: the workers' multiprocessing start method
    (None: TorchRL's default, spawn).

    The batch exposes ``n_agents``, ``n_actions``, ``n_enemies``, ``episode_limit``, ``stat_keys``,
    ``obs_dim``, ``state_dim`` and ``map``. Call ``env.close()`` to stop the workers.
    """
    # Validate (and read the sizes) in this process, so that a bad value raises here, not in a worker.
    probe = SMACliteEnv(map=map, seed=seed, device=device, use_cpp_rvo2=use_cpp_rvo2, episode_limit=episode_limit)
    probe.close()
    factories = [functools.partial(_make_game, map, seed + i, str(device), use_cpp_rvo2, episode_limit, i)
                 for i in range(num_envs)]
    env = batch_games(factories, probe, ("n_agents", "n_actions", "n_enemies", "episode_limit", "stat_keys",
                                         "obs_dim", "state_dim", "map"),
                      parallel=parallel, device=device, parallel_cls=SMACliteParallelEnv,
                      serial_cls=SMACliteSerialEnv, start_method=start_method, use_buffers=False)
    env.start()  # build the games now: errors surface here, and rng_state() works before any rollout
    return env


@ENVS.register
@dataclasses.dataclass
class SMACLiteEnvConfig(EnvConfig):
    """SMACLite (github.com/uoe-agents/smaclite; lightning_marl/envs/smaclite.py)."""

    builds = staticmethod(make_env)
    gif_frame_ms = 250
    worker_processes = True
    name: str = "smaclite"
    map: str = spec("2s3z", "a SMACLite map (MMM and MMM2 upper case)")
    use_cpp_rvo2: bool = spec(False, "SMACLite's optional C++ collision solver (docs/smac.md)")
    episode_limit: Optional[int] = spec(None, "null = SMAC's limit of the map", ge=1)

    def check(self) -> None:
        check_config(**self.options())

