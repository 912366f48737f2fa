"""The typed config schema of a training job: one dataclass per config node, registered in Hydra's
ConfigStore.

Defaults are written once, in the dataclass that owns the value: here for the run, the learner, the
agent, collection and replay, evaluation, checkpoints, the trainer and the loggers; in each
environment's file (``lightning_marl/envs/<family>.py``) for its options; in each mixer's file
(``lightning_marl/models/mixers/<mixer>.py``) for the mixer. Each field carries what is allowed in its
metadata (``ge``/``gt``/``le``/``lt`` bounds, ``choices``, ``even``), which
:mod:`lightning_marl.config.validate` checks and quotes in its error messages. Closed sets are enums.
The YAML files under ``configs/`` hold only what differs from these defaults (per-env budgets,
experiment presets).

The validation (:func:`lightning_marl.config.validate.to_typed`) returns a :class:`TrainConfig` whose
nodes are frozen (:func:`freeze`): code below the edge reads values, never changes them.
"""
import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def spec(default: Any = MISSING, help: str = "", *, factory=None, **allowed) -> Any:
    """A dataclass field with its help text and what is allowed (``ge``, ``gt``, ``le``, ``lt``,
    ``choices``, ``even``) in its metadata."""
    meta = {"help": help, **allowed}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Frozen:
    """A config node that :func:`freeze` makes read-only (Hydra composes into the same dataclasses,
    so they cannot be ``frozen=True`` dataclasses: OmegaConf makes those nodes read-only before the
    overrides are merged). ``dataclasses.replace`` gives a changed, unfrozen copy."""

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {key!r}: the validated config is "
                                                  "read-only (dataclasses.replace makes a changed copy)")
        object.__setattr__(self, key, value)


class FrozenDict(dict):
    """A read-only dict (a frozen config's mapping option); pickles and copies as itself, so a frozen
    config travels to worker processes."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("the validated config is read-only (dataclasses.replace makes a changed copy)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return FrozenDict, (dict(self),)


def freeze(node: Any) -> Any:
    """Make a config node and every node below it read-only (mappings become :class:`FrozenDict`,
    lists tuples); returns ``node``."""
    if isinstance(node, Frozen):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, dict):
                value = FrozenDict({k: freeze(v) for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(freeze(v) for v in value)
            else:
                freeze(value)
            object.__setattr__(node, f.name, value)
        object.__setattr__(node, "_frozen", True)
    return node


def plain(node: Any) -> Any:
    """A config node as plain containers (enums as their values), e.g. for hyperparameters and YAML."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return {f.name: plain(getattr(node, f.name)) for f in dataclasses.fields(node)}
    if isinstance(node, Enum):
        return node.value
    if isinstance(node, Mapping):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class TDWeighting(StrEnum):
    none = "none"
    optimistic = "optimistic"


class Activation(StrEnum):
    relu = "relu"
    tanh = "tanh"


class Torso(StrEnum):
    mlp = "mlp"
    cnn = "cnn"


class StartMethod(StrEnum):
    spawn = "spawn"
    fork = "fork"
    forkserver = "forkserver"


class EnvWorkers(StrEnum):
    auto = "auto"              # worker processes only with more CPU cores than games
    processes = "processes"    # one worker process per game (TorchRL ParallelEnv)
    in_process = "in_process"  # all games stepped in the training process (SerialEnv; LBF, RWARE, MPE: LoopedGames)


class SampleUnit(StrEnum):
    episodes = "episodes"        # whole episodes (recurrent agents, lambda-returns, prioritized replay)
    transitions = "transitions"  # single steps with their next observation, uniform over the stored steps


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class AgentConfig(Frozen):
    """The agent network shared by all agents: fc -> activation -> GRU -> fc, or with ``recurrent: false``
    fc -> activation -> fc -> activation -> fc (EPyMARL's feed-forward agent, BenchMARL's MLP)."""
    hidden_dim: int = spec(64, "hidden size (the GRU's, or each hidden layer's)", ge=1)
    recurrent: bool = spec(True, "a GRU layer; false: a feed-forward layer (no memory of earlier steps)")
    activation: Activation = spec(Activation.relu, "after the hidden layers (fc_in; and the feed-forward layer)")
    agent_id: bool = spec(True, "one-hot agent id in the input")
    last_action: bool = spec(True, "one-hot last action in the input")
    dueling: bool = spec(False, "V_i + A_i heads (DuelMIX turns them on through mixer.dueling_agent)")
    torso: Torso = spec(Torso.mlp, "mlp, or cnn: two 3x3 convolutions over grid observations")


@dataclass
class LearnerConfig(Frozen):
    """Double-Q TD(lambda) learner; defaults follow the QFIX reference (docs/reference.md)."""
    lr: float = spec(0.001, "Adam learning rate", gt=0.0)
    gamma: float = spec(0.99, "discount", ge=0.0, le=1.0)
    td_lambda: float = spec(0.6, "TD(lambda)", ge=0.0, le=1.0)
    double_q: bool = spec(True, "target mixer at the online network's greedy actions")
    grad_clip: float = spec(10.0, "gradient norm clip", gt=0.0)
    td_loss_scale: float = spec(0.5, "loss = scale * sum(masked TD error^2) / valid steps (0.5: the reference; "
                                     "1: the plain mean squared TD error)", gt=0.0)
    target_update_interval: int = spec(200, "hard target update every N episodes (0 = soft updates)", ge=0)
    target_tau: float = spec(0.005, "soft update rate when target_update_interval = 0", gt=0.0, le=1.0)
    td_weighting: TDWeighting = spec(TDWeighting.none, "none, or optimistic (OW-QMIX weighting of the TD loss)")
    optimistic_alpha: float = spec(0.1, "loss weight where Q_tot >= target (td_weighting=optimistic)",
                                   gt=0.0, le=1.0)
    epsilon_start: float = spec(1.0, "", ge=0.0, le=1.0)
    epsilon_finish: float = spec(0.05, "", ge=0.0, le=1.0)
    epsilon_anneal_steps: int = spec(100_000, "linear, in env steps", ge=0)
    intervention_anneal_steps: int = spec(0, "QFIX lambda_D 0 -> 1 over this many env steps (0 = off)", ge=0)
    shaping_anneal_steps: int = spec(0, "shaped-reward factor 1 -> 0 over this many env steps (envs with a "
                                        "shaped reward, e.g. Overcooked; 0 = no shaping)", ge=0)
    standardise_rewards: bool = spec(False, "EPyMARL's standardise_rewards: TD targets use (r - mean) / std, the "
                                            "running moments of the sampled batches' rewards")
    compile: Optional[str] = spec(None, "null, or a torch.compile backend (inductor, eager, aot_eager, ...)")


@dataclass
class DataConfig(Frozen):
    """Collection and replay."""
    num_envs: int = spec(8, "games per collection round (one episode each)", ge=1)
    buffer_size: int = spec(5000, "replay capacity, in episodes", ge=1)
    batch_size: int = spec(32, "episodes (transitions with data.sample=transitions) per sampled batch", ge=1)
    sample: SampleUnit = spec(SampleUnit.episodes, "what a batch is made of: whole episodes, or transitions (a step "
                                                   "and its next observation) drawn uniformly over the stored steps, "
                                                   "as BenchMARL's replay; transitions need agent.recurrent=false, "
                                                   "agent.last_action=false, learner.td_lambda=0 and uniform replay")
    updates_per_round: int = spec(1, "gradient updates per collection round", ge=1)
    round_env_steps: Optional[int] = spec(None, "S: updates_per_round per S env steps instead of per round (a round "
                                                "of s steps gets updates_per_round * s / S, the remainder carried "
                                                "over; BenchMARL's optimizer steps per frames collected); null = per "
                                                "round", ge=1)
    warmup_episodes: int = spec(32, "no update before the replay holds this many episodes", ge=0)
    collector_processes: int = spec(0, "P > 0: P worker processes of TorchRL's collector own the training "
                                       "games and play while the learner trains (0 = in-process, bitwise "
                                       "reproducible)", ge=0)
    env_workers: EnvWorkers = spec(EnvWorkers.auto, "how games of env families with worker processes "
                                                    "(overcooked, smaclite, smacv2) are batched")
    start_method: Optional[StartMethod] = spec(None, "multiprocessing start method of env and collector workers "
                                                     "(null = spawn; fork starts faster)")
    prioritized: bool = spec(False, "prioritized replay of whole episodes")
    priority_alpha: float = spec(0.6, "P(i) ~ priority^alpha", ge=0.0)
    priority_beta: float = spec(0.4, "importance-weight exponent, annealed to 1", ge=0.0, le=1.0)
    priority_beta_anneal_steps: Optional[int] = spec(None, "env steps for beta to reach 1 (null = the budget)",
                                                     ge=1)


@dataclass
class EvalConfig(Frozen):
    interval_env_steps: int = spec(2000, "greedy evaluation every this many env steps, after the updates of the "
                                         "round that passes them (0 = only at the end)", ge=0)
    episodes: int = spec(32, "greedy episodes per evaluation", ge=1)
    num_envs: int = spec(8, "evaluation games played at once", ge=1)
    epsilon: float = spec(0.0, "exploration of the test episodes (0: greedy; EPyMARL's benchmark paper: 0.05 on RWARE)",
                          ge=0.0, le=1.0)
    env: Dict[str, Any] = spec(help="env options that differ in the evaluation games, e.g. +eval.env.random_init=false "
                                    "(Hydra's + adds a key)", factory=dict)


@dataclass
class DiagnosticsConfig(Frozen):
    """What the mixer and the TD error look like during training (``diag/*`` in every logger): the
    largest TD error, the error where the target exceeds the greedy joint action's value, the
    agents' action gap, replay priorities, the mixer's own values (QFIX: its fixing weight w), and
    Q_tot at the first step of greedy test episodes (``test/q_tot_start_mean``)."""
    every_n_updates: int = spec(50, "diagnostics on every this many updates (0 = off)", ge=0)


@dataclass
class CheckpointConfig(Frozen):
    every_n_updates: int = spec(500, "periodic checkpoint (0 = only the final one)", ge=0)
    replay: bool = spec(True, "keep the replay contents in checkpoints")
    keep_all: bool = spec(False, "keep every periodic checkpoint (false: only the newest, and last.ckpt)")


@dataclass
class TrainerConfig(Frozen):
    """Lightning Trainer arguments."""
    accelerator: str = spec("cpu", "cpu | gpu | auto", choices=("cpu", "gpu", "cuda", "auto"))
    devices: int = spec(1, "processes / GPUs per node", ge=1)
    num_nodes: int = spec(1, "nodes (torchrun or SLURM launch the processes)", ge=1)
    strategy: str = spec("auto", "auto | ddp | ...")
    precision: str = spec("32-true", "Lightning precision")
    log_every_n_steps: int = spec(10, "metrics every this many updates", ge=1)
    enable_progress_bar: bool = spec(True, "")


@dataclass
class CSVLoggerConfig(Frozen):
    """``metrics.csv`` in the run folder: one row per logged update (column ``step``, the update's
    index) with its ``env_steps``; a resumed run continues the file."""


@dataclass
class TensorBoardLoggerConfig(Frozen):
    """TensorBoard event files in the run folder, against env steps (pip install '.[tensorboard]')."""


@dataclass
class WandbLoggerConfig(Frozen):
    """Weights & Biases, against env steps; files under ``<run folder>/wandb`` (pip install '.[wandb]')."""
    project: str = spec("lightning_marl", "W&B project")
    entity: Optional[str] = spec(None, "W&B team or user (null: your default entity)")
    group: Optional[str] = spec(None, "W&B group (e.g. one per study)")
    tags: List[str] = spec(factory=list, help="W&B tags")
    mode: WandbMode = spec(WandbMode.online, "online | offline (sync later with `wandb sync`) | disabled")


@dataclass
class MLflowLoggerConfig(Frozen):
    """MLflow, against env steps (pip install '.[mlflow]')."""
    tracking_uri: Optional[str] = spec(None, "MLflow tracking URI, e.g. sqlite:///mlflow.db or http://host:5000 "
                                             "(null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working "
                                                 "folder)")
    experiment_name: str = spec("lightning_marl", "MLflow experiment")
    run_name: Optional[str] = spec(None, "MLflow run name (null: the run folder's name)")


@dataclass
class LoggerConfig(Frozen):
    """The loggers a run writes to: any of csv, tensorboard, wandb, mlflow (``logger=[csv,wandb]``;
    a field left null is a logger not used)."""
    csv: Optional[CSVLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None
    mlflow: Optional[MLflowLoggerConfig] = None


@dataclass
class TrainConfig(Frozen):
    """``python train.py``: the whole config."""
    env: Any = MISSING    # the chosen env family's config (lightning_marl/envs/<family>.py)
    mixer: Any = MISSING  # the chosen mixer's config (lightning_marl/models/mixers/<mixer>.py)
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = spec(0, "", ge=0)
    total_env_steps: int = spec(20_000, "training budget in env steps (summed over games)", ge=1)
    device: str = spec("cpu", "where torch-native envs and acting live: cpu or cuda[:N]")
    threads: Optional[int] = spec(1, "torch intra-op threads (null = torch's default)", ge=1)
    resume: Optional[str] = spec(None, "a run folder or a .ckpt file to continue from")
    data: DataConfig = spec(factory=DataConfig)
    eval: EvalConfig = spec(factory=EvalConfig)
    checkpoint: CheckpointConfig = spec(factory=CheckpointConfig)
    learner: LearnerConfig = spec(factory=LearnerConfig)
    agent: AgentConfig = spec(factory=AgentConfig)
    diagnostics: DiagnosticsConfig = spec(factory=DiagnosticsConfig)


TRAINERS = {
    "cpu": TrainerConfig(),
    "gpu": TrainerConfig(accelerator="gpu"),
    "ddp": TrainerConfig(accelerator="auto", devices=2, strategy="ddp"),
}
# each logger option fills its own field of LoggerConfig, so several combine (logger=[csv,wandb])
LOGGERS = {"csv": CSVLoggerConfig, "tensorboard": TensorBoardLoggerConfig, "wandb": WandbLoggerConfig,
           "mlflow": MLflowLoggerConfig}


def register() -> None:
    """Put the run's schema, the trainers and the loggers into Hydra's ConfigStore (idempotent); env
    families and mixers put themselves there when they register (:mod:`lightning_marl.registry`)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name, node in TRAINERS.items():
        store.store(group="trainer", name=name, node=node)
    for name, node in LOGGERS.items():
        store.store(group="logger", name=name, node={name: node})


register()
