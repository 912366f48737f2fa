"""Throughput of one configuration, all figures measured in one run (no timed tests anywhere):

  (a) env-only steps/s with a uniformly random policy over available actions
  (b) collection steps/s with the agent's epsilon-greedy policy
  (c) training updates/s at the configured batch (episodes x their length)
  (d) end-to-end env steps/s of a real training run (collection + updates at the configured ratio,
      timed from the first update, i.e. after the replay warm-up)
  and the ratios (d)/(a), (b)/(a), then the peak memory (max RSS) of this process and of its worker
  processes (env or collector workers; the replay lives in this process).

    python scripts/benchmark.py env=box_pushing mixer=qfix_sum data.num_envs=64 --seconds 10
    python scripts/benchmark.py mixer=qmix --unroll         # training update: nn.GRU unroll vs a GRUCell loop
    python scripts/benchmark.py mixer=qmix --compile        # training update: torch.compile vs eager

Arguments other than the --options are Hydra overrides, as for train.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import resource
import tempfile
import time

import torch
from lightning.pytorch.callbacks import Callback
from tensordict import TensorDict

from lightning_marl.config import compose, validate
from lightning_marl.config.schema import EnvWorkers
from lightning_marl.data.collector import collect_episodes
from lightning_marl.data.environments import describe_env
from lightning_marl.envs import make_env
from lightning_marl.envs.contract import ACTION, MASK
from lightning_marl.experiment import build_module, run
from lightning_marl.models.agent import stepwise_unroll
from lightning_marl.models.policy import RecurrentPolicy


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


def env_only(cfg, seconds: float, num_envs: int | None = None, one_process: bool = False) -> float:
    env = make_env(cfg.env, num_envs or cfg.data.num_envs, cfg.seed, cfg.device,
                   workers=EnvWorkers.in_process if one_process else cfg.data.env_workers,
                   start_method=cfg.data.start_method)
    rate, _ = timed_rounds(env, RandomActor(), env.episode_limit, seconds)
    env.close()
    return rate


def collection_and_updates(cfg, seconds: float) -> tuple[float, float, str]:
    env = make_env(cfg.env, cfg.data.num_envs, cfg.seed, cfg.device, workers=cfg.data.env_workers,
                   start_method=cfg.data.start_method)
    info = describe_env(env)
    module = build_module(cfg, info)
    actor = RecurrentPolicy(module.agent, 0.5, torch.device("cpu"))
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
    """Env steps per second from the first update (after the replay warm-up) to the last one (the
    final evaluation that follows it is not timed)."""

    start = end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            self.start, self.steps0 = time.perf_counter(), trainer.datamodule.env_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end, self.steps1 = time.perf_counter(), trainer.datamodule.env_steps

    @property
    def rate(self) -> float:
        return (self.steps1 - self.steps0) / (self.end - self.start)


def end_to_end(cfg, budget: int) -> float:
    replace = dataclasses.replace  # the validated config is read-only: a changed copy for the timed run
    cfg = replace(cfg, total_env_steps=budget,
                  eval=replace(cfg.eval, interval_env_steps=budget * 10,  # evaluation outside the timed window only
                               episodes=cfg.eval.num_envs),
                  checkpoint=replace(cfg.checkpoint, every_n_updates=0),
                  trainer=replace(cfg.trainer, enable_progress_bar=False))
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, tmp, extra_callbacks=[clock])
    if clock.end is None:
        raise SystemExit(f"--budget {budget} env steps ended before the first update (the replay warm-up is "
                         f"data.warmup_episodes={cfg.data.warmup_episodes} episodes); allowed: a larger --budget")
    return clock.rate


def synthetic_batch(batch: int, steps: int, agents: int, obs_dim: int = 80, n_actions: int = 11,
                    state_dim: int = 120) -> TensorDict:
    """A replay batch of full-length episodes with SMACLite 2s3z-like sizes (random contents)."""
    g = torch.Generator().manual_seed(0)
    filled = torch.ones(batch, steps + 1, dtype=torch.bool)
    filled[:, -1] = False
    terminated = torch.zeros(batch, steps + 1, dtype=torch.bool)
    terminated[:, steps - 1] = True
    return TensorDict({
        "obs": torch.randn(batch, steps + 1, agents, obs_dim, generator=g),
        "avail": (torch.rand(batch, steps + 1, agents, n_actions, generator=g) < 0.8) | (torch.arange(n_actions) == 0),
        "state": torch.randn(batch, steps + 1, state_dim, generator=g),
        "action": torch.randint(0, n_actions, (batch, steps + 1, agents), generator=g),
        "reward": torch.rand(batch, steps + 1, generator=g),
        "terminated": terminated, "filled": filled,
    }, batch_size=[batch, steps + 1])


def compare_updates(variants: dict, batches: list, repeats: int, agents: int) -> dict:
    """Training updates (TD loss of online and target agents + mixer, backward, clipping, Adam) for each
    variant ``name -> (overrides, patch)``, same initial weights; each variant first runs one update per
    batch (warm-up, and the compared loss and gradients), then ``repeats`` timed passes over the batches.
    Returns ``name -> (updates/s, first loss, first gradients)``."""
    results = {}
    for name, (overrides, patch) in variants.items():
        cfg = validate(compose(overrides))
        info = {"n_agents": agents, "n_actions": 11, "obs_dim": 80, "state_dim": 120,
                "episode_limit": max(b.batch_size[1] for b in batches), "shaped_reward": False}
        torch.manual_seed(0)
        module = build_module(cfg, info).train()
        if patch is not None:
            patch(module)
        optimizer = module.configure_optimizers()

        def update(data, module=module, optimizer=optimizer, cfg=cfg) -> torch.Tensor:
            loss, _ = module.td_loss(data)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.learner.grad_clip)
            return loss

        first = update(batches[0])
        grads = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
        for data in batches[1:]:
            update(data)
        start = time.perf_counter()
        for _ in range(repeats):
            for data in batches:
                update(data)
                optimizer.step()
        results[name] = (repeats * len(batches) / (time.perf_counter() - start), first.detach(), grads)
    return results


def print_comparison(title: str, results: dict) -> None:
    print(title)
    for name, (rate, _, _) in results.items():
        print(f"  {name:<28} {rate:8.2f} updates/s")
    (fast, loss_f, grad_f), (slow, loss_s, grad_s) = list(results.values())[:2]
    print(f"  {'ratio':<28} {fast / slow:8.2f}x   (|loss difference| {(loss_f - loss_s).abs().item():.2e}, "
          f"max |gradient difference| {(grad_f - grad_s).abs().max().item():.2e})")


def gru_cell_loop(module) -> None:
    for agent in (module.agent, module.target_agent):
        agent.forward = functools.partial(stepwise_unroll, agent)


def unroll_comparison(batch: int, steps: int, agents: int, repeats: int, mixer: str = "qmix") -> None:
    """Training updates with the agents unrolled by one nn.GRU call vs by a per-time-step GRUCell loop
    (PyMARL's way), same weights and batch."""
    results = compare_updates({"nn.GRU unroll": ([f"mixer={mixer}"], None),
                               "GRUCell step loop": ([f"mixer={mixer}"], gru_cell_loop)},
                              [synthetic_batch(batch, steps, agents)], repeats, agents)
    print_comparison(f"training update, {mixer}, batch {batch} episodes x {steps} steps x {agents} agents "
                     "(online + target unroll, mixer, TD(lambda), backward, Adam):", results)


def compile_comparison(batch: int, agents: int, repeats: int, mixer: str = "qmix") -> None:
    """learner.compile=inductor (inductor) vs eager, over batches of different lengths (replay batches are
    trimmed to their longest episode, so shapes vary from update to update)."""
    lengths = (120, 97, 110, 64, 101, 88)
    results = compare_updates({"torch.compile (inductor)": ([f"mixer={mixer}", "learner.compile=inductor"], None),
                               "eager": ([f"mixer={mixer}"], None)},
                              [synthetic_batch(batch, t, agents) for t in lengths], repeats, agents)
    print_comparison(f"training update, {mixer}, batch {batch} episodes x {lengths} steps x {agents} agents, "
                     "compiled vs eager (compilation not timed):", results)


def diagnostics_comparison(batch: int, steps: int, agents: int, repeats: int, mixer: str, every: int) -> None:
    """Training updates with the diagnostics computed in every update and without: the extra time of a
    diagnosed update, and what it costs on average at ``diagnostics.every_n_updates=every``."""
    def diagnose(module) -> None:
        module.diagnose = True

    batches = [synthetic_batch(batch, steps, agents)]
    results = compare_updates({"diagnostics in every update": ([f"mixer={mixer}"], diagnose),
                               "no diagnostics": ([f"mixer={mixer}"], None)}, batches, repeats, agents)
    print_comparison(f"training update, {mixer}, batch {batch} episodes x {steps} steps x {agents} agents:", results)
    on, off = results["diagnostics in every update"][0], results["no diagnostics"][0]
    extra = off / on - 1.0  # the extra time of a diagnosed update, relative to a plain one
    print(f"a diagnosed update takes {100 * extra:.1f}% longer; at diagnostics.every_n_updates={every}: "
          f"{100 * extra / every:.2f}% of update time")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. env=box_pushing mixer=qmix")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement (a-c)")
    parser.add_argument("--budget", type=int, default=None, help="env steps of the end-to-end run (d)")
    parser.add_argument("--unroll", action="store_true",
                        help="only compare training updates with the nn.GRU unroll and with a GRUCell loop")
    parser.add_argument("--env-only", type=int, nargs="+", metavar="NUM_ENVS",
                        help="only (a), for each of these batch sizes, with the ratio to the first")
    parser.add_argument("--unroll-shape", type=int, nargs=3, default=(32, 120, 5), metavar=("B", "T", "N"))
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per variant (--unroll, --compile)")
    parser.add_argument("--compile", action="store_true",
                        help="only compare training updates with learner.compile=inductor and without")
    parser.add_argument("--diagnostics", action="store_true",
                        help="only compare training updates with the diagnostics and without (--unroll-shape)")
    args = parser.parse_args(argv)
    cfg = validate(compose(args.overrides))
    torch.set_num_threads(int(cfg.threads or torch.get_num_threads()))
    print(f"config: env={cfg.env.name} mixer={cfg.mixer.name} num_envs={cfg.data.num_envs} "
          f"batch={cfg.data.batch_size} updates/round={cfg.data.updates_per_round} threads={torch.get_num_threads()}")
    if args.unroll:
        unroll_comparison(*args.unroll_shape, repeats=args.repeats, mixer=cfg.mixer.name)
        return
    if args.diagnostics:
        b, t, n = args.unroll_shape
        diagnostics_comparison(b, t, n, args.repeats, cfg.mixer.name, cfg.diagnostics.every_n_updates)
        return
    if args.compile:
        b, _, n = args.unroll_shape
        compile_comparison(b, n, repeats=max(1, args.repeats // 5), mixer=cfg.mixer.name)
        return
    if args.env_only:
        first = None
        for n in args.env_only:
            rate = env_only(cfg, args.seconds, n)
            first = first or rate
            agents = make_env(cfg.env, 1, workers=EnvWorkers.in_process).n_agents
            print(f"(a) num_envs={n:<6} env steps/s {rate:12.1f}   agent-steps/s {rate * agents:12.1f}   "
                  f"x{rate / first:.1f} of num_envs={args.env_only[0]}")
        return
    processes = cfg.data.collector_processes
    if processes:  # the reference is what one worker process steps on its own
        games = cfg.data.num_envs // processes
        a = env_only(cfg, args.seconds, games, one_process=True)
        a_label = f"(a) env-only steps/s, one worker ({games} game{'s' if games > 1 else ''} in-process)"
    else:
        a = env_only(cfg, args.seconds)
        a_label = "(a) env-only steps/s (random policy)"
    b, c, shape = collection_and_updates(cfg, args.seconds)
    d = end_to_end(cfg, args.budget or max(2000, int(a * args.seconds * 2)))
    print(f"{a_label:<37}{a:12.1f}")
    print(f"(b) collection steps/s (policy)      {b:12.1f}")
    print(f"(c) training updates/s ({shape}) {c:8.2f}")
    print(f"(d) end-to-end env steps/s           {d:12.1f}")
    print(f"(d)/(a) = {d / a:.3f}    (b)/(a) = {b / a:.3f}")
    own, child = (resource.getrusage(who).ru_maxrss / 2**20 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(f"peak memory (max RSS): this process {own:.2f} GB, largest finished worker process {child:.2f} GB")


if __name__ == "__main__":
    main()
