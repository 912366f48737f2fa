"""Throughput of one configuration, all figures measured in one run (no timed tests anywhere):

  (a) env-only steps/s with a uniformly random policy over available actions
  (b) collection steps/s with the agent's epsilon-greedy policy
  (c) training updates/s at the configured batch (episodes x their length)
  (d) end-to-end env steps/s of a real training run (collection + updates at the configured ratio)
  and the ratios (d)/(a), (b)/(a).

    python scripts/benchmark.py env=box_pushing mixer=qfix_sum data.num_envs=64 --seconds 10
    python scripts/benchmark.py env=matrix --unroll        # + nn.GRU unroll vs a GRUCell loop

Arguments other than the --options are Hydra overrides, as for train.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_marl.config import compose  # noqa: E402
from lightning_marl.data.collector import EpisodeActor, collect_episodes  # noqa: E402
from lightning_marl.envs import make_env  # noqa: E402
from lightning_marl.envs.contract import ACTION, MASK  # noqa: E402
from lightning_marl.experiment import build_module, run  # noqa: E402
from lightning_marl.models.agent import RNNAgent, stepwise_unroll  # noqa: E402


class RandomActor:
    """Uniform random available actions (the env-only baseline)."""

    def begin(self, batch: int) -> None:
        pass

    def __call__(self, td):
        mask = td.get(MASK)
        td.set(ACTION, torch.where(mask, torch.rand(mask.shape), -1.0).argmax(-1))
        return td


def timed_rounds(env, actor, limit: int, seconds: float) -> tuple[float, int]:
    """Env steps per second over whole collection rounds for at least ``seconds``."""
    collect_episodes(env, actor, limit)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, stats = collect_episodes(env, actor, limit)
        steps += int(stats["length"].sum())
    return steps / (time.perf_counter() - start), steps


def env_only(cfg, seconds: float, num_envs: int | None = None) -> float:
    env_cfg = dict(cfg.env)
    env = make_env(env_cfg.pop("name"), num_envs=num_envs or cfg.data.num_envs, seed=cfg.seed, device=cfg.device,
                   **env_cfg)
    rate, _ = timed_rounds(env, RandomActor(), env.episode_limit, seconds)
    env.close()
    return rate


def collection_and_updates(cfg, seconds: float) -> tuple[float, float, str]:
    env_cfg = dict(cfg.env)
    env = make_env(env_cfg.pop("name"), num_envs=cfg.data.num_envs, seed=cfg.seed, device=cfg.device, **env_cfg)
    info = {"n_agents": env.n_agents, "n_actions": env.n_actions,
            "obs_dim": env.observation_spec[("agents", "observation")].shape[-1],
            "state_dim": env.observation_spec["state"].shape[-1], "episode_limit": env.episode_limit,
            "shaped_reward": "shaped_reward" in env.observation_spec.keys()}
    module = build_module(cfg, info)
    actor = EpisodeActor(module.agent, lambda: 0.5, torch.device("cpu"))
    collect_rate, _ = timed_rounds(env, actor, env.episode_limit, seconds)
    episodes = []
    while sum(e.batch_size[0] for e in episodes) < cfg.data.batch_size:
        episodes.append(collect_episodes(env, actor, env.episode_limit)[0])
    env.close()
    batch = torch.cat(episodes)[: cfg.data.batch_size]
    batch = batch[:, : int(batch["filled"].sum(1).max()) + 1]
    optimizer = module.configure_optimizers()
    module.train()

    def update():
        loss, _ = module.td_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.learner.grad_clip)
        optimizer.step()

    update()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        update()
        n += 1
    shape = f"{batch.batch_size[0]} episodes x {batch.batch_size[1]} steps"
    return collect_rate, n / (time.perf_counter() - start), shape


class _Clock(Callback):
    def on_train_start(self, trainer, pl_module):
        self.start, self.steps0 = time.perf_counter(), trainer.datamodule.env_steps

    def on_train_end(self, trainer, pl_module):
        self.rate = (trainer.datamodule.env_steps - self.steps0) / (time.perf_counter() - self.start)


def end_to_end(cfg, budget: int) -> float:
    cfg.total_env_steps = budget
    cfg.eval.interval_env_steps = budget * 10  # evaluation outside the timed window only
    cfg.checkpoint.every_n_updates = 0
    cfg.trainer.enable_progress_bar = False
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, tmp, extra_callbacks=[clock])
    return clock.rate


def unroll_comparison(batch: int, steps: int, agents: int, repeats: int) -> None:
    """nn.GRU over the whole sequence vs a per-time-step GRUCell loop, same weights, forward+backward."""
    torch.manual_seed(0)
    agent = RNNAgent(obs_dim=80, n_agents=agents, n_actions=11)
    obs = torch.randn(batch, steps, agents, 80)
    actions = torch.randint(0, 11, (batch, steps, agents))
    fast, _ = agent(obs, actions)
    slow, _ = stepwise_unroll(agent, obs, actions)
    diff = (fast - slow).abs().max().item()

    def timeit(fn) -> float:
        fn(agent, obs, actions)[0].sum().backward()
        start = time.perf_counter()
        for _ in range(repeats):
            fn(agent, obs, actions)[0].sum().backward()
        return (time.perf_counter() - start) / repeats

    t_fast = timeit(lambda a, o, u: a(o, u))
    t_slow = timeit(stepwise_unroll)
    print(f"agent unroll, batch {batch} episodes x {steps} steps x {agents} agents (forward + backward):")
    print(f"  nn.GRU unroll      {1 / t_fast:8.2f} it/s")
    print(f"  GRUCell step loop  {1 / t_slow:8.2f} it/s")
    print(f"  speed-up           {t_slow / t_fast:8.2f}x   (max |Q difference| {diff:.2e})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. env=box_pushing mixer=qmix")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement (a-c)")
    parser.add_argument("--budget", type=int, default=None, help="env steps of the end-to-end run (d)")
    parser.add_argument("--unroll", action="store_true", help="also compare the GRU unroll with a GRUCell loop")
    parser.add_argument("--env-only", type=int, nargs="+", metavar="NUM_ENVS",
                        help="only (a), for each of these batch sizes, with the ratio to the first")
    parser.add_argument("--unroll-shape", type=int, nargs=3, default=(32, 120, 5), metavar=("B", "T", "N"))
    args = parser.parse_args(argv)
    cfg = compose(args.overrides)
    torch.set_num_threads(int(cfg.threads or torch.get_num_threads()))
    print(f"config: env={cfg.env.name} mixer={cfg.mixer.name} num_envs={cfg.data.num_envs} "
          f"batch={cfg.data.batch_size} updates/round={cfg.data.updates_per_round} threads={torch.get_num_threads()}")
    if args.env_only:
        first = None
        for n in args.env_only:
            rate = env_only(cfg, args.seconds, n)
            first = first or rate
            env_cfg = dict(cfg.env)
            agents = make_env(env_cfg.pop("name"), num_envs=1, **env_cfg).n_agents
            print(f"(a) num_envs={n:<6} env steps/s {rate:12.1f}   agent-steps/s {rate * agents:12.1f}   "
                  f"x{rate / first:.1f} of num_envs={args.env_only[0]}")
        return
    a = env_only(cfg, args.seconds)
    b, c, shape = collection_and_updates(cfg, args.seconds)
    d = end_to_end(cfg, args.budget or max(2000, int(a * args.seconds * 2)))
    print(f"(a) env-only steps/s (random policy) {a:12.1f}")
    print(f"(b) collection steps/s (policy)      {b:12.1f}")
    print(f"(c) training updates/s ({shape}) {c:8.2f}")
    print(f"(d) end-to-end env steps/s           {d:12.1f}")
    print(f"(d)/(a) = {d / a:.3f}    (b)/(a) = {b / a:.3f}")
    if args.unroll:
        unroll_comparison(*args.unroll_shape, repeats=5)


if __name__ == "__main__":
    main()
