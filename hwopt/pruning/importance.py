"""Channel importance criteria and channel selection (uniform or global ranking).

Criteria are plain functions `(model, group) -> score per channel` in `CRITERIA`, so another one
is one entry away. Magnitude criteria sum over every weight member of the group (producer rows,
consumer columns, depthwise filters), as DepGraph does, so a channel is judged by all the weights
that disappear with it. OBSPA scores come from `hwopt.pruning.obspa` (they need activations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from hwopt.errors import HwoptError
from hwopt.pruning.groups import ChannelGroup

Criterion = Callable[[onnx.ModelProto, ChannelGroup], np.ndarray]


def member_values(model: onnx.ModelProto) -> Callable[[str, int], np.ndarray]:
    """Reader of a node input's initializer value by (node name, slot), cached."""
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    cache: dict[str, np.ndarray] = {}

    def read(node: str, slot: int) -> np.ndarray:
        name = nodes[node].input[slot]
        if name not in cache:
            cache[name] = numpy_helper.to_array(inits[name]).astype(np.float64)
        return cache[name]

    return read


def _per_position(arr: np.ndarray, axis: int, power: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(arr) ** power, axis, 0)
    return moved.reshape(moved.shape[0], -1).sum(1)


def _magnitude(model: onnx.ModelProto, group: ChannelGroup, power: int, roles: Sequence[str]) -> np.ndarray:
    read = member_values(model)
    score = np.zeros(group.channels)
    for mb in group.members:
        if mb.role in roles:
            np.add.at(score, mb.index, _per_position(read(mb.node, mb.slot), mb.axis, power))
    return score


def l1(model: onnx.ModelProto, group: ChannelGroup) -> np.ndarray:
    """Sum of |w| over every weight that holds the channel."""
    return _magnitude(model, group, 1, ("out", "in", "dw"))


def l2(model: onnx.ModelProto, group: ChannelGroup) -> np.ndarray:
    """Sum of w^2 over every weight that holds the channel."""
    return _magnitude(model, group, 2, ("out", "in", "dw"))


def bn_scale(model: onnx.ModelProto, group: ChannelGroup) -> np.ndarray:
    """|gamma| of the group's norm layers (network slimming); L1 where the norms were folded away."""
    if not any(mb.role == "norm_scale" for mb in group.members):
        return l1(model, group)
    return _magnitude(model, group, 1, ("norm_scale",))


CRITERIA: dict[str, Criterion] = {"l1": l1, "l2": l2, "bn": bn_scale}


def importance(
    model: onnx.ModelProto, groups: Sequence[ChannelGroup], criterion: str | Criterion = "l1"
) -> dict[int, np.ndarray]:
    """Score per channel (higher = more important) for each prunable group of a prepared model."""
    fn = CRITERIA.get(criterion) if isinstance(criterion, str) else criterion
    if fn is None:
        raise HwoptError(f"unknown criterion {criterion!r}; choose from {', '.join([*CRITERIA, 'obs'])}")
    return {g.id: fn(model, g) for g in groups if g.prunable}


def round_kept(kept: int, total: int, floor: int, multiple: int) -> int:
    """Kept count rounded to the target's channel multiple, within [floor, total]; keeping every
    channel is never rounded down (ratio 0 must leave the model as it is)."""
    if kept >= total:
        return total
    if multiple > 1:
        kept = max(multiple, int(round(kept / multiple)) * multiple)
    return int(min(total, max(floor, kept, 1)))


def select_channels(
    groups: Sequence[ChannelGroup],
    scores: Mapping[int, np.ndarray],
    ratio: float,
    *,
    global_ranking: bool = False,
    multiple: int = 1,
    max_group_ratio: float = 0.9,
) -> dict[int, np.ndarray]:
    """Kept channel indices per group that loses channels.

    Uniform: every prunable group drops `ratio` of its channels. Global: scores are divided by
    their group mean (so layers of different scale compare), and the lowest `ratio` of all free
    channels go, no group losing more than `max_group_ratio`. Fixed channels always stay; kept
    counts are rounded to `multiple`.
    """
    if not 0.0 <= ratio < 1.0:
        raise HwoptError(f"pruning ratio must be in [0, 1), got {ratio}")
    prunable = [g for g in groups if g.prunable and g.id in scores]
    drop_counts: dict[int, int] = {}
    if global_ranking:
        pool = []
        for g in prunable:
            s = scores[g.id][g.free]
            norm = s / (s.mean() + 1e-12)
            pool += [(v, g.id) for v in norm]
        n_drop = int(ratio * sum(g.channels for g in prunable))
        for _, gid in sorted(pool)[:n_drop]:
            drop_counts[gid] = drop_counts.get(gid, 0) + 1
    else:
        drop_counts = {g.id: int(ratio * g.channels) for g in prunable}
    keep: dict[int, np.ndarray] = {}
    for g in prunable:
        floor = max(int(g.fixed.sum()), math.ceil(g.channels * (1 - max_group_ratio)))
        n_keep = round_kept(g.channels - drop_counts.get(g.id, 0), g.channels, floor, multiple)
        n_drop = g.channels - n_keep
        if n_drop <= 0:
            continue
        free = g.free
        order = free[np.argsort(scores[g.id][free], kind="stable")]
        dropped = _drop_keeping_every_part(g, order, n_drop)
        if dropped.size:
            keep[g.id] = np.setdiff1d(np.arange(g.channels), dropped)
    return keep


def _drop_keeping_every_part(group: ChannelGroup, order: np.ndarray, n_drop: int) -> np.ndarray:
    """The first `n_drop` channels of `order` whose removal leaves every member part non-empty
    (a DenseNet concat can otherwise lose all channels of one of its convs)."""
    parts = [np.unique(p) for m in group.members for p in m.parts()]
    left = np.array([len(p) for p in parts])
    where: dict[int, list[int]] = {}
    for k, p in enumerate(parts):
        for ch in p.tolist():
            where.setdefault(ch, []).append(k)
    dropped = []
    for ch in order.tolist():
        if len(dropped) == n_drop:
            break
        hit = where.get(ch, [])
        if all(left[k] > 1 for k in hit):
            left[hit] -= 1
            dropped.append(ch)
    return np.asarray(dropped, dtype=np.int64)
