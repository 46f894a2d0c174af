"""Structured pruning of ONNX graphs (SPA): channel groups, importance, OBSPA, apply.

    from hwopt.pruning import prune_model
    result = prune_model("model.onnx", ratio=0.3, criterion="obs", calib="calib.npz")

Lower level (used by the Once-for-All search): `build_groups` -> `importance` /
`select_channels` -> `apply_pruning`.
"""

from hwopt.pruning.apply import apply_pruning
from hwopt.pruning.groups import ChannelGroup, Member, build_groups, describe_groups, prepare_model
from hwopt.pruning.importance import CRITERIA, importance, select_channels
from hwopt.pruning.prune import PruneResult, prune_model

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "Member",
    "PruneResult",
    "apply_pruning",
    "build_groups",
    "describe_groups",
    "importance",
    "prepare_model",
    "prune_model",
    "select_channels",
]
