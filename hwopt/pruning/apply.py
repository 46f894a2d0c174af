"""Remove chosen channels from every member of their groups and prove the result is a valid model.

Weights, biases and norm parameters are sliced along their channel axis; Reshape targets, Split
sizes, Slice bounds and grouped-conv `group` attributes are rewritten to the kept counts. Graph
inputs and outputs are barriers, so their names and shapes never change. The rewritten model is
checked (onnx.checker full check with strict shape inference) and run on onnxruntime before it
is returned; a failure raises HwoptError instead of handing out a broken file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.load import check_model
from hwopt.graph.shapes import Shapes, random_inputs, resolve_input_shapes
from hwopt.pruning.groups import ChannelGroup, Member, build_groups, prepare_model

WeightKey = tuple[str, int]  # (node name, input slot)


def keep_masks(groups: Sequence[ChannelGroup], keep: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """Boolean kept-mask per pruned group, checking the indices against the group."""
    by_id = {g.id: g for g in groups}
    masks: dict[int, np.ndarray] = {}
    for gid, kept in keep.items():
        if gid not in by_id:
            raise HwoptError(f"no channel group {gid}; groups are 0..{len(groups) - 1}")
        g = by_id[gid]
        idx = np.asarray(sorted(set(int(i) for i in kept)), dtype=np.int64)
        if idx.size == 0:
            raise HwoptError(f"group {gid}: at least one channel must be kept")
        if idx[0] < 0 or idx[-1] >= g.channels:
            raise HwoptError(f"group {gid}: channel index out of range 0..{g.channels - 1}")
        mask = np.zeros(g.channels, dtype=bool)
        mask[idx] = True
        if (g.fixed & ~mask).any():
            raise HwoptError(f"group {gid}: cannot remove fixed channels ({'; '.join(g.reasons) or 'barrier'})")
        if not mask.all():
            masks[gid] = mask
    return masks


def apply_pruning(
    model: onnx.ModelProto,
    keep: Mapping[int, Sequence[int]],
    groups: Sequence[ChannelGroup] | None = None,
    *,
    shapes: Shapes | None = None,
    weights: Mapping[WeightKey, np.ndarray] | None = None,
    validate: bool = True,
) -> onnx.ModelProto:
    """Pruned copy of `model` keeping, for each group id in `keep`, the listed channel indices.

    `groups` must come from `build_groups` on the same model (rebuilt when omitted). `weights`
    replaces the value of a node input before slicing (OBSPA's compensated consumer weights).
    Groups not named in `keep` are left whole. The input model is not modified.
    """
    m = prepare_model(model)
    if groups is None:
        groups = build_groups(m, shapes, prepared=True)
    masks = keep_masks(groups, keep)
    edits: dict[WeightKey, list[tuple[int, np.ndarray]]] = {}
    rewrites: list[tuple[Member, np.ndarray]] = []
    for g in groups:
        if g.id not in masks:
            continue
        for mb in g.members:
            pos_mask = masks[g.id][mb.index]
            if mb.slot >= 0:
                edits.setdefault((mb.node, mb.slot), []).append((mb.axis, pos_mask))
            else:
                rewrites.append((mb, pos_mask))
    try:
        _Rewriter(m, weights or {}).run(edits, rewrites)
    except HwoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a rewrite the groups did not foresee: one line, no traceback
        raise HwoptError(f"pruning could not rewrite the model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if validate:
        validate_pruned(model, m, shapes)
    return m


class _Rewriter:
    """Applies slices and rewrites to a prepared model in place."""

    def __init__(self, model: onnx.ModelProto, weights: Mapping[WeightKey, np.ndarray]):
        self.m = model
        self.g = model.graph
        self.nodes = {n.name: n for n in self.g.node}
        self.inits = {t.name: t for t in self.g.initializer}
        self.weights = weights
        self.uses = Counter(i for n in self.g.node for i in n.input if i)
        self.uses.update(o.name for o in self.g.output)
        self.names = set(self.inits) | {o for n in self.g.node for o in n.output} | {i.name for i in self.g.input}

    def fresh_name(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh_name(base)
        t = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name

    def set_input(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Point a node input at a new value, replacing the initializer when no one else reads it."""
        old = node.input[slot]
        if old in self.inits:
            value = value.astype(helper.tensor_dtype_to_np_dtype(self.inits[old].data_type), copy=False)
            if self.uses[old] == 1:
                self.inits[old].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), old))
                return
        self.uses[old] -= 1
        node.input[slot] = self.add_init(f"{old}.pruned", value)
        self.uses[node.input[slot]] += 1

    def value(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def run(self, edits: dict[WeightKey, list[tuple[int, np.ndarray]]], rewrites: list[tuple[Member, np.ndarray]]) -> None:
        for key in set(edits) | set(self.weights):
            node_name, slot = key
            node = self.nodes[node_name]
            arr = self.weights.get(key)
            arr = self.value(node.input[slot]) if arr is None else np.asarray(arr)
            for axis, mask in edits.get(key, []):
                arr = np.compress(mask, arr, axis=axis)
            self.set_input(node, slot, arr)
        for mb, mask in rewrites:
            getattr(self, f"_{mb.role}")(self.nodes[mb.node], mb, mask)
        self._finish()

    # -- node-level rewrites, one per member role
    def _reshape(self, node: onnx.NodeProto, mb: Member, mask: np.ndarray) -> None:
        size = int(mask.sum())
        if mb.extra["source"] == "const":
            shape = self.value(node.input[1]).copy()
            if shape[mb.axis] != -1:
                shape[mb.axis] = size
                self.set_input(node, 1, shape)
            return
        concat = self.nodes[mb.extra["concat"]]
        piece = concat.input[mb.axis]
        if piece in self.inits and int(self.value(piece)[0]) == -1:
            return
        inputs = list(concat.input)
        inputs[mb.axis] = self.add_init(f"{node.name}.dim{mb.axis}", np.array([size], dtype=np.int64))
        out = self.fresh_name(f"{concat.output[0]}.pruned")
        new = helper.make_node("Concat", inputs, [out], name=self.fresh_name(f"{concat.name}.pruned"), axis=0)
        self._insert_before(node, new)
        self.uses[node.input[1]] -= 1
        node.input[1] = out

    def _split(self, node: onnx.NodeProto, mb: Member, mask: np.ndarray) -> None:
        bounds = np.cumsum([0, *mb.extra["sizes"]])
        sizes = np.array([int(mask[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
        if (sizes == 0).any():
            raise HwoptError(f"Split {node.name}: pruning would empty one of its outputs")
        name = self.add_init(f"{node.name}.split", sizes)
        if len(node.input) > 1:
            node.input[1] = name
        else:
            node.input.append(name)
        keep_attrs = [a for a in node.attribute if a.name not in ("num_outputs", "split")]
        del node.attribute[:]
        node.attribute.extend(keep_attrs)

    def _slice(self, node: onnx.NodeProto, mb: Member, mask: np.ndarray) -> None:
        start, end, k = mb.extra["start"], mb.extra["end"], mb.extra["k"]
        new_start = int(mask[:start].sum())
        new_end = new_start + int(mask[start:end].sum())
        for slot, v in ((1, new_start), (2, new_end)):
            arr = self.value(node.input[slot]).copy()
            arr[k] = v
            self.set_input(node, slot, arr)

    def _conv_groups(self, node: onnx.NodeProto, mb: Member, mask: np.ndarray) -> None:
        _set_int_attr(node, "group", mb.extra["group"] * int(mask.sum()) // len(mask))

    def _gn_groups(self, node: onnx.NodeProto, mb: Member, mask: np.ndarray) -> None:
        _set_int_attr(node, "num_groups", int(mask.sum()))

    def _insert_before(self, anchor: onnx.NodeProto, new: onnx.NodeProto) -> None:
        nodes = list(self.g.node)
        at = next(i for i, n in enumerate(nodes) if n.name == anchor.name)
        self.g.node.insert(at, new)
        self.nodes[new.name] = self.g.node[at]
        for i in new.input:
            self.uses[i] += 1

    def _finish(self) -> None:
        """Drop stale shape annotations, dead nodes and unused initializers."""
        del self.g.value_info[:]
        outputs = {o.name for o in self.g.output}
        while True:
            used = {i for n in self.g.node for i in n.input} | outputs
            alive = [n for n in self.g.node if any(o in used for o in n.output)]
            if len(alive) == len(self.g.node):
                break
            del self.g.node[:]
            self.g.node.extend(alive)
        used = {i for n in self.g.node for i in n.input} | outputs
        keep = [t for t in self.g.initializer if t.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def validate_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, shapes: Shapes | None = None) -> None:
    """onnx full check + strict shape inference + an onnxruntime run with the original's output shapes."""
    from hwopt.runtimes import get_runtime

    ort = get_runtime("onnxruntime")
    try:
        check_model(pruned, name="pruned model", full=True)
        concrete = resolve_input_shapes(pruned, shapes)
        feeds = random_inputs(pruned, concrete)
        got = ort.session(pruned).run(feeds)
        want = ort.session(original).run(feeds)
    except HwoptError as exc:
        raise HwoptError(f"pruning produced an invalid model: {exc}") from exc
    except Exception as exc:  # onnxruntime's own exception types
        raise HwoptError(f"pruning produced a model onnxruntime cannot run: {str(exc).splitlines()[0]}") from exc
    for o, a, b in zip(pruned.graph.output, got, want):
        if a.shape != b.shape:
            raise HwoptError(f"pruning changed the shape of output {o.name}: {b.shape} -> {a.shape}")
