"""The typed config schema: one dataclass per config node, registered in Hydra's ConfigStore.

This file is the only place a default is written. Each field carries what is allowed in its
metadata (``ge``/``gt``/``le``/``lt`` bounds, ``choices``), which :mod:`lightning_marl.config.validate`
checks and quotes in its error messages. Closed sets are enums. The YAML files under
``configs/`` hold only what differs from these defaults (per-env budgets, experiment presets).

Config groups: ``env`` (one dataclass per env family), ``mixer`` (one per mixer), ``trainer``
(cpu, gpu, ddp) and ``logger`` (csv, tensorboard, wandb, mlflow; several at once); ``data``, ``eval``, ``checkpoint``, ``learner``
and ``agent`` are plain nodes of :class:`TrainConfig`.
"""
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def spec(default: Any = MISSING, help: str = "", *, factory=None, **allowed) -> Any:
    """A dataclass field with its help text and what is allowed (``ge``, ``gt``, ``le``, ``lt``,
    ``choices``, ``even``) in its metadata."""
    meta = {"help": help, **allowed}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class CentralInfo(StrEnum):
    state = "state"
    history = "history"
    history_state = "history_state"
    noise = "noise"
    zeros = "zeros"


class TDWeighting(StrEnum):
    none = "none"
    optimistic = "optimistic"


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
    in_process = "in_process"  # all games stepped in the training process (TorchRL SerialEnv)


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class MatrixGame(StrEnum):
    non_monotonic = "non_monotonic"
    climbing = "climbing"
    penalty = "penalty"
    additive = "additive"


class OvercookedObs(StrEnum):
    featurized = "featurized"
    lossless = "lossless"


class OvercookedState(StrEnum):
    concat = "concat"
    lossless_global = "lossless_global"


# ----------------------------------------------------------------------------- envs
@dataclass
class EnvConfig:
    """Options every env family has."""
    name: str = MISSING
    timeout_as_terminal: bool = spec(False, "true: a time-out is stored as a terminal (no bootstrap), as the "
                                            "QFIX reference and EPyMARL do on SMAC; false: it bootstraps (correct)")


@dataclass
class MatrixEnvConfig(EnvConfig):
    """One-step cooperative matrix games (lightning_marl/envs/matrix.py)."""
    name: str = "matrix"
    game: MatrixGame = spec(MatrixGame.non_monotonic, "a named game; ignored when env.payoff is given")
    payoff: Optional[List[Any]] = spec(None, "an explicit N-dimensional payoff table [A]*N, e.g. '[[1,0],[0,1]]'")
    n_agents: Optional[int] = spec(None, "checked against the payoff's dimensions when set", ge=1)
    penalty_k: float = spec(-100.0, "the penalty game's k")


@dataclass
class BoxPushingEnvConfig(EnvConfig):
    """Box Pushing, Xiao & Amato's primitive-action version (lightning_marl/envs/box_pushing.py)."""
    name: str = "box_pushing"
    grid: int = spec(4, "grid side (even: the big box spans two cells)", ge=4, le=30, even=True)
    n_agents: int = spec(2, "2, or 3 (the third starts below the big box's left half)", choices=(2, 3))
    horizon: int = spec(100, "time limit (truncation, not termination)", ge=1)
    step_reward: float = spec(-0.1, "team reward per step")
    bump_penalty: float = spec(-5.0, "per agent bumping into a wall, the big box alone or a box sideways")
    small_box_reward: float = spec(10.0, "a small box reaching the top row")
    big_box_reward: float = spec(100.0, "the big box reaching the top row")
    random_init: bool = spec(False, "agents anywhere below the boxes' row, random orientation")
    success_prob: float = spec(1.0, "each action succeeds with this probability (0.9: Seuken & Zilberstein)",
                               gt=0.0, le=1.0)


@dataclass
class OvercookedEnvConfig(EnvConfig):
    """Overcooked-AI 1.1.0, two chefs (lightning_marl/envs/overcooked.py)."""
    name: str = "overcooked"
    layout: str = spec("cramped_room", "a two-chef layout of the package (counter_circuit_o_1order is the "
                                       "classic counter circuit)")
    horizon: int = spec(400, "time limit (truncation, not termination)", ge=1)
    obs: OvercookedObs = spec(OvercookedObs.featurized, "featurized (96 per chef) or lossless (26*W*H grids)")
    state: OvercookedState = spec(OvercookedState.concat, "concat (both observations) or lossless_global")


@dataclass
class SMACLiteEnvConfig(EnvConfig):
    """SMACLite (github.com/uoe-agents/smaclite; lightning_marl/envs/smaclite.py)."""
    name: str = "smaclite"
    map: str = spec("2s3z", "a SMACLite map (MMM and MMM2 upper case)")
    use_cpp_rvo2: bool = spec(False, "SMACLite's optional C++ collision solver (docs/smac.md)")
    episode_limit: Optional[int] = spec(None, "null = SMAC's limit of the map", ge=1)


@dataclass
class SMACv2EnvConfig(EnvConfig):
    """SMACv2 through TorchRL's wrapper; needs StarCraft II (lightning_marl/envs/smacv2.py)."""
    name: str = "smacv2"
    map: str = spec("10gen_protoss", "10gen_protoss | 10gen_terran | 10gen_zerg, or a SMAC v1 map")
    n_units: int = spec(5, "allies of the default capability config", ge=1)
    n_enemies: int = spec(5, "enemies of the default capability config", ge=1)
    capability_config: Optional[Dict[str, Any]] = spec(None, "null: SMACv2's example config for the race")
    env_args: Optional[Dict[str, Any]] = spec(None, "extra StarCraft2Env keyword arguments")


ENV_SCHEMAS = {c().name: c for c in (MatrixEnvConfig, BoxPushingEnvConfig, OvercookedEnvConfig, SMACLiteEnvConfig,
                                     SMACv2EnvConfig)}
# env families that batch their games in worker processes (data.env_workers applies to them)
WORKER_ENVS = ("overcooked", "smaclite", "smacv2")


# ----------------------------------------------------------------------------- mixers
@dataclass
class MixerConfig:
    name: str = MISSING


@dataclass
class VDNConfig(MixerConfig):
    """VDN: Q_tot = sum_i Q_i(a_i) (no centralized information)."""
    name: str = "vdn"


@dataclass
class CentralMixerConfig(MixerConfig):
    """Mixers conditioned on centralized information z."""
    central_info: CentralInfo = spec(CentralInfo.state, "z: state | history | history_state | noise | zeros")
    noise_dim: int = spec(16, "size of z for noise / zeros", ge=1)
    detach_history: bool = spec(True, "history z: no gradient from the mixer into the agents' hidden states")


@dataclass
class QMIXConfig(CentralMixerConfig):
    """QMIX: monotone hypernetwork mixing of Q_i(a_i) conditioned on z."""
    name: str = "qmix"
    embed_dim: int = spec(32, "mixing embedding", ge=1)
    hypernet_layers: int = spec(2, "layers of the weight hypernetworks", choices=(1, 2))
    hypernet_embed: int = spec(64, "hidden size of 2-layer hypernetworks", ge=1)


@dataclass
class QPLEXConfig(CentralMixerConfig):
    """QPLEX: Q_tot = sum_i Q_i'(a_i) + sum_i (lambda_i(z,a) - 1) sg(A_i')."""
    name: str = "qplex"
    hypernet_embed: int = spec(64, "w_i(z), v_i(z) of the weighted head", ge=1)
    adv_hypernet_layers: int = spec(2, "layers per attention extractor", choices=(1, 2, 3))
    adv_hypernet_embed: int = spec(64, "hidden size of the attention extractors", ge=1)
    num_kernel: int = spec(4, "K attention kernels for lambda_i(z, a)", ge=1)
    is_minus_one: bool = spec(True, "(lambda_i - 1) sg(A_i') rather than lambda_i sg(A_i')")
    weighted_head: bool = spec(True, "Q_i' = w_i(z) Q_i + v_i(z) (false: Q_i' = Q_i)")
    stop_gradient: bool = spec(True, "sg() on the advantages A_i'")


@dataclass
class DuelMIXConfig(CentralMixerConfig):
    """DuelMIX: Q_tot = sum_i w_i(z) V_i + b(z) + sum_i lambda_i(z,a) A_i (the weighted history mixer)."""
    name: str = "duelmix"
    central_info: CentralInfo = spec(CentralInfo.history, "z: state | history | history_state | noise | zeros")
    dueling_agent: bool = spec(True, "the agents get dueling heads V_i + A_i")
    hypernet_layers: int = spec(2, "layers of w_i(z)", choices=(1, 2, 3))
    hypernet_embed: int = spec(64, "hidden size of w_i(z)", ge=1)
    adv_hypernet_layers: int = spec(2, "layers of lambda_i(z, a)", choices=(1, 2, 3))
    adv_hypernet_embed: int = spec(64, "hidden size of lambda_i(z, a)", ge=1)


@dataclass
class QFIXConfig(CentralMixerConfig):
    """QFIX-sum / QFIX-lin: Q_tot = w(z,a) A_f + b(z), w = |g([z; onehot(a)]) - t| + t + 1e-10 > t."""
    w_lower_bound: float = spec(0.0, "t in w = |g - t| + t + 1e-10 (IGM needs t >= 0 for QFIX)", ge=0.0)
    w_hidden: int = spec(64, "g: hidden size", ge=1)
    w_layers: int = spec(2, "layers of g (2 = one hidden layer)", ge=1)
    b_hidden: int = spec(64, "b(z): hidden size", ge=1)


@dataclass
class QPlusFIXConfig(QFIXConfig):
    """Q+FIX-sum / Q+FIX-lin: Q_tot = Q_f + w(z,a) sg(A_f) + b(z), w > t >= -1."""
    w_lower_bound: float = spec(-1.0, "t in w = |g - t| + t + 1e-10 (IGM needs t >= -1 for Q+FIX)", ge=-1.0)
    detach_advantage: bool = spec(False, "sg() on the fixee advantage (the reference's main runs: false; "
                                         "true is its -detach ablation)")


@dataclass
class MonoFixee:
    """The light QMIX fixee of the -mono variants."""
    embed_dim: int = spec(32, "the light QMIX fixee's embedding", ge=1)
    hypernet_layers: int = spec(1, "layers of the fixee's hypernetworks", choices=(1, 2))
    hypernet_embed: int = spec(64, "hidden size of 2-layer hypernetworks", ge=1)


@dataclass
class QFIXSumConfig(QFIXConfig):
    name: str = "qfix_sum"


@dataclass
class QFIXLinConfig(QFIXConfig):
    name: str = "qfix_lin"


@dataclass
class QFIXMonoConfig(QFIXConfig, MonoFixee):
    name: str = "qfix_mono"


@dataclass
class QPlusFIXSumConfig(QPlusFIXConfig):
    name: str = "qplusfix_sum"


@dataclass
class QPlusFIXLinConfig(QPlusFIXConfig):
    name: str = "qplusfix_lin"


@dataclass
class QPlusFIXMonoConfig(QPlusFIXConfig, MonoFixee):
    name: str = "qplusfix_mono"


MIXER_SCHEMAS = {c().name: c for c in (VDNConfig, QMIXConfig, QPLEXConfig, DuelMIXConfig, QFIXSumConfig,
                                       QFIXMonoConfig, QFIXLinConfig, QPlusFIXSumConfig, QPlusFIXMonoConfig,
                                       QPlusFIXLinConfig)}


# ----------------------------------------------------------------------------- the rest
@dataclass
class AgentConfig:
    """The recurrent agent shared by all agents: fc -> ReLU -> GRU -> fc."""
    hidden_dim: int = spec(64, "GRU hidden size", ge=1)
    agent_id: bool = spec(True, "one-hot agent id in the input")
    last_action: bool = spec(True, "one-hot last action in the input")
    dueling: bool = spec(False, "V_i + A_i heads (DuelMIX turns them on through mixer.dueling_agent)")
    torso: Torso = spec(Torso.mlp, "mlp, or cnn: two 3x3 convolutions over grid observations")


@dataclass
class LearnerConfig:
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
    compile: Optional[str] = spec(None, "null, or a torch.compile backend (inductor, eager, aot_eager, ...)")


@dataclass
class DataConfig:
    """Collection and replay."""
    num_envs: int = spec(8, "games per collection round (one episode each)", ge=1)
    buffer_size: int = spec(5000, "replay capacity, in episodes", ge=1)
    batch_size: int = spec(32, "episodes per sampled batch", ge=1)
    updates_per_round: int = spec(1, "gradient updates per collection round", ge=1)
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
class EvalConfig:
    interval_env_steps: int = spec(2000, "greedy evaluation every this many env steps (0 = only at the end)", ge=0)
    episodes: int = spec(32, "greedy episodes per evaluation", ge=1)
    num_envs: int = spec(8, "evaluation games played at once", ge=1)
    env: Dict[str, Any] = spec(help="env options that differ in the evaluation games, e.g. eval.env.random_init=false "
                                    "(add keys with +eval.env.<option>=...)", factory=dict)


@dataclass
class CheckpointConfig:
    every_n_updates: int = spec(500, "periodic checkpoint (0 = only the final one)", ge=0)
    replay: bool = spec(True, "keep the replay contents in checkpoints")
    keep_all: bool = spec(False, "keep every periodic checkpoint (false: only the newest, and last.ckpt)")


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments."""
    accelerator: str = spec("cpu", "cpu | gpu | auto", choices=("cpu", "gpu", "cuda", "auto"))
    devices: int = spec(1, "processes / GPUs per node", ge=1)
    num_nodes: int = spec(1, "nodes (torchrun or SLURM launch the processes)", ge=1)
    strategy: str = spec("auto", "auto | ddp | ...")
    precision: str = spec("32-true", "Lightning precision")
    log_every_n_steps: int = spec(10, "metrics every this many updates", ge=1)
    enable_progress_bar: bool = spec(True, "")


@dataclass
class CSVLoggerConfig:
    """``metrics.csv`` in the run folder: one row per logged update (column ``step``, the update's
    index) with its ``env_steps``; a resumed run continues the file."""


@dataclass
class TensorBoardLoggerConfig:
    """TensorBoard event files in the run folder, against env steps (pip install '.[tensorboard]')."""


@dataclass
class WandbLoggerConfig:
    """Weights & Biases, against env steps; files under ``<run folder>/wandb`` (pip install '.[wandb]')."""
    project: str = spec("lightning_marl", "W&B project")
    entity: Optional[str] = spec(None, "W&B team or user (null: your default entity)")
    group: Optional[str] = spec(None, "W&B group (e.g. one per study)")
    tags: List[str] = spec(factory=list, help="W&B tags")
    mode: WandbMode = spec(WandbMode.online, "online | offline (sync later with `wandb sync`) | disabled")


@dataclass
class MLflowLoggerConfig:
    """MLflow, against env steps (pip install '.[mlflow]')."""
    tracking_uri: Optional[str] = spec(None, "MLflow tracking URI, e.g. sqlite:///mlflow.db or http://host:5000 "
                                             "(null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working folder)")
    experiment_name: str = spec("lightning_marl", "MLflow experiment")
    run_name: Optional[str] = spec(None, "MLflow run name (null: the run folder's name)")


@dataclass
class LoggerConfig:
    """The loggers a run writes to: any of csv, tensorboard, wandb, mlflow (``logger=[csv,wandb]``;
    a field left null is a logger not used)."""
    csv: Optional[CSVLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None
    mlflow: Optional[MLflowLoggerConfig] = None


@dataclass
class TrainConfig:
    """``python train.py``: the whole config."""
    env: Any = MISSING
    mixer: Any = MISSING
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


TRAINERS = {
    "cpu": TrainerConfig(),
    "gpu": TrainerConfig(accelerator="gpu"),
    "ddp": TrainerConfig(accelerator="auto", devices=2, strategy="ddp"),
}
# each logger option fills its own field of LoggerConfig, so several combine (logger=[csv,wandb])
LOGGERS = {"csv": CSVLoggerConfig, "tensorboard": TensorBoardLoggerConfig, "wandb": WandbLoggerConfig,
           "mlflow": MLflowLoggerConfig}


def register() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name, schema in ENV_SCHEMAS.items():
        store.store(group="env", name=name, node=schema)
    for name, schema in MIXER_SCHEMAS.items():
        store.store(group="mixer", name=name, node=schema)
    for name, node in TRAINERS.items():
        store.store(group="trainer", name=name, node=node)
    for name, node in LOGGERS.items():
        store.store(group="logger", name=name, node={name: node})


register()
