"""Expressiveness of the mixers: fit each one, with free per-agent utilities, to payoff tables.

For every mixer, centralized-information mode, payoff table and seed, learnable utility tables
``Q_i(a_i)`` and the mixer are fitted together by full-batch regression of ``Q_tot(a)`` on the
payoff ``R(a)`` over all joint actions (Adam, mean squared error, cosine learning-rate decay to 1%).
Reported per (mixer, central, table): the max absolute error of the fitted ``Q_tot`` per seed, the
mean absolute error over seeds, in how many seeds the greedy joint action (per-agent argmax of the
fitted utilities) is an optimum of the table, and the mixer's parameter count; then a summary per
(mixer, central) and the parameter counts at SMACv2-like sizes.

Tables: the matrix games ``non_monotonic``, ``climbing`` and ``penalty`` (k = -100) from
:data:`lightning_marl.envs.matrix.PAYOFFS`, and random IGM-consistent tables ``random-NxA`` for
(N, A) in :data:`RANDOM_SHAPES` (2 agents with 3, 4, 5 actions; 3 agents with 3, 4 actions): i.i.d.
entries uniform in [-10, 10] (generator seeded by the table, the same for every fit seed), redrawn
until the best entry beats the second best by at least 1, so that the argmax is unique and an exact
fit by an IGM-consistent mixer must put its greedy joint action there.

Initial utilities (``--init``): ``random`` = N(0, init_scale^2); ``optimum`` = the same, then each
agent's entry of the table's optimum is raised to its row maximum + init_scale, so that the fit
starts in the optimum's greedy cell (the utilities stay free parameters). Every IGM-consistent
mixer satisfies Q_tot(a) <= Q_tot(greedy), so its fits fall into cells, one per greedy joint action;
moving from one cell to another passes through joint actions that are tied as greedy and costs loss,
so gradient descent rarely leaves the cell it falls into early: ``random`` measures capacity and
optimization, ``optimum`` the capacity given the right cell. ``--weighting optimistic`` weights
overestimated entries by ``--alpha`` (as ``learner.td_weighting=optimistic``), which lets the fits
leave a wrong cell; the exact fit is still the only zero of the loss.

Centralized information z, fixed per table (a one-step game has a single state and a single joint
history): ``state`` = the matrix env's state (the constant 1, D = 1); ``history`` = a fixed random
N(0, 1) vector standing for the agents' hidden states (D = N * 16); ``noise`` = a fresh N(0, 1)
vector at every call (D = 16; errors are measured over 8 fresh draws); ``zeros`` = a zero vector
(D = 16). VDN takes no z.

Implementation: the fits of one mixer and one N run as one vmapped ensemble (``torch.func``). Each
member is built at its own size (N, A, D) and its weights are copied into a model of the group's
largest A and D, the extra inputs (padded z entries, one-hot columns of absent actions) having zero
weight and receiving zero gradient (Adam leaves them at zero): each fit is exactly the fit of its
own mixer, and only the group's joint actions that exist in the member's table enter its loss.

    python scripts/expressiveness.py                  # 4 central modes, seeds 0 1 2, 2000 steps
    python scripts/expressiveness.py --quick          # each mixer's default mode, seed 0, 1000 steps
    python scripts/expressiveness.py --init optimum --mixers qplex qplex:stop_gradient=false
    python scripts/expressiveness.py --weighting optimistic   # loss weighted as learner.td_weighting=optimistic
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass

import torch
import yaml
from torch.func import functional_call, vmap

from lightning_marl.config.schema import LearnerConfig
from lightning_marl.envs.matrix import MatrixEnvConfig, payoff_tensor
from lightning_marl.models.mixers import MIXERS, build_mixer
from lightning_marl.module import td_weights

MODES = ("state", "history", "noise", "zeros")
HIDDEN, NOISE_DIM, EVAL_DRAWS = 16, 16, 8
RANDOM_SHAPES = ((2, 3), (2, 4), (2, 5), (3, 3), (3, 4))   # (agents, actions) of the random tables


@dataclass
class Table:
    name: str
    payoff: torch.Tensor          # [A] * N
    history: torch.Tensor         # the fixed "history" z of this table, [N * HIDDEN]

    @property
    def n(self) -> int:
        return self.payoff.dim()

    @property
    def a(self) -> int:
        return self.payoff.shape[0]


def random_igm_table(n: int, a: int, gen: torch.Generator, low: float = -10.0, high: float = 10.0,
                     gap: float = 1.0) -> torch.Tensor:
    """I.i.d. uniform entries in [low, high], redrawn until the best beats the second best by ``gap``."""
    while True:
        table = low + (high - low) * torch.rand([a] * n, generator=gen)
        top = table.flatten().topk(2).values
        if top[0] - top[1] >= gap:
            return table


def make_tables() -> list[Table]:
    tables = []
    k = MatrixEnvConfig.penalty_k
    named = [(game, payoff_tensor(game, None, None, k)) for game in ("non_monotonic", "climbing", "penalty")]
    named += [(f"random-{n}x{a}", None) for n, a in RANDOM_SHAPES]
    for k, (name, payoff) in enumerate(named):
        gen = torch.Generator().manual_seed(1000 + k)
        if payoff is None:
            n, a = (int(x) for x in name.split("-")[1].split("x"))
            payoff = random_igm_table(n, a, gen)
        tables.append(Table(name, payoff.float(), torch.randn(payoff.dim() * HIDDEN, generator=gen)))
    return tables


def central_dim(mode: str, n: int) -> int:
    return {"state": 1, "history": n * HIDDEN, "noise": NOISE_DIM, "zeros": NOISE_DIM}[mode]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def transplant(small: torch.nn.Module, big: torch.nn.Module, n: int, a_small: int, a_big: int,
               d_small: int, d_big: int) -> dict[str, torch.Tensor]:
    """``small``'s parameters laid out in ``big``'s shapes: inputs ``[z; onehot(a)]`` are re-indexed
    (z entry d -> d, one-hot (i, j) -> d_big + i * a_big + j) and the padded inputs get zero weight."""
    out = {}
    big_params = dict(big.named_parameters())
    for name, p in small.named_parameters():
        target = big_params[name]
        if p.shape == target.shape:
            out[name] = p.detach().clone()
            continue
        assert p.dim() == 2 and p.shape[0] == target.shape[0], (name, p.shape, target.shape)
        cols = list(range(min(d_small, p.shape[1])))
        if p.shape[1] > d_small:  # [z; onehot(a)]
            assert p.shape[1] == d_small + n * a_small and target.shape[1] == d_big + n * a_big, name
            cols_big = cols + [d_big + i * a_big + j for i in range(n) for j in range(a_small)]
        else:                     # z alone
            cols_big = cols
        w = torch.zeros_like(target)
        w[:, cols_big] = p.detach()
        out[name] = w
    return out


@dataclass
class Member:
    mode: str
    table: Table
    seed: int
    params: int = 0


def parse_mixer(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (values parsed as YAML) -> (name, config)."""
    name, _, rest = spec.partition(":")
    if name not in MIXERS.names():
        raise SystemExit(f"unknown mixer {name!r}; allowed: {', '.join(MIXERS.names())}")
    config = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)
    return name, config


def fit_group(mixer_spec: str, members: list[Member], steps: int, lr: float, init_scale: float,
              utility_lr: float | None = None, init: str = "random", weighting: str = "none", alpha: float = 0.1):
    """Fit all ``members`` (same N) of one mixer as one vmapped ensemble; returns per-member results."""
    n = members[0].table.n
    a_big = max(m.table.a for m in members)
    mixer_name, config = parse_mixer(mixer_spec)
    uses_z = MIXERS.config(mixer_name).needs_central
    d_big = max(central_dim(m.mode, n) for m in members) if uses_z else 1
    big = build_mixer(mixer_name, n_agents=n, n_actions=a_big, central_dim=d_big, **config)
    states, utils = [], []
    for k, m in enumerate(members):
        d = central_dim(m.mode, n) if uses_z else 1
        gen = torch.Generator().manual_seed(m.seed * 7919 + k)
        torch.manual_seed(m.seed * 7919 + k)
        small = build_mixer(mixer_name, n_agents=n, n_actions=m.table.a, central_dim=d, **config)
        m.params = n_params(small)
        states.append(transplant(small, big, n, m.table.a, a_big, d, d_big))
        u = init_scale * torch.randn(n, a_big, generator=gen)
        if init == "optimum":   # start in the optimum's greedy cell: argmax_j Q_i(j) = a*_i
            best = m.table.payoff.flatten().argmax().item()
            star = [int(x) for x in torch.unravel_index(torch.tensor(best), m.table.payoff.shape)]
            for i, j in enumerate(star):
                u[i, j] = u[i, :m.table.a].max() + init_scale
        utils.append(u)
    params = {name: torch.stack([s[name] for s in states]).requires_grad_(True) for name in states[0]}
    buffers = {name: b.expand(len(members), *b.shape).clone() for name, b in big.named_buffers()}
    q = torch.stack(utils).requires_grad_(True)                                   # [K, N, A]
    big = big.to("meta")

    # joint actions [J, N] over the largest action set; per member the available ones
    joint = torch.tensor(list(itertools.product(range(a_big), repeat=n)), dtype=torch.long)
    avail = torch.stack([(joint < m.table.a).all(-1) for m in members])             # [K, J]
    mask = torch.stack([torch.arange(a_big).expand(n, a_big) < m.table.a for m in members])  # [K, N, A]
    target = torch.zeros(len(members), joint.shape[0])
    for k, m in enumerate(members):
        target[k, avail[k]] = m.table.payoff[tuple(joint[avail[k]].T)]
    weight = avail.float() / avail.sum(-1, keepdim=True)

    fixed_z = torch.zeros(len(members), d_big)
    noisy = torch.zeros(len(members), d_big)
    for k, m in enumerate(members):
        if not uses_z:
            continue
        if m.mode == "state":
            fixed_z[k, 0] = 1.0
        elif m.mode == "history":
            fixed_z[k, :m.table.history.numel()] = m.table.history
        elif m.mode == "noise":
            noisy[k, :NOISE_DIM] = 1.0
    n_joint = joint.shape[0]

    def central(gen=None):
        """z per member and joint action [K, J, D]: fixed, or fresh N(0,1) in the noise slots."""
        z = fixed_z.unsqueeze(1).expand(-1, n_joint, -1)
        if noisy.any():
            z = z + noisy.unsqueeze(1) * torch.randn(len(members), n_joint, d_big, generator=gen)
        return z

    def one(p, b, q_k, z_k, mask_k):
        return functional_call(big, (p, b), (q_k.expand(n_joint, n, a_big), joint, z_k,
                                             mask_k.expand(n_joint, n, a_big)))

    q_tot_fn = vmap(one)
    opt = torch.optim.Adam([{"params": list(params.values())},
                            {"params": [q], "lr": lr if utility_lr is None else utility_lr}], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=0.01 * lr)
    gen = torch.Generator().manual_seed(members[0].seed)
    for _ in range(steps):
        q_tot = q_tot_fn(params, buffers, q, central(gen), mask)
        c = td_weights(q_tot.detach(), target, LearnerConfig(td_weighting=weighting, optimistic_alpha=alpha))
        loss = (weight * c * (q_tot - target) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    with torch.no_grad():
        draws = EVAL_DRAWS if noisy.any() else 1
        errs = torch.stack([(q_tot_fn(params, buffers, q, central(gen), mask) - target).abs()
                            for _ in range(draws)])                                # [draws, K, J]
        results = []
        for k, m in enumerate(members):
            e = errs[:, k, avail[k]]
            greedy = q[k, :, :m.table.a].argmax(-1)
            optimal = bool(m.table.payoff[tuple(greedy)] >= m.table.payoff.max() - 1e-6)
            results.append(dict(max_err=e.max().item(), mean_err=e.mean().item(), optimal=optimal,
                                greedy=tuple(greedy.tolist())))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixers", nargs="+", default=MIXERS.names(),
                        help="registry names, or variants name:key=value,... (e.g. qplex:stop_gradient=false)")
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES,
                        help="central-information modes (default: all four; --quick: each mixer's default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default 2000; --quick: 1000)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--utility-lr", type=float, default=None, help="Adam lr of the utilities (default: --lr)")
    parser.add_argument("--init", choices=("random", "optimum"), default="random",
                        help="initial utilities: random N(0, init_scale^2), or random with each agent's argmax "
                             "moved to the table's optimum (start in the optimum's greedy cell)")
    parser.add_argument("--init-scale", type=float, default=1.0, help="std of the initial utilities")
    parser.add_argument("--weighting", choices=("none", "optimistic"), default="none",
                        help="loss weights as learner.td_weighting: optimistic = 1 where Q_tot < R, --alpha elsewhere")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="weight of overestimated entries (--weighting optimistic)")
    parser.add_argument("--threshold", type=float, default=0.1, help="'fits' = max abs error below this")
    parser.add_argument("--quick", action="store_true", help="fewer steps, one seed, default modes only")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else (1000 if args.quick else 2000)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    tables = make_tables()
    print(f"# python scripts/expressiveness.py {' '.join(sys.argv[1:] if argv is None else argv)}  "
          f"(torch {torch.__version__})")

    rows = []
    start = time.time()
    for name in args.mixers:
        if not MIXERS.config(parse_mixer(name)[0]).needs_central:
            modes = ["-"]
        elif args.modes is not None:
            modes = list(args.modes)
        else:
            default = getattr(MIXERS.config(parse_mixer(name)[0])(), "central_info", "state")
            modes = [str(default)] if args.quick else list(MODES)
        t0 = time.time()
        for n in dict.fromkeys(t.n for t in tables):
            members = [Member(mode, table, seed) for mode in modes for table in tables if table.n == n
                       for seed in seeds]
            for m, r in zip(members, fit_group(name, members, steps, args.lr, args.init_scale,
                                               args.utility_lr, args.init, args.weighting, args.alpha)):
                rows.append(dict(mixer=name, central=m.mode, table=m.table.name, seed=m.seed, params=m.params,
                                 **r))
        print(f"#   {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    # per (mixer, central, table): the max abs error of each seed, the mean abs error over seeds
    print()
    print(f"Fits: init={args.init} init_scale={args.init_scale} weighting={args.weighting} steps={steps} "
          f"lr={args.lr} seeds={seeds}; "
          "max abs err per seed, mean abs err over seeds, greedy joint action optimal in k of the seeds")
    print()
    print("| mixer | central | table | max abs err | mean abs err | greedy optimal | params |")
    print("|---|---|---|---:|---:|---:|---:|")
    keys = list(dict.fromkeys((r["mixer"], r["central"], r["table"]) for r in rows))
    summary: dict[tuple, list] = {}
    for key in keys:
        group = [r for r in rows if (r["mixer"], r["central"], r["table"]) == key]
        errs = " / ".join(f"{r['max_err']:.3f}" for r in group)
        mean = sum(r["mean_err"] for r in group) / len(group)
        opt = sum(r["optimal"] for r in group)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {errs} | {mean:.3f} | {opt}/{len(group)} | {group[0]['params']} |")
        summary.setdefault(key[:2], []).extend((r["max_err"] < args.threshold, r["optimal"]) for r in group)
    print()
    print(f"Summary over {len(tables)} tables x {len(seeds)} seeds: fitted = max abs error < {args.threshold}; "
          "greedy = the greedy joint action is an optimum of the table")
    print()
    print("| mixer | central | fitted | greedy optimal |")
    print("|---|---|---:|---:|")
    for (mixer, central), flags in summary.items():
        print(f"| {mixer} | {central} | {sum(f for f, _ in flags)}/{len(flags)} | "
              f"{sum(g for _, g in flags)}/{len(flags)} |")

    print()
    print("Parameter counts at SMACv2-like sizes (state dim S=130, N=5 agents, A=11 actions, central_info=state):")
    print()
    print("| mixer | params |")
    print("|---|---:|")
    for name in MIXERS.names():
        print(f"| {name} | {n_params(build_mixer(name, n_agents=5, n_actions=11, central_dim=130))} |")
    print(f"\n# total time {time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
