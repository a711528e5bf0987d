"""DRaFT-K reward finetuning (CRAFT stage 2): ``TrainConfig`` and ``DraftKTrainer``.

>>> config = TrainConfig.from_file("examples/craft_tiny.yaml")
>>> trainer = DraftKTrainer(config=config)      # model, rewards and data from the config
>>> trainer.train()                             # writes <output_dir>/lora (diffusers format + clinalign_meta.json)
"""

from clinalign.training.config import KNOWN_REWARDS, TrainConfig
from clinalign.training.data import TrainExample, load_checklists, load_examples
from clinalign.training.hacking import HackingVerdict, detect_reward_hacking
from clinalign.training.resume import TRAJECTORY_NEUTRAL, ConfigChange, check_resume_config, config_changes
from clinalign.training.signals import StopRequest, TrainingInterrupted
from clinalign.training.trainer import (
    META_NAME,
    DraftKTrainer,
    RewardHackingWarning,
    TrainingDivergedError,
    TrainOutput,
    build_rewards,
    train_from_config,
    warm_text_caches,
)

__all__ = [
    "KNOWN_REWARDS",
    "META_NAME",
    "TRAJECTORY_NEUTRAL",
    "ConfigChange",
    "DraftKTrainer",
    "HackingVerdict",
    "RewardHackingWarning",
    "StopRequest",
    "TrainConfig",
    "TrainExample",
    "TrainOutput",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_rewards",
    "check_resume_config",
    "config_changes",
    "detect_reward_hacking",
    "load_checklists",
    "load_examples",
    "train_from_config",
    "warm_text_caches",
]
