"""Greedy evaluation of a checkpoint: test return and win rate (where the env reports one) with 95%
confidence intervals, and optionally a rendering of one greedy episode (text frames, or a GIF of a
Box Pushing, SMACLite or Overcooked game).

    lightning-marl-evaluate outputs/.../checkpoints/last.ckpt --episodes 100 [--render] [--seed 123]
    lightning-marl-evaluate outputs/.../checkpoints/last.ckpt --gif episode.gif  # Box Pushing, SMACLite, Overcooked
    lightning-marl-evaluate outputs/.../checkpoints/last.ckpt --env random_init=false   # other env options
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw
from torchrl.envs.utils import step_mdp

from lightning_marl.arguments import OneLineParser, at_least, fail
from lightning_marl.checkpoint_files import load_checkpoint
from lightning_marl.config.migrate import migrate_env
from lightning_marl.config.schema import EnvWorkers, EvalConfig
from lightning_marl.config.validate import check_env
from lightning_marl.data.collector import collect_episodes
from lightning_marl.data.environments import describe_env
from lightning_marl.envs import EnvConfig, env_config, make_env
from lightning_marl.envs.contract import ACTION
from lightning_marl.errors import ConfigError
from lightning_marl.models.policy import HIDDEN, PREV_ACTION, RecurrentPolicy
from lightning_marl.module import MARLModule
from lightning_marl.registry import ENVS
from lightning_marl.stats import mean_ci

Loaded = tuple[MARLModule, EnvConfig, int]  # the agent and mixers, the env config, the run's seed
CAPTION_PX, MIN_GIF_PX = 16, 256


def load(ckpt: str | Path, env_overrides: Sequence[str] = ()) -> Loaded:
    """The checkpoint's module, env config and seed (loaded safely, memory-mapped: a stored replay
    is not read). ``env_overrides``: ``key=value`` (YAML values) replacing options of the run's env
    config; options that change the game's sizes (agents, actions, observations, state) are refused."""
    state = load_checkpoint(ckpt)
    module = MARLModule.from_saved(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"])
    data = state["MARLDataModule"]
    env_cfg = migrate_env(data["env"])
    options = [f.name for f in dataclasses.fields(ENVS.config(env_cfg["name"])) if f.name != "name"]
    for item in env_overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ConfigError(f"--env {item!r}: not KEY=VALUE with an option of env {env_cfg['name']!r}; "
                              f"allowed keys: {', '.join(options)}")
        env_cfg[key] = yaml.safe_load(value)
    typed = env_config(env_cfg)
    if env_overrides:
        check_env(typed)
        probe = make_env(typed, 1, 0, workers=EnvWorkers.in_process)
        info = describe_env(probe)
        probe.close()
        changed = [f"{k} {module.env_info[k]} -> {info[k]}" for k in ("n_agents", "n_actions", "obs_dim", "state_dim")
                   if info[k] != module.env_info[k]]
        if changed:
            raise ConfigError(f"--env {' '.join(env_overrides)} changes the game the agent was trained on "
                              f"({', '.join(changed)}); allowed: options that keep the numbers of agents and "
                              "actions and the sizes of observations and state")
    return module.eval(), typed, int(data["seed"])


@torch.no_grad()
def evaluate(loaded: Loaded, episodes: int = EvalConfig.episodes, num_envs: int = EvalConfig.num_envs,
             seed: int | None = None) -> dict:
    """Greedy episodes on fresh envs (seeded ``seed``, default: the run's seed + 1e6)."""
    module, env_cfg, run_seed = loaded
    env = make_env(env_cfg, min(num_envs, episodes), run_seed + 1_000_000 if seed is None else seed,
                   workers=EnvWorkers.in_process)
    per_episode: dict[str, list] = {}
    actor = RecurrentPolicy(module.agent, 0.0, torch.device("cpu"), require_finite=True)
    while len(per_episode.get("return", [])) < episodes:
        _, stats = collect_episodes(env, actor, module.env_info["episode_limit"])
        for key, value in stats.items():
            per_episode.setdefault(key, []).extend(value.tolist())
    env.close()
    result = {"episodes": episodes}
    for key, values in per_episode.items():
        mean, half = mean_ci(values[:episodes])
        result[key] = {"mean": mean, "ci95": half}
    return result


@torch.no_grad()
def play_episode(loaded: Loaded, seed: int, draw: Callable[[Any, dict], Any]) -> tuple[list, dict]:
    """One greedy episode of the checkpoint's policy on one game seeded ``seed``; ``draw(env, step)``
    makes a frame after the reset and after every step (``step``: ``t``, the joint ``actions``, the
    ``reward`` and the ``return`` so far). Returns the frames and ``{"steps", "return"}``."""
    module, env_cfg, _ = loaded
    env = make_env(env_cfg, 1, seed, workers=EnvWorkers.in_process)
    try:
        actor = RecurrentPolicy(module.agent, 0.0, torch.device("cpu"))
        td = env.reset()
        step = {"t": 0, "actions": None, "reward": 0.0, "return": 0.0}
        frames = [draw(env, step)]
        for t in range(module.env_info["episode_limit"]):
            td = env.step(actor(td))
            reward = float(td["next", "reward"][0])
            step = {"t": t + 1, "actions": td[ACTION][0].tolist(), "reward": reward, "return": step["return"] + reward}
            frames.append(draw(env, step))
            if bool(td["next", "done"][0]):
                break
            td = step_mdp(td)
    finally:
        env.close()
    return frames, {"steps": step["t"], "return": round(step["return"], 4)}


def render_episode(loaded: Loaded, seed: int = 0) -> list[str]:
    """Text frames of one greedy episode, for envs that can render a game (``env.render(index)``)."""
    _, env_cfg, _ = loaded
    if not env_cfg.text_frames:
        allowed = [name for name in ENVS.names() if ENVS.config(name).text_frames]
        raise ConfigError(f"--render: env {env_cfg.name!r} has no text rendering; allowed: {', '.join(allowed)}")

    def text(env, step: dict) -> str:
        if step["actions"] is None:
            return env.render(0)
        return f"t={step['t']} actions={step['actions']} reward={step['reward']:.1f}\n" + env.render(0)

    return play_episode(loaded, seed, text)[0]


def check_gif(env_cfg: EnvConfig) -> None:
    if env_cfg.gif_frame_ms is None and not env_cfg.gif_by_package:
        allowed = [name for name in ENVS.names() if ENVS.config(name).gif_frame_ms or ENVS.config(name).gif_by_package]
        raise ConfigError(f"--gif: env {env_cfg.name!r} has no drawing (a one-step game); allowed: checkpoints of "
                          f"{', '.join(allowed)} (use --render for text frames)")


def annotate(picture: np.ndarray, step: dict) -> Image.Image:
    """The env's picture under a caption line: step, joint action, reward and return so far."""
    factor = max(1, MIN_GIF_PX // max(picture.shape[:2]))  # small grids drawn bigger, pixels kept exact
    picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    caption = f"t={step['t']}  R={step['return']:.1f}"
    if step["actions"] is not None:
        caption += f"  r={step['reward']:.1f}  a={step['actions']}"
    width = max(picture.shape[1], 8 * len(caption) + 8)
    frame = Image.new("RGB", (width, picture.shape[0] + CAPTION_PX), (255, 255, 255))
    frame.paste(Image.fromarray(np.ascontiguousarray(picture[..., :3])), (0, CAPTION_PX))
    ImageDraw.Draw(frame).text((4, 3), caption, fill=(0, 0, 0))
    return frame


def pad_right(frame: Image.Image, width: int) -> Image.Image:
    canvas = Image.new("RGB", (width, frame.height), (255, 255, 255))
    canvas.paste(frame, (0, 0))
    return canvas


@torch.no_grad()
def save_gif(loaded: Loaded, path: str | Path, seed: int = 0) -> dict:
    """One greedy episode (game seeded ``seed``) drawn to a GIF, one frame per step plus the start:
    Box Pushing's grid (agents with their headings, boxes, the goal row) and SMACLite's battle from
    the envs' own ``render_rgb``, Overcooked by its package's visualizer. Returns the file, the
    number of frames, the episode's steps and return."""
    module, env_cfg, _ = loaded
    check_gif(env_cfg)
    if env_cfg.gif_by_package:
        return save_overcooked_gif(loaded, path)
    frames, summary = play_episode(loaded, seed, lambda env, step: annotate(env.render_rgb(0), step))
    width = max(frame.width for frame in frames)  # a GIF keeps the first frame's size: one width for all
    frames = [frame if frame.width == width else pad_right(frame, width) for frame in frames]
    # every frame is a step (the caption differs), so no two are merged; 256 colours or fewer: exact
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=env_cfg.gif_frame_ms, loop=0,
                   optimize=False)
    return {"path": str(path), "frames": len(frames), **summary}


def save_overcooked_gif(loaded: Loaded, path: str | Path) -> dict:
    """One greedy Overcooked episode drawn by overcooked-ai's visualizer (text frames next to it where
    pygame cannot draw). Returns the episode's path, steps, soups and returns."""
    module, env_cfg, _ = loaded
    from lightning_marl.envs.overcooked import render_episode as draw_overcooked

    actor = RecurrentPolicy(module.agent, 0.0, torch.device("cpu"))
    state: dict = {}  # the policy's recurrent state between steps (the game's tensordicts do not carry it)

    def greedy(td):  # the single game's tensordict has no batch dimension; the policy wants one
        batch = td.unsqueeze(0).update(state)
        acted = actor(batch)
        state.update({key: acted.get(key) for key in (HIDDEN, PREV_ACTION)})
        td.set(ACTION, acted.get(ACTION)[0])
        return td

    return draw_overcooked(env_cfg.layout, greedy, path, horizon=env_cfg.horizon, obs=str(env_cfg.obs),
                           state=str(env_cfg.state))


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=at_least(1), default=EvalConfig.episodes)
    parser.add_argument("--num-envs", type=at_least(1), default=EvalConfig.num_envs)
    parser.add_argument("--seed", type=at_least(0), default=None)
    parser.add_argument("--render", action="store_true", help="print the frames of one greedy episode")
    parser.add_argument("--gif", metavar="PATH",
                        help="draw one greedy episode to this GIF (Box Pushing, SMACLite, Overcooked)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="evaluate with this env option changed (repeatable), e.g. random_init=false")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.gif and not Path(args.gif).resolve().parent.is_dir():
        fail(f"--gif {args.gif}: the folder {Path(args.gif).resolve().parent} does not exist; allowed: a path in an "
             "existing folder")
    try:
        loaded = load(args.checkpoint, args.env)
        if args.gif:
            check_gif(loaded[1])  # refused before the evaluation runs
        result = evaluate(loaded, args.episodes, args.num_envs, args.seed)
        if args.gif:
            result["gif"] = save_gif(loaded, args.gif, seed=args.seed or 0)
    except ConfigError as err:
        fail(str(err))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.episodes} greedy episodes of {args.checkpoint}")
        for key, value in result.items():
            if isinstance(value, dict) and key != "gif":
                label = "win rate" if key == "battle_won" else key
                print(f"  {label:>16}: {value['mean']:.3f} ± {value['ci95']:.3f} (95% CI)")
        if args.gif:
            print("one greedy episode: " + ", ".join(f"{k}={v}" for k, v in result["gif"].items()))
    if args.render:
        try:
            frames = render_episode(loaded, seed=args.seed or 0)
        except ConfigError as err:
            fail(str(err))
        for frame in frames:
            print(frame, end="\n\n")


if __name__ == "__main__":
    main()
