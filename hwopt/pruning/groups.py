"""SPA channel groups: which channels of which tensors must be removed together.

Every channel of every tensor that a prunable layer produces is an *element*. Per-op rules
(`hwopt.pruning.rules`) say how elements flow through a node: a Conv creates fresh elements for
its output channels, an Add unifies the elements of its two inputs position by position, a Concat
lays them end to end, a Reshape into a Gemm repeats each one over the spatial block. A union-find
joins elements that must disappear together; the joined classes are the prunable *channels*.
Layers that read or write channels (weights, biases, norm parameters, shape constants) are
recorded as *members* with the element at each position of their channel axis. A *group* is a
set of channels tied together by members; pruning a channel of a group removes its positions
from every member.

Ops without a rule, graph inputs and outputs are barriers: their elements are marked fixed, never
pruned. So a graph the rules do not understand is left alone rather than corrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.normalize import normalize_model
from hwopt.graph.shapes import Shapes, infer_shapes, probe_shapes, resolve_input_shapes, value_shapes
from hwopt.graph.fold import fold_constants


@dataclass
class Member:
    """One place a group's channels appear: a weight axis, a norm parameter or a shape constant.

    `slot` is the node input holding the tensor (-1 for node-level rewrites such as a Reshape's
    target shape or a grouped conv's `group`); `index[i]` is the group channel at position i of
    `axis`. `extra` keeps what a rewrite needs (split sizes, slice bounds, conv kernel size).
    """

    node: str
    role: str
    slot: int
    axis: int
    index: np.ndarray
    extra: dict = field(default_factory=dict)

    def parts(self) -> list[np.ndarray]:
        """Channel sets that must each keep at least one channel (each Split output, the sliced
        range, or the whole member): an empty weight or output is not a model runtimes accept."""
        if self.role == "split":
            bounds = np.cumsum([0, *self.extra["sizes"]])
            return [self.index[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        if self.role == "slice":
            return [self.index[self.extra["start"] : self.extra["end"]]]
        return [self.index]


@dataclass
class ChannelGroup:
    """Channels that must be pruned together, and every member that holds them."""

    id: int
    channels: int
    members: list[Member]
    fixed: np.ndarray  # bool per channel: True where a barrier forbids pruning it
    reasons: list[str]

    @property
    def prunable(self) -> bool:
        """At least one channel may go while one stays."""
        return self.channels > 1 and int((~self.fixed).sum()) >= 1 and not self.fixed.all()

    @property
    def free(self) -> np.ndarray:
        """Indices of the channels that may be removed."""
        return np.flatnonzero(~self.fixed)

    def node_names(self) -> list[str]:
        return list(dict.fromkeys(m.node for m in self.members))

    def reason(self) -> str:
        if self.channels <= 1:
            return "single channel"
        if self.fixed.all():
            return "; ".join(self.reasons) or "fixed"
        return ""


class UnionFind:
    """Element classes with a 'fixed' flag and the first reason that fixed them."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed_reason: dict[int, str] = {}

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.fixed_reason and ra not in self.fixed_reason:
            self.fixed_reason[ra] = self.fixed_reason[rb]

    def fix(self, ids: Iterable[int], reason: str) -> None:
        for i in np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)):
            self.fixed_reason.setdefault(self.find(int(i)), reason)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(i)) for i in ids.ravel()), dtype=np.int64, count=ids.size).reshape(ids.shape)

    def reason_of(self, x: int) -> str | None:
        return self.fixed_reason.get(self.find(x))


@dataclass
class ChannelMap:
    """The channel axis of a tensor and the element at each position along it."""

    axis: int
    ids: np.ndarray


class Tracer:
    """State the per-op rules read and write while walking the graph once in topological order."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]):
        self.model = model
        self.shapes = shapes
        self.inits = {t.name: t for t in model.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        self.uf = UnionFind()
        self.maps: dict[str, ChannelMap] = {}
        self.members: list[Member] = []

    # -- tensors
    def get(self, name: str) -> ChannelMap | None:
        return self.maps.get(name) if name else None

    def set(self, name: str, axis: int, ids: np.ndarray) -> None:
        self.maps[name] = ChannelMap(axis, np.asarray(ids, dtype=np.int64))

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name) if name else None

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer (None for computed tensors)."""
        if not name or name not in self.inits:
            return None
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.inits[name])
        return self._arrays[name]

    # -- elements
    def fresh(self, n: int) -> np.ndarray:
        return self.uf.new(n)

    def fixed(self, n: int, reason: str) -> np.ndarray:
        ids = self.uf.new(n)
        self.uf.fix(ids, reason)
        return ids

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
            self.uf.union(x, y)

    def block(self, names: Iterable[str], reason: str) -> None:
        """Fix every element carried by the named tensors (a barrier)."""
        for name in names:
            cmap = self.get(name)
            if cmap is not None:
                self.uf.fix(cmap.ids, reason)

    def member(self, node: onnx.NodeProto, role: str, slot: int, axis: int, ids: np.ndarray, **extra) -> None:
        self.members.append(Member(node.name, role, slot, axis, np.asarray(ids, dtype=np.int64), extra))


def prepare_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Normalized copy with constant subgraphs folded (`hwopt.graph.fold`), so every weight is an
    initializer the rules can slice.

    This covers torch's Identity-shared tensors (e.g. LayerNorm weights) and PaddlePaddle's
    `Reshape(bias)` conv biases. Exporter shape annotations (`value_info`) are dropped: PaddlePaddle
    writes -1 as a static dim there, which would hide the real shapes from inference, and pruning
    changes them anyway. Deterministic, so group member names built on one call match the model
    another call rewrites.
    """
    out = normalize_model(model)
    del out.graph.value_info[:]
    fold_constants(out)
    return out


def tensor_shapes(model: onnx.ModelProto, concrete: Shapes) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every tensor: onnx inference, then one onnxruntime run for the rest.

    Real exports compute Reshape targets and Resize sizes at run time (Shape -> Slice -> Concat)
    where static inference gives up; every op downstream would then be a barrier for want of a
    shape. Running the model once at the given input shapes, with only the missing tensors added
    as outputs, answers exactly. Negative dims (PaddlePaddle's -1 annotations) count as unknown.
    """
    known = {k: v for k, v in value_shapes(infer_shapes(model, concrete)).items() if all(d >= 0 for d in v)}
    missing = [o for n in model.graph.node for o in n.output if o and o not in known]
    if missing:
        known.update(probe_shapes(model, concrete, missing))
    return known


def trace(model: onnx.ModelProto, shapes: Shapes | None = None) -> Tracer:
    """Walk a prepared model once, applying each node's rule; graph outputs become barriers.

    A rule that fails on an input it did not foresee (odd broadcast, inconsistent shapes) turns
    its node into a barrier instead of failing the whole command: unknown means fixed.
    """
    from hwopt.pruning.rules import RULES, barrier

    t = Tracer(model, tensor_shapes(model, resolve_input_shapes(model, shapes)))
    for node in model.graph.node:
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            if any(t.get(i) for i in node.input):
                barrier(t, node, f"{node.op_type} {node.name} has no channel rule")
            continue
        members, maps = len(t.members), set(t.maps)
        try:
            rule(t, node)
        except Exception as exc:  # noqa: BLE001 - see docstring
            del t.members[members:]
            for name in set(t.maps) - maps:
                del t.maps[name]
            barrier(t, node, f"{node.op_type} {node.name}: rule failed ({type(exc).__name__})")
    t.block((o.name for o in model.graph.output), "graph output")
    return t


def build_groups(model: onnx.ModelProto, shapes: Shapes | None = None, *, prepared: bool = False) -> list[ChannelGroup]:
    """Channel groups of `model` (prepared with `prepare_model` unless `prepared`).

    Group ids are stable for the same model and shapes; `apply_pruning` takes kept channel indices
    per group id. Channels inside a group are numbered in the order the group's first member
    (usually the producing layer) holds them.
    """
    m = model if prepared else prepare_model(model)
    t = trace(m, shapes)
    uf = t.uf
    member_roots = [uf.roots(mb.index) for mb in t.members]
    # groups: channels linked by appearing in one member
    link = UnionFind()
    slot_of: dict[int, int] = {}
    for roots in member_roots:
        uniq = np.unique(roots)
        for r in uniq.tolist():
            if r not in slot_of:
                slot_of[r] = int(link.new(1)[0])
        first = slot_of[int(uniq[0])]
        for r in uniq[1:].tolist():
            link.union(first, slot_of[r])
    comp_members: dict[int, list[int]] = {}
    for k, roots in enumerate(member_roots):
        comp_members.setdefault(link.find(slot_of[int(roots.flat[0])]), []).append(k)
    groups: list[ChannelGroup] = []
    for gid, (_, idxs) in enumerate(sorted(comp_members.items(), key=lambda kv: kv[1][0])):
        order: dict[int, int] = {}
        for k in idxs:
            for r in member_roots[k].ravel().tolist():
                order.setdefault(r, len(order))
        lookup = np.vectorize(order.__getitem__, otypes=[np.int64])
        members = []
        for k in idxs:
            src = t.members[k]
            members.append(Member(src.node, src.role, src.slot, src.axis, lookup(member_roots[k]), dict(src.extra)))
        roots = list(order)
        fixed = np.array([r in uf.fixed_reason for r in roots], dtype=bool)
        reasons = list(dict.fromkeys(uf.fixed_reason[r] for r in roots if r in uf.fixed_reason))
        groups.append(ChannelGroup(gid, len(roots), members, fixed, reasons))
    return groups


def exclude_nodes(groups: Sequence[ChannelGroup], model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Fix every group that has a member in one of the named nodes (clear error for unknown names)."""
    known = {n.name for n in model.graph.node}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HwoptError(f"--exclude names no node of the model: {', '.join(unknown)}")
    wanted = set(names)
    for g in groups:
        hit = wanted.intersection(g.node_names())
        if hit:
            g.fixed[:] = True
            g.reasons.append(f"excluded ({', '.join(sorted(hit))})")


def describe_groups(model: onnx.ModelProto, shapes: Shapes | None = None) -> list[dict]:
    """Groups as plain dicts for `hwopt inspect` (empty when input dims are dynamic and not given)."""
    try:
        groups = build_groups(model, shapes)
    except HwoptError:
        return []
    return [
        {"id": g.id, "size": g.channels, "members": g.node_names(), "prunable": g.prunable, "reason": g.reason()}
        for g in groups
    ]
