"""The LightningModule: a shared recurrent agent, a pluggable mixer, their target copies, and the
double-Q TD(lambda) loss."""
from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from lightning_marl.config.schema import AgentConfig, LearnerConfig, TDWeighting, plain
from lightning_marl.data.priority import WEIGHT_KEY
from lightning_marl.errors import DivergenceError
from lightning_marl.models.agent import RNNAgent
from lightning_marl.models.central import CentralInfo, Source
from lightning_marl.models.mixers.base import NEG_INF, MixerConfig
from lightning_marl.models.policy import RecurrentPolicy
from lightning_marl.models.reward_standardizer import RewardStandardizer
from lightning_marl.targets import td_lambda_targets


def compiled_calls(backend: Any, **modules: torch.nn.Module) -> dict[str, Any]:
    """The callables the loss uses: the modules themselves, or ``torch.compile`` of them
    (``learner.compile``: null, or a backend name such as ``inductor``, ``eager`` or ``aot_eager``,
    checked by the config; dynamic shapes, since batches are trimmed to their longest episode).
    The modules stay as they are, so checkpoints and acting (``agent.step``) do not change."""
    if backend is None:
        return dict(modules)
    return {name: torch.compile(module, backend=str(backend), dynamic=True) for name, module in modules.items()}


def td_weights(q_tot: torch.Tensor, targets: torch.Tensor, cfg: LearnerConfig) -> torch.Tensor | float:
    """Per-step loss weights ``c_t``: 1 for ``learner.td_weighting=none``; for ``optimistic``,
    ``c_t = 1`` where ``Q_tot < G_t`` (underestimated joint actions) and ``alpha`` elsewhere: the
    optimistic weighting of OW-QMIX (Rashid et al., 2020, "Weighted QMIX"), here on the TD loss of
    any mixer, so that a rarely tried better joint action is not averaged away by worse ones."""
    if cfg.td_weighting == TDWeighting.optimistic:
        return torch.where(q_tot < targets, 1.0, float(cfg.optimistic_alpha))
    return 1.0


class MARLModule(L.LightningModule):
    """Agents + mixer + targets, trained on batches of padded episodes.

    Loss: ``k * mean over valid steps of u_b c_t (Q_tot(tau_t, a_t) - G_t)^2`` (``k`` =
    ``learner.td_loss_scale``, 0.5 as the reference) with ``G_t`` the TD(lambda)
    target of :func:`~lightning_marl.targets.td_lambda_targets` built from the target mixer
    evaluated at the online network's greedy actions (double Q), ``c_t`` = 1 (plain TD, the
    default) or the optimistic weight of :func:`td_weights`, and ``u_b`` = 1, or with prioritized
    replay (``data.prioritized``) episode b's importance weight; each update then gives the
    sampled episodes their new priority ``max_t |Q_tot - G_t|`` (returned by ``training_step`` under
    ``"priorities"`` as (replay index, priority); :class:`~lightning_marl.callbacks.priorities.PriorityUpdate`
    writes them back). Gradients are clipped by norm.

    A non-finite loss, gradient norm or parameter stops training with a :class:`DivergenceError`
    naming the update and env step; no checkpoint of a diverged state is written.

    ``agent``, ``mixer`` and ``learner`` are the validated typed configs; the checkpoint keeps them
    as plain values (its hyperparameters), and :meth:`from_saved` builds the module from those.
    """

    def __init__(self, env_info: dict, agent: AgentConfig, mixer: MixerConfig, learner: LearnerConfig):
        super().__init__()
        self.save_hyperparameters({"env_info": dict(env_info), "agent": plain(agent), "mixer": plain(mixer),
                                   "learner": plain(learner)})
        self.env_info = dict(env_info)
        self.learner_cfg = learner_cfg = learner
        n, a = env_info["n_agents"], env_info["n_actions"]
        self.agent = RNNAgent.from_config(agent, env_info["obs_dim"], n, a, env_info.get("obs_grid_shape"),
                                          dueling=mixer.wants_dueling_agent())
        if mixer.needs_central:
            self.central = CentralInfo(mixer.central_info, env_info["state_dim"], n, agent.hidden_dim,
                                       noise_dim=mixer.noise_dim, detach_history=mixer.detach_history)
        else:  # a mixer without centralized information (VDN): a one-value constant stands in
            self.central = CentralInfo(Source.zeros, env_info["state_dim"], n, agent.hidden_dim, noise_dim=1,
                                       detach_history=True)
        self.mixer = mixer.build(n, a, self.central.dim)
        self.mixer_has_diagnostics = mixer.has_diagnostics
        self.diagnose = False  # set for the next update by callbacks.diagnostics.Diagnostics
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.calls = compiled_calls(learner_cfg.compile, agent=self.agent, mixer=self.mixer,
                                    target_agent=self.target_agent, target_mixer=self.target_mixer)
        self.epsilon = float(learner_cfg.epsilon_start)
        self.reward_shaping_factor = 1.0 if env_info.get("shaped_reward") else 0.0
        self.reward_standardizer = RewardStandardizer() if learner_cfg.standardise_rewards else None
        self.last_grad_norm = torch.zeros(())

    @classmethod
    def from_saved(cls, env_info: dict, agent: dict, mixer: dict, learner: dict) -> "MARLModule":
        """The module of a saved run (a checkpoint's hyperparameters, or a run's ``config.yaml``), its
        configs read in today's layout (:func:`lightning_marl.config.migrate.saved_module_configs`)."""
        from lightning_marl.config.migrate import saved_module_configs

        return cls(env_info, *saved_module_configs(agent, mixer, learner))

    # -- acting (the data module's one question to this module) -------------------------
    def acting_policy(self) -> RecurrentPolicy:
        """The agent, epsilon-greedy at the current epsilon, for the data module's collection."""
        return RecurrentPolicy(self.agent, self.epsilon, self.device)

    # -- targets -----------------------------------------------------------------------
    @torch.no_grad()
    def update_targets(self, tau: float = 1.0) -> None:
        """Hard copy (tau = 1) or Polyak average of the online agent and mixer into the targets."""
        # torch's EMA of a list of tensors: one multi-tensor lerp, target += tau (online - target),
        # the same values as a lerp per tensor at a fraction of the per-update overhead
        polyak = get_ema_multi_avg_fn(1.0 - tau)
        for online, target in ((self.agent, self.target_agent), (self.mixer, self.target_mixer)):
            targets = list(target.parameters())
            if targets:  # VDN's mixer has none
                polyak(targets, list(online.parameters()), None)
            for b, tb in zip(online.buffers(), target.buffers()):
                tb.copy_(b)

    # -- loss --------------------------------------------------------------------------
    def td_loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.learner_cfg
        obs, avail, state = batch["obs"], batch["avail"], batch["state"]
        actions, filled = batch["action"], batch["filled"][:, :-1].float()
        reward = batch["reward"][:, :-1]
        if "shaped_reward" in batch.keys() and self.reward_shaping_factor:
            reward = reward + self.reward_shaping_factor * batch["shaped_reward"][:, :-1]
        if self.reward_standardizer is not None:
            self.reward_standardizer.update(reward[:, : int(filled.sum(1).max())])
            reward = self.reward_standardizer(reward)
        call = self.calls  # the modules, or their torch.compile'd versions (learner.compile)
        # the online values at the steps t < T (and, for double Q, its greedy actions at t + 1), the
        # target's at t + 1: a feed-forward agent computes only those steps (RNNAgent.forward)
        q, hidden = call["agent"](obs, actions, avail, slice(None) if cfg.double_q else slice(0, -1))
        if cfg.double_q:
            q_next, q, hidden = q[:, 1:], q[:, :-1], hidden[:, :-1]
        z = self.central(state[:, :-1], hidden)
        q_tot = call["mixer"](q, actions[:, :-1], z, avail[:, :-1])
        with torch.no_grad():
            target_q, target_hidden = call["target_agent"](obs, actions, avail, slice(1, None))
            chooser = q_next if cfg.double_q else target_q
            greedy = chooser.detach().masked_fill(~avail[:, 1:], NEG_INF).argmax(-1)
            next_tot = call["target_mixer"](target_q, greedy, self.central(state[:, 1:], target_hidden),
                                            avail[:, 1:])
            targets = td_lambda_targets(reward, batch["terminated"][:, :-1], batch["filled"][:, :-1],
                                        next_tot, cfg.gamma, cfg.td_lambda)
        td_error = (q_tot - targets) * filled
        n_valid = filled.sum().clamp(min=1)
        weights = td_weights(q_tot.detach(), targets, cfg)
        if WEIGHT_KEY in batch.keys():  # prioritized replay: importance weight of each episode
            weights = weights * batch[WEIGHT_KEY][:, :-1]
        loss = cfg.td_loss_scale * (weights * td_error.pow(2)).sum() / n_valid
        chosen = q.gather(-1, actions[:, :-1].unsqueeze(-1)).squeeze(-1)
        stats = {
            "loss": loss.detach(),
            "td_error_abs": td_error.abs().sum().detach() / n_valid,
            "q_taken_mean": (chosen.detach().mean(-1) * filled).sum() / n_valid,
            "q_tot_mean": (q_tot.detach() * filled).sum() / n_valid,
            "target_mean": (targets * filled).sum() / n_valid,
            "episode_priority": td_error.detach().abs().amax(1),  # [B], for prioritized replay; not logged
        }
        if self.diagnose:
            stats["diagnostics"] = self.diagnostics(batch, q, z, targets, td_error)
        return loss, stats

    @torch.no_grad()
    def diagnostics(self, batch, q: torch.Tensor, z: torch.Tensor, targets: torch.Tensor,
                    td_error: torch.Tensor) -> dict[str, float]:
        """What this update's batch says about the fit (valid steps only): ``td_error_max``, the largest
        |TD error|; ``share_above_greedy`` and ``td_error_above_greedy``, the share of steps whose target
        exceeds the online mixer's value of the greedy joint action, ``Q_tot(s, argmax Q)``, and their
        mean |TD error| (an error no non-greedy action can close: its Q_tot is capped by the greedy
        one's for IGM mixers); ``action_gap``, the agents' best minus second-best utility (over
        available actions, where two are); and the mixer's own values (``mixer/<name>``, mixers with
        ``has_diagnostics``). NaN where no step counts."""
        nan = float("nan")
        valid = batch["filled"][:, :-1]
        avail, actions = batch["avail"][:, :-1], batch["action"][:, :-1]
        qs, zs = q.detach(), z.detach()
        masked = qs.masked_fill(~avail, NEG_INF)
        greedy = masked.argmax(-1)
        above = (targets > self.mixer(qs, greedy, zs, avail)) & valid
        errors = td_error.detach().abs()
        top2 = masked.topk(2, dim=-1).values
        gap = (top2[..., 0] - top2[..., 1])[(avail.sum(-1) >= 2) & valid.unsqueeze(-1)]
        out = {"td_error_max": float(errors[valid].max()) if valid.any() else nan,
               "share_above_greedy": float(above.sum() / valid.sum().clamp(min=1)),
               "td_error_above_greedy": float(errors[above].mean()) if above.any() else nan,
               "action_gap": float(gap.mean()) if gap.numel() else nan}
        if self.mixer_has_diagnostics:
            mixer = self.mixer.diagnostics(qs, actions, zs, avail, greedy, valid, above)
            out.update({f"mixer/{name}": value for name, value in mixer.items()})
        return out

    @torch.no_grad()
    def start_value(self, episodes) -> torch.Tensor:
        """``Q_tot`` of the greedy joint action at the first step of each of ``episodes`` (padded
        episodes as collected): what the learner expects the greedy policy to return, ``[B]``."""
        first = {key: episodes[key][:, :1].to(self.device) for key in ("obs", "avail", "state", "action")}
        q, hidden = self.agent(first["obs"], first["action"], first["avail"])
        greedy = q.masked_fill(~first["avail"], NEG_INF).argmax(-1)
        with torch.random.fork_rng(devices=[]):  # noise z: never a draw that training would have made
            z = self.central(first["state"], hidden)
        return self.mixer(q, greedy, z, first["avail"])[:, 0]

    def training_step(self, dataloader_iter) -> dict[str, Any]:
        # Taking the iterator (instead of a batch) stops Lightning from prefetching the next batch,
        # i.e. from collecting the next round before this update: acting always uses the newest
        # weights, and a resumed run collects exactly what the uninterrupted run would have.
        batch, _, _ = next(dataloader_iter)
        batch = batch.to(self.device, non_blocking=True)
        loss, stats = self.td_loss(batch)
        if not torch.isfinite(loss):
            self.diverged(f"the TD loss is {float(loss)}")
        priority = stats.pop("episode_priority")
        out = {"loss": loss, "stats": stats}  # stats: read by callbacks.train_metrics.TrainMetrics
        if "diagnostics" in stats:  # read by callbacks.diagnostics.Diagnostics
            out["diagnostics"] = stats.pop("diagnostics")
        if WEIGHT_KEY in batch.keys():  # written back to the replay by callbacks.priorities.PriorityUpdate
            out["priorities"] = (batch["index"][:, 0], priority)
        return out

    def diverged(self, what: str) -> None:
        """Stop training: raise a :class:`DivergenceError` naming the update and the env step."""
        raise DivergenceError(f"training diverged at update {self.global_step} "
                              f"(env step {self.trainer.datamodule.env_steps}): {what}; "
                              "allowed: finite values (lower learner.lr, check the rewards)")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # foreach: one multi-tensor op for all parameters instead of one per tensor (the same values)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.learner_cfg.grad_clip, foreach=True)
        if not torch.isfinite(norm):
            self.diverged(f"the gradient norm is {float(norm)}")
        self.last_grad_norm = norm.detach()  # before clipping; logged with the update's stats

    def configure_optimizers(self):
        params = list(self.agent.parameters()) + list(self.mixer.parameters())
        return torch.optim.Adam(params, lr=self.learner_cfg.lr, foreach=True)  # multi-tensor also on the CPU

    # -- checkpoint extras -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never write a diverged state: the last checkpoint stays the last good one
            self.diverged(f"parameters {', '.join(bad[:3])} are not finite")
        checkpoint["marl"] = {"epsilon": self.epsilon, "reward_shaping_factor": self.reward_shaping_factor}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("marl", {})
        self.epsilon = extra.get("epsilon", self.epsilon)
        self.reward_shaping_factor = extra.get("reward_shaping_factor", self.reward_shaping_factor)
