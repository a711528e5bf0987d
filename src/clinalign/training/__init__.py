"""Training on one shared core: DRaFT-K reward finetuning (CRAFT stage 2, ``DraftKTrainer``/``TrainConfig``),
textual inversion (``TextualInversionTrainer``/``TIConfig``) and Diffusion-DPO (``DiffusionDPOTrainer``/``DPOConfig``).

>>> config = TrainConfig.from_file("examples/craft_tiny.yaml")
>>> trainer = DraftKTrainer(config=config)      # model, rewards and data from the config
>>> trainer.train()                             # writes <output_dir>/lora (diffusers format + clinalign_meta.json)
"""

from clinalign.training.config import KNOWN_REWARDS, METHODS, BaseTrainConfig, TrainConfig
from clinalign.training.core import LossOutput, TrainBatch, Trainer
from clinalign.training.data import TrainExample, load_checklists, load_examples
from clinalign.training.dpo import DiffusionDPOTrainer, DPOConfig, diffusion_dpo_loss, load_pairs
from clinalign.training.hacking import HackingVerdict, detect_reward_hacking
from clinalign.training.methods import load_train_config
from clinalign.training.resume import TRAJECTORY_NEUTRAL, ConfigChange, check_resume_config, config_changes
from clinalign.training.signals import StopRequest, TrainingInterrupted
from clinalign.training.textual_inversion import TextualInversionTrainer, TIConfig
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
    "METHODS",
    "TRAJECTORY_NEUTRAL",
    "BaseTrainConfig",
    "ConfigChange",
    "DPOConfig",
    "DiffusionDPOTrainer",
    "DraftKTrainer",
    "HackingVerdict",
    "LossOutput",
    "RewardHackingWarning",
    "StopRequest",
    "TIConfig",
    "TextualInversionTrainer",
    "TrainBatch",
    "TrainConfig",
    "TrainExample",
    "TrainOutput",
    "Trainer",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_rewards",
    "check_resume_config",
    "config_changes",
    "detect_reward_hacking",
    "diffusion_dpo_loss",
    "load_checklists",
    "load_examples",
    "load_pairs",
    "load_train_config",
    "train_from_config",
    "warm_text_caches",
]
