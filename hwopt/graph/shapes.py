"""Concrete input shapes, shape inference and generated inputs.

Real models have dynamic dims (batch, and often height/width for OCR and detectors). A dynamic
batch dim means 1; any other dynamic dim comes from `--shape NAME=1x3x48x320` or, failing that,
from the samples of a data set; when neither gives it, the error names exactly which dims are
missing and suggests a complete, copy-pasteable `--shape`.

Exporters declare unknown dims in several ways (no value, a symbol, `?`, or a literal -1 as
paddle2onnx does for outputs); only positive values count as known, so a -1 never leaks into
a shape, an element count or a MAC count.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple[int | str | None, ...]  # ints for static dims, symbol names or None for dynamic
    dtype: np.dtype


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real (non-initializer) graph inputs with their declared dims and numpy dtype."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        specs.append(InputSpec(vi.name, tuple(dims), helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    return specs


def parse_shape_options(options: list[str] | None) -> Shapes:
    """Parse repeated `NAME=1x3x48x320` options into {name: (1, 3, 48, 320)}."""
    shapes: Shapes = {}
    for opt in options or []:
        name, sep, dims = opt.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise HwoptError(f"bad --shape {opt!r}: expected NAME=DxDxD with positive integers, e.g. x=1x3x224x224") from None
        shapes[name] = shape
    return shapes


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: Shapes | None = None, *, data: Mapping[str, np.ndarray] | None = None
) -> Shapes:
    """Concrete shape for every graph input.

    Per input, in order: the `overrides` (from --shape); else one sample of `data` (arrays whose
    first axis is samples), at batch 1; else the static dims with a dynamic batch = 1. Raises
    HwoptError naming the dims that are still unknown, with a complete --shape to copy.
    """
    overrides = dict(overrides or {})
    specs = input_specs(model)
    unknown = set(overrides) - {s.name for s in specs}
    if unknown:
        raise HwoptError(f"--shape names unknown input(s) {sorted(unknown)}; model inputs are {[s.name for s in specs]}")
    shapes: Shapes = {}
    missing: list[str] = []
    for spec in specs:
        if spec.name in overrides:
            shapes[spec.name] = _checked(spec, tuple(overrides[spec.name]), "--shape")
            continue
        if data is not None and spec.name in data:
            sample = tuple(int(d) for d in np.shape(data[spec.name])[1:])
            batch = spec.dims[0] if spec.dims and isinstance(spec.dims[0], int) else 1
            shapes[spec.name] = _checked(spec, (batch, *sample), "data")
            continue
        dims = []
        for i, d in enumerate(spec.dims):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append(1)
            else:
                missing.append(f"{spec.name}[{i}]" + (f" ({d})" if d else ""))
                dims.append(-1)
        shapes[spec.name] = tuple(dims)
    if missing:
        lacking = {m.split("[")[0] for m in missing}
        example = " ".join(f"--shape {s.name}=" + "x".join(map(str, suggest_shape(s))) for s in specs if s.name in lacking)
        raise HwoptError(
            f"dynamic input dims need concrete sizes: {', '.join(missing)}; pass e.g. {example} "
            "(or give data whose samples have the size)"
        )
    return shapes


def _checked(spec: InputSpec, given: tuple[int, ...], source: str) -> tuple[int, ...]:
    """`given` if it has the input's rank and agrees with its static dims (else a clear error)."""
    if len(given) != len(spec.dims):
        raise HwoptError(f"{source} {spec.name} has rank {len(given)}, model input has rank {len(spec.dims)} {spec.dims}")
    for i, (g, d) in enumerate(zip(given, spec.dims)):
        if g <= 0:
            raise HwoptError(f"{source} {spec.name}: dim {i} must be positive, got {g}")
        if isinstance(d, int) and d != g:
            raise HwoptError(f"{source} {spec.name}: dim {i} is fixed to {d} in the model, got {g}")
    return given


#: sizes suggested for unknown dims: image-like inputs (rank 4, NCHW) get 3 channels and 224x224
#: (ImageNet's size, which most convolutional exports accept); other dims a sequence length
SUGGESTED_CHANNELS, SUGGESTED_SPATIAL, SUGGESTED_LENGTH = 3, 224, 128


def suggest_shape(spec: InputSpec) -> tuple[int, ...]:
    """A complete shape for `spec`: its static dims, batch 1, and common sizes for the rest."""
    out = []
    for i, d in enumerate(spec.dims):
        if isinstance(d, int):
            out.append(d)
        elif i == 0:
            out.append(1)
        elif len(spec.dims) == 4 and i == 1:
            out.append(SUGGESTED_CHANNELS)
        elif len(spec.dims) >= 4:
            out.append(SUGGESTED_SPATIAL)
        else:
            out.append(SUGGESTED_LENGTH)
    return tuple(out)


CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


def has_control_flow(model: onnx.ModelProto) -> bool:
    return any(n.op_type in CONTROL_FLOW_OPS for n in model.graph.node)


def fix_input_shapes(model: onnx.ModelProto, shapes: Shapes) -> onnx.ModelProto:
    """Copy of the model with the given graph-input dims made static.

    A graph with control flow keeps its declared dims: runtimes type-check every If branch at
    load, and a branch these shapes do not take can be ill-typed at them (silero-vad's 8 kHz branch
    fed a 512-sample 16 kHz chunk infers a rank-5 LSTM input), which would make a model that runs
    fine unloadable. Feeds of the given shapes still run it.
    """
    if has_control_flow(model):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    return _with_input_dims(model, shapes)


def _with_input_dims(model: onnx.ModelProto, shapes: Shapes) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        if vi.name in shapes:
            for dim, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                dim.Clear()
                dim.dim_value = int(size)
    return out


def infer_shapes(model: onnx.ModelProto, shapes: Shapes | None = None) -> onnx.ModelProto:
    """Shape inference with onnx, falling back to onnxruntime's symbolic inference.

    With `shapes`, inputs are fixed first so every intermediate gets concrete dims. Exporter
    annotations with non-positive dims (paddle2onnx writes -1 for "unknown") are made unknown
    first: inference keeps an annotated dim, so a -1 would otherwise hide the real size.
    """
    m = _without_bad_dims(_with_input_dims(model, shapes) if shapes else model)  # static analysis: no runtime loads it
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # onnx raises several types; fall back below
        inferred = m
    if _all_shapes_known(inferred):
        return inferred
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with _scratch_cwd():  # on failure it dumps sym_shape_infer_temp.onnx + *.data into the cwd
            sym = SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=True)
        if sym is not None:
            return sym
    except Exception:  # symbolic inference asserts on some real models; keep onnx's partial answer
        pass
    return inferred


@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """Run a call inside a throwaway working directory, so files it drops never land in the user's folder."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hwopt-shapes-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(here)


def _without_bad_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model, or a copy whose value_info/output dims with a value <= 0 are cleared to unknown."""
    annotated = list(model.graph.value_info) + list(model.graph.output)
    if not any(d.HasField("dim_value") and d.dim_value <= 0 for vi in annotated for d in vi.type.tensor_type.shape.dim):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in list(out.graph.value_info) + list(out.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.Clear()
    return out


def _all_shapes_known(model: onnx.ModelProto) -> bool:
    known = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output) if _is_concrete(vi)}
    known |= {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    return all(o in known for n in model.graph.node for o in n.output if o)


def _is_concrete(vi: onnx.ValueInfoProto) -> bool:
    """All dims known and positive (paddle2onnx writes -1 for unknown dims; 0 means unknown too)."""
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in t.shape.dim)


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """Copy of `model` exposing the given intermediate tensors as extra graph outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for n in dict.fromkeys(names):
        if n not in have:
            out.graph.output.append(helper.make_empty_tensor_value_info(n))
    return out


def probe_shapes(model: onnx.ModelProto, shapes: Shapes, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors `names`, found by running the model once on onnxruntime.

    Static inference stops at ops it cannot see through (com.microsoft's DynamicQuantizeLSTM,
    shape arithmetic on data-dependent values); one inference on generated inputs of the given
    input shapes tells the rest. Returns {} when onnxruntime cannot run the model (custom ops).
    """
    from hwopt.runtimes import get_runtime

    wanted = [n for n in dict.fromkeys(names) if n]
    if not wanted or not get_runtime("onnxruntime").available():
        return {}
    try:
        session = get_runtime("onnxruntime").session(with_outputs(model, wanted), threads=1)
        values = session.run(random_inputs(model, shapes))
    except Exception:  # noqa: BLE001 - a best-effort fallback: onnxruntime raises its own types; {} means "not known"
        return {}
    index = {name: i for i, name in enumerate(session.output_names)}
    return {n: tuple(int(d) for d in values[index[n]].shape) for n in wanted if n in index}


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of every tensor known in an inferred model (inputs, values, outputs, weights)."""
    out: dict[str, tuple[int, ...]] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if _is_concrete(vi):
            out[vi.name] = tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim)
    for t in model.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def value_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX elem type of every tensor with a known type."""
    out: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        out[t.name] = t.data_type
    return out


def random_inputs(model: onnx.ModelProto, shapes: Shapes, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for benchmarking: standard normal floats, small non-negative ints, random bools.

    An integer input that the graph compares (Equal) with a constant gets that constant instead:
    such an input picks a branch (silero-vad's `sr == 16000` selects its 16 kHz network), and a
    random value would run a branch the other inputs' shapes do not fit."""
    rng = np.random.default_rng(seed)
    selectors = _selector_values(model)
    feeds = {}
    for spec in input_specs(model):
        shape = shapes[spec.name]
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        elif spec.name in selectors:
            feeds[spec.name] = np.full(shape, selectors[spec.name], dtype=spec.dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds


def _selector_values(model: onnx.ModelProto) -> dict[str, int]:
    """{graph input: the first scalar constant it is compared with by an Equal node}."""
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if not t.dims}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts.update({n.output[0]: numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value" and not a.t.dims})
    inputs = {s.name for s in input_specs(model)}
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type == "Equal" and len(n.input) == 2:
            for a, b in (n.input, reversed(n.input)):
                if a in inputs and b in consts and np.issubdtype(consts[b].dtype, np.integer):
                    out.setdefault(a, int(consts[b]))
    return out
