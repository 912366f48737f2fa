"""Train a value-factorization MARL agent: ``python train.py env=<env> mixer=<mixer> seed=<n> ...``."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lightning_marl.experiment import run
from lightning_marl.registry import ConfigError


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        result = run(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    final = result["final"]
    print(f"final greedy evaluation after {result['env_steps']} env steps: "
          + ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k.startswith("test/")))
    print(f"metrics: {result['metrics_csv']}")
    return final.get("test/return_mean", float("nan"))


if __name__ == "__main__":
    main()
