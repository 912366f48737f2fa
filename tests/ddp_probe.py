"""Run by tests/test_ddp.py as its own process: trains with DDP on 2 CPU processes (gloo) and
writes, per rank, the optimizer-step count, a copy of the parameters and what the rank collected."""
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_marl.config import load as load_config  # noqa: E402
from lightning_marl.experiment import run  # noqa: E402


class Report(Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        dm = trainer.datamodule
        params = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        first_actions = dm.replay.buffer.storage[0]["action"].flatten()[:50].tolist()
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
                  "optimizer_steps": int(next(iter(trainer.optimizers[0].state.values()))["step"]),
                  "params": params.tolist(), "env_steps": dm.env_steps, "first_actions": first_actions}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":  # ddp_probe.py OUT_FOLDER [extra overrides ...]
    out = Path(sys.argv[1])
    cfg = load_config(["env=box_pushing", "env.horizon=20", "mixer=qmix", "seed=3", "trainer=ddp",
                          "trainer.accelerator=cpu", "trainer.devices=2", "data.num_envs=4", "data.batch_size=8",
                          "data.warmup_episodes=8", "total_env_steps=600", "eval.episodes=4", "eval.num_envs=4",
                          "trainer.enable_progress_bar=false", "learner.target_update_interval=8", *sys.argv[2:]])
    run(cfg, out / "run", extra_callbacks=[Report(out)])
