"""Elastic space of any ONNX model: channel widths per pruning group, skippable residual blocks,
input resolution.

Widths keep each group's channels in L1-importance order, so every width is a prefix of the
next (the property that lets subnets share weights). A residual block `y = x + f(x)` whose branch
feeds nothing else can be replaced by the identity `y = x`. Resolution choices are offered only
when the model runs unchanged (same output shape) at the smaller input sizes. A subnet config is
readable JSON: {"resolution": [H, W], "widths": {"group id": fraction}, "skip": [add node names]}.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import accuracy_metrics, load_dataset, run_outputs
from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model, save_model
from hwopt.graph.shapes import Shapes, fix_input_shapes, input_specs, infer_shapes, resolve_input_shapes, value_shapes
from hwopt.nas.genes import AdditiveLatency, Gene, Term
from hwopt.pruning.apply import apply_pruning
from hwopt.pruning.groups import build_groups, prepare_model
from hwopt.pruning.importance import importance


def residual_blocks(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str, list[str]]]:
    """(Add node, identity input, branch node names) for every Add that closes a removable branch."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    outputs = {o.name for o in model.graph.output}
    inits = {t.name for t in model.graph.initializer}
    blocks = []
    for add in model.graph.node:
        if add.op_type != "Add" or len(add.input) != 2 or add.output[0] in outputs:
            continue
        for skip_in, branch_out in (add.input, add.input[::-1]):
            if skip_in in inits or shapes.get(skip_in) is None or shapes.get(skip_in) != shapes.get(branch_out):
                continue
            branch, todo, ok = [], [branch_out], True
            while todo and ok:
                v = todo.pop()
                if v == skip_in or v in inits:
                    continue
                node = producer.get(v)
                if node is None:  # reached a graph input without passing the skip input
                    ok = False
                    break
                if node.name not in branch:
                    branch.append(node.name)
                    todo += list(node.input)
            inside = set(branch) | {add.name}
            if ok and branch and all(set(consumers.get(o, [])) <= inside and o not in outputs
                                     for n in model.graph.node if n.name in branch for o in n.output):
                blocks.append((add.name, skip_in, branch))
                break
    return blocks


def skip_blocks(model: onnx.ModelProto, blocks: Sequence[tuple[str, str, list[str]]]) -> onnx.ModelProto:
    """Copy of `model` with each given residual block replaced by its identity input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop, rename = set(), {}
    for add_name, skip_in, branch in blocks:
        add = next((n for n in out.graph.node if n.name == add_name), None)
        if add is None:
            raise HwoptError(f"residual block {add_name} is not in the model")
        rename[add.output[0]] = skip_in
        drop |= {add_name, *branch}
    keep = [n for n in out.graph.node if n.name not in drop]
    for n in keep:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    del out.graph.node[:]
    out.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(live)
    del out.graph.value_info[:]
    return out


_WINDOWED = ("Conv", "MaxPool", "AveragePool", "LpPool")


def windows_fit(model: onnx.ModelProto) -> bool:
    """True when every conv/pool window fits inside its (padded) input at the model's fixed sizes.

    onnxruntime runs a MaxPool whose 2x2 window overhangs a 1-pixel-high input (PP-OCR's
    classifier at 32 px height) and still returns the right output shape, but OpenVINO refuses to
    load such a model; a resolution choice that only one runtime accepts is not a real choice.
    Windows of unknown size or over unknown shapes are assumed to fit.
    """
    shapes = value_shapes(infer_shapes(model))
    for node in model.graph.node:
        if node.op_type not in _WINDOWED or not node.input:
            continue
        x = shapes.get(node.input[0])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = attrs.get("kernel_shape")
        if kernel is None and node.op_type.startswith("Conv") and len(node.input) > 1:
            kernel = shapes.get(node.input[1], ())[2:]
        if not x or not kernel or len(x) != len(kernel) + 2 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        rank = len(kernel)
        pads = list(attrs.get("pads", [0] * 2 * rank))
        dil = list(attrs.get("dilations", [1] * rank))
        if any(x[2 + i] + pads[i] + pads[i + rank] < (kernel[i] - 1) * dil[i] + 1 for i in range(rank)):
            return False
    return True


class OnnxSpace:
    """Genes: resolution (first), one width per prunable group, one keep/skip per residual block."""

    def __init__(self, model: onnx.ModelProto, shapes: Shapes | None = None, *, widths: Sequence[float] = (0.5, 0.75, 1.0),
                 resolutions: Sequence[float] = (0.75, 0.875, 1.0), multiple: int = 1):
        self.model = prepare_model(model)
        self.shapes = resolve_input_shapes(self.model, shapes)
        specs = input_specs(self.model)
        self.groups = [g for g in build_groups(self.model, self.shapes, prepared=True) if g.prunable]
        scores = importance(self.model, self.groups, "l1")
        self.widths = tuple(sorted(widths))
        self.multiple = multiple
        self.order = {g.id: np.argsort(-scores[g.id], kind="stable") for g in self.groups}
        vshapes = value_shapes(infer_shapes(self.model, self.shapes))
        self.blocks = residual_blocks(self.model, vshapes)
        self.input = specs[0].name
        self.res = self._resolutions(resolutions) if len(specs) == 1 else [tuple(self.shapes[self.input][2:])]
        self.genes = [Gene("resolution", tuple(self.res))]
        self.genes += [Gene(f"group{g.id}.width", self.widths) for g in self.groups]
        self.genes += [Gene(f"{add}.keep", (False, True)) for add, _, _ in self.blocks]

    def _resolutions(self, fractions: Sequence[float]) -> list[tuple[int, int]]:
        """Smaller input sizes the model accepts with an unchanged output shape (else just the original)."""
        from hwopt.runtimes import get_runtime

        full = self.shapes[self.input]
        if len(full) != 4:
            return [tuple(full[2:])]
        rt = get_runtime("onnxruntime")
        ref_out = None
        ok = []
        for f in sorted(set(fractions) | {1.0}, reverse=True):
            hw = tuple(max(8, int(round(d * f / 8)) * 8) if f < 1 else d for d in full[2:])
            try:
                shp = (full[0], full[1], *hw)
                m = fix_input_shapes(self.model, {self.input: shp})
                out = rt.session(m).run({self.input: np.zeros(shp, np.float32)})
            except Exception:  # a model that cannot take this size simply does not get the choice
                continue
            shapes = [o.shape for o in out]
            ref_out = ref_out or shapes
            if shapes == ref_out and hw not in ok and windows_fit(m):
                ok.append(hw)
        return sorted(ok)

    # ------------------------------------------------------------ encoding

    def decode(self, row: np.ndarray) -> dict:
        ng = len(self.groups)
        return {
            "resolution": list(self.res[row[0]]),
            "widths": {str(g.id): self.widths[row[1 + i]] for i, g in enumerate(self.groups) if self.widths[row[1 + i]] < 1.0},
            "skip": [add for j, (add, _, _) in enumerate(self.blocks) if row[1 + ng + j] == 0],
        }

    def encode(self, config: dict) -> np.ndarray:
        row = np.zeros(len(self.genes), dtype=np.int64)
        try:
            row[0] = self.res.index(tuple(config.get("resolution", self.res[-1])))
            ids = {str(g.id): i for i, g in enumerate(self.groups)}
            row[1 : 1 + len(self.groups)] = len(self.widths) - 1
            for gid, frac in config.get("widths", {}).items():
                row[1 + ids[str(gid)]] = self.widths.index(float(frac))
            adds = [a for a, _, _ in self.blocks]
            row[1 + len(self.groups) :] = 1
            for name in config.get("skip", []):
                row[1 + len(self.groups) + adds.index(name)] = 0
        except (KeyError, ValueError) as exc:
            raise HwoptError(f"subnet config does not fit this model's space: {exc}") from None
        return row

    def canonical(self, pop: np.ndarray) -> np.ndarray:
        return np.asarray(pop, dtype=np.int64)

    def features(self, pop: np.ndarray) -> np.ndarray:
        pop = np.atleast_2d(pop)
        cols = [np.eye(g.n)[pop[:, i]] for i, g in enumerate(self.genes) if g.n > 1]
        return np.concatenate(cols, axis=1).astype(np.float32) if cols else np.zeros((len(pop), 1), np.float32)

    # ------------------------------------------------------------ extraction

    def kept(self, group_index: int, fraction: float) -> np.ndarray:
        """Channels a width keeps: fixed ones plus the most important free ones (a prefix of the order)."""
        g = self.groups[group_index]
        n = max(int(g.fixed.sum()), 1, math.ceil(g.channels * fraction))
        if self.multiple > 1 and g.channels > self.multiple:
            n = min(g.channels, max(self.multiple, int(round(n / self.multiple)) * self.multiple))
        order = [c for c in self.order[g.id] if g.fixed[c]] + [c for c in self.order[g.id] if not g.fixed[c]]
        return np.sort(np.asarray(order[:n]))

    def extract(self, config: dict) -> onnx.ModelProto:
        """The subnet as a valid ONNX model (pruned via the pruning apply step, blocks skipped, resized)."""
        return self.extract_from(self.model, config)

    def extract_from(self, model: onnx.ModelProto, config: dict) -> onnx.ModelProto:
        """`extract` applied to `model`, a copy of this space's model with other weight values."""
        row = self.encode(config)
        keep = {}
        for i, g in enumerate(self.groups):
            frac = self.widths[row[1 + i]]
            if frac < 1.0:
                keep[g.id] = self.kept(i, frac)
        m = apply_pruning(model, keep, self.groups, shapes=self.shapes, validate=False) if keep else model
        skipped = [b for j, b in enumerate(self.blocks) if row[1 + len(self.groups) + j] == 0]
        if skipped:
            m = skip_blocks(m, skipped)
        shp = self.shapes[self.input]
        m = fix_input_shapes(m, {self.input: (*shp[:2], *self.res[row[0]])} if len(shp) == 4 else {})
        del m.graph.value_info[:]
        onnx.checker.check_model(m)
        return m

    def latency_model(self, timer, *, target: str, runtime: str, provenance: dict | None = None) -> AdditiveLatency:
        """Multiplicative model: the full model timed at each resolution, times one factor per gene choice.

        Each width/skip choice scales the time by the factor it alone achieves at the full
        resolution; factors multiply (log-space lookup-sum). That captures a conv shrunk on both
        sides (a*b) better than adding savings, and needs one timing per choice rather than one per
        choice and resolution (a real model's space has ~60 choices); it ignores interactions, which
        the search corrects by measuring its top candidates when the target is this machine.
        """
        full_row = np.array([g.n - 1 for g in self.genes], dtype=np.int64)
        base = np.zeros(len(self.res))
        for r in range(len(self.res)):
            row = full_row.copy()
            row[0] = r
            base[r] = max(self._time(timer, row), 1e-6)
        full_ms = base[-1]
        terms = [Term((0,), np.log(base), "full model")]
        for i, g in enumerate(self.genes):
            if i == 0 or g.n < 2:
                continue
            table = np.zeros(g.n)
            for c in range(g.n - 1):
                var = full_row.copy()
                var[i] = c
                table[c] = np.log(max(self._time(timer, var) / full_ms, 0.05))
            terms.append(Term((i,), table, g.name))
        return AdditiveLatency(target, runtime, timer.overhead_ms(), terms, provenance or {}, log_space=True)

    def _time(self, timer, row: np.ndarray) -> float:
        """Block-time of one subnet; a subnet the target runtime cannot run is a clear error naming it."""
        config = self.decode(row)
        try:
            return timer(self.extract(config))
        except HwoptError as exc:
            raise HwoptError(f"subnet {config} does not run on {timer.runtime}: {exc}") from None


class OnnxProblem:
    """An ONNX model's elastic space, judged on `eval_data` (labels, or agreement with the original)."""

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, *, eval_data=None, shapes: Shapes | None = None,
                 seed: int = 0, limit: int = 500):
        proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
        self.source = str(model) if not isinstance(model, onnx.ModelProto) else proto.graph.name
        if eval_data is None:
            raise HwoptError("searching an ONNX model needs --eval DATA (an .npz of its inputs, labels optional)")
        self.space = OnnxSpace(proto, shapes)
        self.data = load_dataset(eval_data, self.space.model).subset(limit)
        self.reference = self._run(self.space.model, self.data.inputs)
        probe = accuracy_metrics(self.reference, self.data.labels, self.reference)
        self.metric = probe["metric"]
        h = hashlib.sha1(proto.SerializeToString())
        h.update(Path(eval_data).read_bytes())
        self.cache_tag = "onnx-" + h.hexdigest()[:16]

    def _run(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        from hwopt.data import Dataset
        from hwopt.runtimes import get_runtime

        session = get_runtime("onnxruntime").session(model)
        return run_outputs(session, Dataset(inputs), batch_size=1)

    def _inputs_at(self, hw: tuple[int, int]) -> dict[str, np.ndarray]:
        x = self.data.inputs[self.space.input]
        if tuple(x.shape[2:]) == tuple(hw):
            return dict(self.data.inputs)
        import torch
        import torch.nn.functional as F

        y = F.interpolate(torch.from_numpy(x.astype(np.float32)), size=tuple(hw), mode="bilinear", align_corners=False)
        return {**self.data.inputs, self.space.input: y.numpy()}

    def finetune(self, data_path: str | os.PathLike, *, epochs: int, lr: float = 1e-3, seed: int = 0,
                 progress=None) -> dict:
        """Weight-sharing fine-tune of the whole space on `data_path` (KD from the original model).

        Subnets are then extracted from the fine-tuned weights; the reference for agreement
        metrics stays the original model. Returns the fine-tune statistics.
        """
        from hwopt.nas.finetune import finetune_space

        data = load_dataset(data_path, self.space.model)
        tuned, stats = finetune_space(self.space, data, self.space.model, epochs=epochs, lr=lr, seed=seed, progress=progress)
        self.space.model = tuned
        h = hashlib.sha1(self.cache_tag.encode())
        h.update(tuned.SerializeToString())
        self.cache_tag = "onnx-ft-" + h.hexdigest()[:16]
        return {**stats.to_dict(), "data": str(data_path), "lr": lr}

    def accuracy(self, config: dict) -> float:
        outputs = self._run(self.space.extract(config), self._inputs_at(tuple(config["resolution"])))
        return accuracy_metrics(outputs, self.data.labels, self.reference)["accuracy"]

    def export(self, config: dict, path: Path) -> Path:
        return save_model(self.space.extract(config), path)

    def latency_model(self, device: DeviceProfile, runtime: str, timer) -> AdditiveLatency:
        return self.space.latency_model(timer, target=device.name, runtime=runtime, provenance=timer.provenance())
