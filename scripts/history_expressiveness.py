"""State versus joint history as the mixers' centralized information (claim B3 of the DuelMIX paper):
conditioning on the state keeps IGM, but a state-only mixer cannot fit values that differ between
joint histories that share a state; conditioning on the joint history can.

The game (a two-step Dec-POMDP built for this): at step one each of the two agents privately observes
o_i in {0, 1}; at step two the state is the same constant for every joint history h = (o_1, o_2),
and the joint-action values are a table R_h(a) over A x A joint actions that depends on h. The
targets are IGM-consistent: each agent has an optimal action per observation, pi_i(o_i), and the
unique optimum of R_h is (pi_1(o_1), pi_2(o_2)) (entries uniform in [-10, 10], the optimum raised
to the row maximum + 2). A family of targets per seed.

The fit: free per-agent utilities Q_i(o_i, .) (the agents' value of their own history) and the mixer,
full-batch regression of Q_tot(z_h, Q(h), a) on R_h(a) over all 4 x A^2 (history, joint action)
pairs (Adam 1e-2, 3000 steps, cosine decay to 1%). z_h: ``state`` = the constant state (the same for
all h, D = 1); ``history`` = the agents' "hidden states", a fixed random N(0, 1) vector of 16 per
agent and observation, concatenated (D = 32); ``history_state`` = both. Reported per (mixer, z):
the mean over seeds of the largest absolute error, and in how many seeds the greedy joint action
(per-agent argmax of the fitted utilities) is the optimum in all four histories.

    python scripts/history_expressiveness.py                # QMIX, QPLEX, DuelMIX, QFIX-sum; seeds 0-4
    python scripts/history_expressiveness.py --init optimum # utilities start in the optimum's greedy cell
    python scripts/history_expressiveness.py --seeds 0 --steps 500 --mixers qfix_sum
"""
from __future__ import annotations

import itertools
import time

import torch

from lightning_marl.arguments import OneLineParser, at_least
from lightning_marl.models.mixers import MIXERS, build_mixer

N_AGENTS, HIDDEN = 2, 16
HISTORIES = list(itertools.product((0, 1), repeat=N_AGENTS))  # joint histories h = (o_1, o_2)
MODES = ("state", "history", "history_state")


def targets(n_actions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R [4, A, A]: the value of each joint action in each joint history, pi [2, 2]: each agent's
    optimal action per observation); IGM-consistent, the optimum unique by a margin of 2."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    pi = torch.randint(0, n_actions, (N_AGENTS, 2), generator=gen)
    table = torch.empty(len(HISTORIES), n_actions, n_actions).uniform_(-10, 10, generator=gen)
    for k, (o1, o2) in enumerate(HISTORIES):
        best = (int(pi[0, o1]), int(pi[1, o2]))
        table[k][best] = table[k].max() + 2.0
    return table, pi


def central(mode: str, seed: int) -> torch.Tensor:
    """z per joint history [4, D]: the constant state, the agents' hidden states, or both."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    hidden = torch.randn(N_AGENTS, 2, HIDDEN, generator=gen)  # agent i's hidden state after observing o_i
    state = torch.ones(len(HISTORIES), 1)
    history = torch.stack([torch.cat([hidden[0, o1], hidden[1, o2]]) for o1, o2 in HISTORIES])
    return {"state": state, "history": history, "history_state": torch.cat([history, state], -1)}[mode]


def fit(mixer_name: str, mode: str, seed: int, n_actions: int = 3, steps: int = 3000, lr: float = 1e-2,
        init: str = "random") -> dict:
    """Fit utilities and mixer to one target family; the largest error and whether greedy is optimal.
    ``init="optimum"`` starts the utilities in the optimum's greedy cell (each agent's optimal action
    per observation raised above the others), so that the fit measures capacity, not the cell it falls into."""
    table, pi = targets(n_actions, seed)
    z_h = central(mode, seed)
    torch.manual_seed(seed)
    mixer = build_mixer(mixer_name, n_agents=N_AGENTS, n_actions=n_actions, central_dim=z_h.shape[-1])
    start = torch.randn(N_AGENTS, 2, n_actions)
    if init == "optimum":
        for i, o in itertools.product(range(N_AGENTS), range(2)):
            start[i, o, pi[i, o]] = start[i, o].max() + 1.0
    utilities = torch.nn.Parameter(start)   # Q_i(o_i, .)
    joint = torch.tensor(list(itertools.product(range(n_actions), repeat=N_AGENTS)))  # [A^2, 2]
    rows = [(k, j) for k in range(len(HISTORIES)) for j in range(len(joint))]
    h_index = torch.tensor([k for k, _ in rows])
    actions = joint[torch.tensor([j for _, j in rows])]                               # [B, 2]
    obs = torch.tensor(HISTORIES)[h_index]                                           # [B, 2]
    target = table[h_index, actions[:, 0], actions[:, 1]]
    z = z_h[h_index]

    def q_tot() -> torch.Tensor:
        q = torch.stack([utilities[i, obs[:, i]] for i in range(N_AGENTS)], dim=1)  # [B, 2, A]
        return mixer(q, actions, z)

    opt = torch.optim.Adam([*mixer.parameters(), utilities], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.01 * lr)
    for _ in range(steps):
        loss = (q_tot() - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        error = (q_tot() - target).abs().max().item()
        greedy = utilities.argmax(-1)                                                # [2, 2]: pi_i(o_i)
    return {"max_error": error, "greedy_optimal": bool(torch.equal(greedy, pi))}


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--mixers", nargs="+", default=["qmix", "qplex", "duelmix", "qfix_sum"],
                        choices=[n for n in MIXERS.names() if MIXERS.config(n).needs_central])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=at_least(0), default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=at_least(1), default=3000)
    parser.add_argument("--actions", type=at_least(2), default=3)
    parser.add_argument("--init", choices=("random", "optimum"), default="random",
                        help="utilities from N(0, 1), or started in the optimum's greedy cell")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    print(f"# python scripts/history_expressiveness.py --init {args.init} --steps {args.steps} "
          f"--actions {args.actions} --seeds {' '.join(map(str, args.seeds))}  (torch {torch.__version__})")
    print("| mixer | z | max abs error, mean over seeds (per seed) | greedy optimal in all 4 histories |")
    print("|---|---|---|---|")
    for name in args.mixers:
        for mode in args.modes:
            results = [fit(name, mode, s, args.actions, args.steps, init=args.init) for s in args.seeds]
            errors = [r["max_error"] for r in results]
            print(f"| {name} | {mode} | {sum(errors) / len(errors):.3f} ({', '.join(f'{e:.3f}' for e in errors)}) | "
                  f"{sum(r['greedy_optimal'] for r in results)}/{len(results)} |", flush=True)
    print(f"\n# total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
