"""Clinical rewards on generated images.

>>> composite = CompositeReward([VDCReward(critic), CCSReward(critic), DDReward(critic, probe), SFSReward(critic)])
>>> out = composite(images, batch)   # out.total [B], out.components {"vdc": [B], "ccs": ..., "dd": ..., "sfs": ...}
"""

from clinalign.rewards.base import CriticReward, Reward, RewardBatch
from clinalign.rewards.clinical import CCSReward, DDReward, SFSReward, VDCReward
from clinalign.rewards.composite import CompositeReward, CompositeRewardOutput
from clinalign.rewards.functional import cosine_similarity, true_class_log_prob, weighted_mean, weighted_sum

__all__ = [
    "CCSReward",
    "CompositeReward",
    "CompositeRewardOutput",
    "CriticReward",
    "DDReward",
    "Reward",
    "RewardBatch",
    "SFSReward",
    "VDCReward",
    "cosine_similarity",
    "true_class_log_prob",
    "weighted_mean",
    "weighted_sum",
]
