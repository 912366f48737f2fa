"""Train a value-factorization MARL agent: ``python train.py env=<env> mixer=<mixer> seed=<n> ...``.

``python train.py resume=<run folder or .ckpt>`` continues a run in its own folder with its own
config; further ``key=value`` overrides (e.g. ``total_env_steps=200000``) apply on top.
"""
from __future__ import annotations

import sys
from datetime import datetime
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_marl.experiment import find_checkpoint, run
from lightning_marl.registry import ConfigError

GROUPS = ("env", "mixer", "agent", "learner", "trainer", "logger", "experiment")


def session_dir(resume: Optional[str], new_run_dir: str) -> str:
    """Hydra's folder for this session (its log and composed config): a new run's own folder, or for
    ``resume=`` a ``resumed/<time>`` folder inside the resumed run's folder (so one run stays one folder)."""
    if not resume:
        return new_run_dir
    try:
        run_folder, _ = find_checkpoint(str(resume))
    except ConfigError:
        return new_run_dir  # reported by resumed_config once the run starts
    return str(run_folder / "resumed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


OmegaConf.register_new_resolver("session_dir", session_dir, replace=True)


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, str, str]:
    """The resumed run's saved config with this command's plain ``key=value`` overrides on top."""
    run_dir, ckpt = find_checkpoint(cfg.resume)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={cfg.resume!r}: {saved} is missing; allowed: a folder written by train.py")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in GROUPS:
            raise ConfigError(f"{override!r} changes config group {key!r} of a resumed run; allowed when resuming: "
                              "plain key=value overrides such as total_env_steps=200000")
    merged = OmegaConf.merge(OmegaConf.load(saved), OmegaConf.from_dotlist(overrides))
    with open_dict(merged):
        merged.resume = str(cfg.resume)
    return merged, str(run_dir), str(ckpt)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        if cfg.get("resume"):
            cfg, run_dir, ckpt = resumed_config(cfg)
        else:
            run_dir, ckpt = HydraConfig.get().runtime.output_dir, None
        result = run(cfg, run_dir, ckpt_path=ckpt)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    final = result["final"]
    if not result["is_global_zero"]:
        return final.get("test/return_mean", float("nan"))
    print(f"final greedy evaluation after {result['env_steps']} env steps: "
          + ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k.startswith("test/")))
    print(f"metrics: {result['metrics_csv']}")
    return final.get("test/return_mean", float("nan"))


if __name__ == "__main__":
    main()
