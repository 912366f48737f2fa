"""The LightningModule: a shared recurrent agent, a pluggable mixer, their target copies, and the
double-Q TD(lambda) loss."""
from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch

from lightning_marl.data.priority import WEIGHT_KEY
from lightning_marl.models.agent import RNNAgent
from lightning_marl.models.central import CentralInfo
from lightning_marl.models.mixers import build_mixer
from lightning_marl.models.mixers.base import NEG_INF
from lightning_marl.registry import ConfigError
from lightning_marl.targets import td_lambda_targets

CENTRAL_KEYS = ("name", "central_info", "noise_dim", "detach_history", "dueling_agent")


def compiled_calls(setting: Any, **modules: torch.nn.Module) -> dict[str, Any]:
    """The callables the loss uses: the modules themselves, or ``torch.compile`` of them
    (``learner.compile``: false, true = inductor, or a backend name such as ``eager`` or
    ``aot_eager``; dynamic shapes, since batches are trimmed to their longest episode). The
    modules stay as they are, so checkpoints and acting (``agent.step``) do not change."""
    if setting is False or setting is None:
        return dict(modules)
    backend = "inductor" if setting is True else str(setting)
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(f"learner.compile={setting!r} is out of range; allowed: false, true (inductor) or a "
                          f"torch.compile backend: {', '.join(torch._dynamo.list_backends())}")
    return {name: torch.compile(module, backend=backend, dynamic=True) for name, module in modules.items()}


def td_weights(q_tot: torch.Tensor, targets: torch.Tensor, cfg: dict) -> torch.Tensor | float:
    """Per-step loss weights ``c_t``: 1 for ``learner.td_weighting=none``; for ``optimistic``,
    ``c_t = 1`` where ``Q_tot < G_t`` (underestimated joint actions) and ``alpha`` elsewhere: the
    optimistic weighting of OW-QMIX (Rashid et al., 2020, "Weighted QMIX"), here on the TD loss of
    any mixer, so that a rarely tried better joint action is not averaged away by worse ones."""
    mode = cfg.get("td_weighting", "none")
    if mode == "none":
        return 1.0
    if mode == "optimistic":
        return torch.where(q_tot < targets, 1.0, float(cfg.get("optimistic_alpha", 0.1)))
    raise ConfigError(f"learner.td_weighting={mode!r} is out of range; allowed: none, optimistic")


class MARLModule(L.LightningModule):
    """Agents + mixer + targets, trained on batches of padded episodes.

    Loss: ``mean over valid steps of u_b c_t (Q_tot(tau_t, a_t) - G_t)^2`` with ``G_t`` the TD(lambda)
    target of :func:`~lightning_marl.targets.td_lambda_targets` built from the target mixer
    evaluated at the online network's greedy actions (double Q), ``c_t`` = 1 (plain TD, the
    default) or the optimistic weight of :func:`td_weights`, and ``u_b`` = 1, or with prioritized
    replay (``data.prioritized``) episode b's importance weight; each update then gives the
    sampled episodes their new priority ``max_t |Q_tot - G_t|``. Gradients are clipped by norm.
    """

    def __init__(self, env_info: dict, agent: dict, mixer: dict, learner: dict):
        super().__init__()
        self.save_hyperparameters()
        self.env_info, self.learner_cfg = dict(env_info), dict(learner)
        n, a = env_info["n_agents"], env_info["n_actions"]
        mixer = dict(mixer)
        self.agent = RNNAgent(env_info["obs_dim"], n, a, hidden_dim=agent["hidden_dim"],
                              agent_id=agent["agent_id"], last_action=agent["last_action"],
                              dueling=bool(agent.get("dueling", False) or mixer.get("dueling_agent", False)),
                              torso=agent.get("torso", "mlp"), obs_grid_shape=env_info.get("obs_grid_shape"))
        self.central = CentralInfo(mixer.get("central_info", "state"), env_info["state_dim"], n, agent["hidden_dim"],
                                   noise_dim=mixer.get("noise_dim", 16),
                                   detach_history=mixer.get("detach_history", True))
        params = {k: v for k, v in mixer.items() if k not in CENTRAL_KEYS}
        self.mixer = build_mixer(mixer["name"], n_agents=n, n_actions=a, central_dim=self.central.dim, **params)
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.calls = compiled_calls(learner.get("compile", False), agent=self.agent, mixer=self.mixer,
                                    target_agent=self.target_agent, target_mixer=self.target_mixer)
        self.epsilon = float(learner["epsilon_start"])
        self.reward_shaping_factor = 1.0 if env_info.get("shaped_reward") else 0.0

    # -- targets -----------------------------------------------------------------------
    @torch.no_grad()
    def update_targets(self, tau: float = 1.0) -> None:
        """Hard copy (tau = 1) or Polyak average of the online agent and mixer into the targets."""
        for online, target in ((self.agent, self.target_agent), (self.mixer, self.target_mixer)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.lerp_(p, tau)
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
        call = self.calls  # the modules, or their torch.compile'd versions (learner.compile)
        q, hidden = call["agent"](obs, actions, avail)
        z = self.central(state, hidden)
        q_tot = call["mixer"](q[:, :-1], actions[:, :-1], z[:, :-1], avail[:, :-1])
        with torch.no_grad():
            target_q, target_hidden = call["target_agent"](obs, actions, avail)
            chooser = q if cfg.get("double_q", True) else target_q
            greedy = chooser.detach().masked_fill(~avail, NEG_INF).argmax(-1)
            target_tot = call["target_mixer"](target_q, greedy, self.central(state, target_hidden), avail)
            targets = td_lambda_targets(reward, batch["terminated"][:, :-1], batch["filled"][:, :-1],
                                        target_tot, cfg["gamma"], cfg["td_lambda"])
        td_error = (q_tot - targets) * filled
        n_valid = filled.sum().clamp(min=1)
        weights = td_weights(q_tot.detach(), targets, cfg)
        if WEIGHT_KEY in batch.keys():  # prioritized replay: importance weight of each episode
            weights = weights * batch[WEIGHT_KEY][:, :-1]
        loss = (weights * td_error.pow(2)).sum() / n_valid
        chosen = q[:, :-1].gather(-1, actions[:, :-1].unsqueeze(-1)).squeeze(-1)
        stats = {
            "loss": loss.detach(),
            "td_error_abs": td_error.abs().sum().detach() / n_valid,
            "q_taken_mean": (chosen.detach().mean(-1) * filled).sum() / n_valid,
            "q_tot_mean": (q_tot.detach() * filled).sum() / n_valid,
            "target_mean": (targets * filled).sum() / n_valid,
            "episode_priority": td_error.detach().abs().amax(1),  # [B], for prioritized replay; not logged
        }
        return loss, stats

    def training_step(self, dataloader_iter) -> torch.Tensor:
        # Taking the iterator (instead of a batch) stops Lightning from prefetching the next batch,
        # i.e. from collecting the next round before this update: acting always uses the newest
        # weights, and a resumed run collects exactly what the uninterrupted run would have.
        batch, _, _ = next(dataloader_iter)
        batch = batch.to(self.device, non_blocking=True)
        loss, stats = self.td_loss(batch)
        priority = stats.pop("episode_priority")
        if WEIGHT_KEY in batch.keys():
            self.trainer.datamodule.update_priorities(batch["index"][:, 0], priority)
        if self._logging_step():
            self.log_metrics(stats)
        return loss

    def _logging_step(self) -> bool:
        """Lightning only writes every ``log_every_n_steps``; skip the (slow) self.log calls in between."""
        return self.trainer._logger_connector.should_update_logs

    def log_metrics(self, stats: dict[str, torch.Tensor]) -> None:
        dm = self.trainer.datamodule
        metrics = {f"train/{k}": float(v) for k, v in stats.items() if k != "loss"}
        metrics.update({f"train/{k}": v for k, v in dm.last_stats.items()})
        metrics.update({"loss": float(stats["loss"]), "env_steps": float(dm.env_steps),
                        "episodes": float(dm.episodes), "epsilon": self.epsilon,
                        "env_steps_per_s": dm.env_steps_per_second()})
        self.log_dict(metrics, on_step=True, batch_size=1, sync_dist=self.trainer.world_size > 1)
        self.log_dict({"ret": dm.last_stats.get("return", 0.0), "steps": float(dm.env_steps), "eps": self.epsilon},
                      on_step=True, prog_bar=True, logger=False, batch_size=1)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.learner_cfg["grad_clip"])
        if self._logging_step():
            self.log("train/grad_norm", float(norm), on_step=True, batch_size=1)

    def configure_optimizers(self):
        params = list(self.agent.parameters()) + list(self.mixer.parameters())
        return torch.optim.Adam(params, lr=self.learner_cfg["lr"])

    # -- checkpoint extras -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["marl"] = {"epsilon": self.epsilon, "reward_shaping_factor": self.reward_shaping_factor}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("marl", {})
        self.epsilon = extra.get("epsilon", self.epsilon)
        self.reward_shaping_factor = extra.get("reward_shaping_factor", self.reward_shaping_factor)
