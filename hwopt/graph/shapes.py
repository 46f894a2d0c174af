"""Concrete input shapes, shape inference and generated inputs.

Real models have dynamic dims (batch, and often height/width for OCR and detectors). A dynamic
batch dim means 1; any other dynamic dim must be given with `--shape NAME=1x3x48x320`, and the
error names exactly which dims are missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

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


def resolve_input_shapes(model: onnx.ModelProto, overrides: Shapes | None = None) -> Shapes:
    """Concrete shape for every graph input: overrides, else static dims with a dynamic batch = 1."""
    overrides = dict(overrides or {})
    specs = input_specs(model)
    unknown = set(overrides) - {s.name for s in specs}
    if unknown:
        raise HwoptError(f"--shape names unknown input(s) {sorted(unknown)}; model inputs are {[s.name for s in specs]}")
    shapes: Shapes = {}
    missing: list[str] = []
    for spec in specs:
        if spec.name in overrides:
            given = overrides[spec.name]
            if len(given) != len(spec.dims):
                raise HwoptError(f"--shape {spec.name} has rank {len(given)}, model input has rank {len(spec.dims)}")
            for i, (g, d) in enumerate(zip(given, spec.dims)):
                if isinstance(d, int) and d != g:
                    raise HwoptError(f"--shape {spec.name}: dim {i} is fixed to {d} in the model, got {g}")
            shapes[spec.name] = tuple(given)
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
        example = ",".join(f"{s.name}=" + "x".join(str(d) if isinstance(d, int) else "N" for d in s.dims) for s in specs)
        raise HwoptError(f"dynamic input dims need concrete sizes: {', '.join(missing)}; pass --shape like {example}")
    return shapes


def fix_input_shapes(model: onnx.ModelProto, shapes: Shapes) -> onnx.ModelProto:
    """Copy of the model with the given graph-input dims made static."""
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

    With `shapes`, inputs are fixed first so every intermediate gets concrete dims.
    """
    m = fix_input_shapes(model, shapes) if shapes else model
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # onnx raises several types; fall back below
        inferred = m
    if _all_shapes_known(inferred):
        return inferred
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        sym = SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=True)
        if sym is not None:
            return sym
    except Exception:  # symbolic inference asserts on some real models; keep onnx's partial answer
        pass
    return inferred


def _all_shapes_known(model: onnx.ModelProto) -> bool:
    known = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output) if _is_concrete(vi)}
    known |= {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    return all(o in known for n in model.graph.node for o in n.output if o)


def _is_concrete(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


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
    """Inputs for benchmarking: standard normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in input_specs(model):
        shape = shapes[spec.name]
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds
