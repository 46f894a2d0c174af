"""Run an ONNX graph as a trainable torch module, and write fine-tuned weights back into ONNX.

Pruning recovery, quantization reconstruction, KD-QAT and weight-sharing fine-tuning all train
an ONNX model in torch. Re-exporting a fine-tuned torch model would change node names,
initializer names and fusions that later stages (and the QDQ layout) depend on, so instead the
ONNX graph itself is interpreted with torch ops (`OnnxModule`) and only initializer values travel
back (`write_back`): the graph the user gave stays the graph we ship.

Weights (float initializers feeding Conv/ConvTranspose/Gemm/MatMul weight and bias slots, a bias
Add after a MatMul, norm scales and biases, PRelu slopes, LSTM W/R/B) become `nn.Parameter`s; every other
constant is a buffer. Quantize/DequantizeLinear run as straight-through fake-quant, so QDQ models
are trainable too (see `hwopt.graph.torch_ops.quantize_linear`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from hwopt.errors import HwoptError
from hwopt.graph.normalize import opset_of
from hwopt.graph.torch_ops import OPS

#: (op type -> input slots that hold trainable weights)
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "PRelu": (1,),
    "LSTM": (1, 2, 3),
}

#: integer range of each quantized ONNX element type
QRANGES: dict[int, tuple[int, int]] = {
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT4: (-8, 7),
    onnx.TensorProto.UINT4: (0, 15),
}

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_SUBGRAPH_OPS = {"If", "Loop", "Scan"}


@dataclass
class _Node:
    """One ONNX node prepared for execution: op function, value names and parsed attributes."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


def _torch_dtype(elem_type: int) -> torch.dtype:
    np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    if elem_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return torch.int8 if elem_type == onnx.TensorProto.INT4 else torch.uint8
    if elem_type == onnx.TensorProto.BFLOAT16:
        return torch.bfloat16
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def tensor_to_torch(t: onnx.TensorProto) -> Tensor:
    """An ONNX tensor as a torch tensor; int4/uint4 widen to int8/uint8 (torch has no 4-bit type)."""
    arr = numpy_helper.to_array(t)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.BFLOAT16):
        arr = arr.astype(np.float32 if t.data_type == onnx.TensorProto.BFLOAT16 else np.int16)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(_torch_dtype(t.data_type))
    return torch.from_numpy(np.array(arr, copy=True))


def _attr_value(attr: onnx.AttributeProto) -> Any:
    if attr.type == onnx.AttributeProto.TENSOR:
        return tensor_to_torch(attr.t)
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return None
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    return value


def _sanitize(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "t"
    if base[0].isdigit():
        base = f"t_{base}"
    candidate, i = base, 1
    while candidate in taken:
        candidate, i = f"{base}_{i}", i + 1
    taken.add(candidate)
    return candidate


def weight_initializers(model: onnx.ModelProto) -> set[str]:
    """Names of float initializers that act as learnable weights (see module docstring)."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    names: set[str] = set()
    for node in model.graph.node:
        slots = WEIGHT_SLOTS.get(node.op_type, ())
        if node.op_type == "Add":  # the bias of a MatMul-based Linear (torch exports 3-D Linear so)
            if any(producers.get(i) is not None and producers[i].op_type == "MatMul" for i in node.input):
                slots = (0, 1)
        for slot in slots:
            if slot < len(node.input) and node.input[slot] in inits:
                if inits[node.input[slot]].data_type in _FLOAT_TYPES:
                    names.add(node.input[slot])
    return names


def _quant_range(node: onnx.NodeProto, elem_types: dict[str, int]) -> tuple[int, int]:
    """Integer range of a QuantizeLinear from its zero point's type or `output_dtype`."""
    if len(node.input) > 2 and node.input[2]:
        elem = elem_types.get(node.input[2])
        if elem is None:
            raise HwoptError(f"QuantizeLinear {node.name!r}: zero point {node.input[2]!r} must be a constant")
    else:
        elem = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), onnx.TensorProto.UINT8)
    if elem not in QRANGES:
        raise HwoptError(f"QuantizeLinear {node.name!r}: type {onnx.TensorProto.DataType.Name(elem)} is not supported")
    return QRANGES[elem]


class OnnxModule(nn.Module):
    """An ONNX graph executed node by node with torch ops (differentiable).

    Inputs are given positionally in graph-input order (or by name as keyword arguments); the
    result is one tensor, or a tuple for several graph outputs. `param_names` maps initializer
    names to parameter attribute names, `buffer_names` does the same for other constants.
    Quantized nodes' integer ranges can be narrowed with `set_quant_range` (emulated 4/2-bit).
    """

    def __init__(self, model: onnx.ModelProto, trainable: Iterable[str] | None = None):
        super().__init__()
        graph = model.graph
        if opset_of(model) < 13:
            raise HwoptError(f"opset {opset_of(model)} model: normalize it first (hwopt.graph.normalize.normalize_model)")
        inits = {t.name: t for t in graph.initializer}
        learn = weight_initializers(model) | set(trainable or ())
        unknown = sorted(set(trainable or ()) - set(inits))
        if unknown:
            raise HwoptError(f"trainable tensors {unknown} are not initializers of the model")
        taken: set[str] = set(dir(self))
        self.param_names: dict[str, str] = {}
        self.buffer_names: dict[str, str] = {}
        self.elem_types: dict[str, int] = {name: t.data_type for name, t in inits.items()}
        for name, tensor in inits.items():
            value = tensor_to_torch(tensor)
            attr = _sanitize(name, taken)
            if name in learn:
                if not value.is_floating_point():
                    raise HwoptError(f"initializer {name!r} is {value.dtype}, only float tensors can be trained")
                self.register_parameter(attr, nn.Parameter(value))
                self.param_names[name] = attr
            else:
                self.register_buffer(attr, value)
                self.buffer_names[name] = attr
        self.input_names = [i.name for i in graph.input if i.name not in inits]
        self.output_names = [o.name for o in graph.output]
        self.nodes = [self._prepare(node) for node in self._topological(graph)]

    def _prepare(self, node: onnx.NodeProto) -> _Node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            what = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            raise HwoptError(f"op {what} (node {node.name!r}) is not supported by the ONNX-to-torch converter")
        attrs = {a.name: _attr_value(a) for a in node.attribute}
        attrs["_op"] = node.op_type
        attrs["_n_outputs"] = len(node.output)
        if node.op_type == "Cast":
            attrs["_to_dtype"] = _torch_dtype(attrs["to"])
        elif node.op_type == "Constant":
            attrs["_value"] = _constant_value(node, attrs)
        elif node.op_type == "ConstantOfShape":
            attrs["_value"] = attrs.get("value", torch.zeros(1, dtype=torch.float32))
        elif node.op_type == "QuantizeLinear":
            if attrs.get("block_size", 0):
                raise HwoptError(f"blocked QuantizeLinear (node {node.name!r}) is not supported")
            attrs["_qrange"] = _quant_range(node, self.elem_types)
        elif node.op_type == "DequantizeLinear" and attrs.get("block_size", 0):
            raise HwoptError(f"blocked DequantizeLinear (node {node.name!r}) is not supported")
        elif node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            raise HwoptError(f"MaxPool indices output (node {node.name!r}) is not supported")
        return _Node(node.name, node.op_type, list(node.input), list(node.output), attrs)

    @staticmethod
    def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
        """Nodes in an order where every input is produced first (exports are usually sorted)."""
        available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
        pending = list(graph.node)
        ordered: list[onnx.NodeProto] = []
        while pending:
            ready = [n for n in pending if all(i in available for i in n.input)]
            if not ready:
                sub = next((n for n in pending if n.op_type in _SUBGRAPH_OPS), None)
                if sub is not None:
                    raise HwoptError(f"op {sub.op_type} (node {sub.name!r}) is not supported by the ONNX-to-torch converter")
                missing = sorted({i for n in pending for i in n.input if i not in available})[:5]
                raise HwoptError(f"graph is not a DAG or uses undefined values: {missing}")
            ready_ids = {id(n) for n in ready}
            pending = [n for n in pending if id(n) not in ready_ids]
            ordered += ready
            available |= {o for n in ready for o in n.output}
        return ordered

    def tensor(self, name: str) -> Tensor:
        """The parameter or buffer that holds initializer `name`."""
        attr = self.param_names.get(name) or self.buffer_names.get(name)
        if attr is None:
            raise KeyError(name)
        return getattr(self, attr)

    def set_quant_range(self, node_name: str, qmin: int, qmax: int) -> None:
        """Narrow a QuantizeLinear's integer range (emulated low bit-width inside int8 QDQ)."""
        for node in self.nodes:
            if node.name == node_name and node.op_type == "QuantizeLinear":
                node.attrs["_qrange"] = (int(qmin), int(qmax))
                return
        raise KeyError(f"no QuantizeLinear node named {node_name!r}")

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if len(args) + len(kwargs) != len(self.input_names):
            raise HwoptError(f"model takes inputs {self.input_names}, got {len(args) + len(kwargs)} tensor(s)")
        env: dict[str, Tensor | None] = dict(zip(self.input_names, args))
        env.update(kwargs)
        env[""] = None
        for name, attr in self.param_names.items():
            env[name] = getattr(self, attr)
        for name, attr in self.buffer_names.items():
            env[name] = getattr(self, attr)
        return self.run_env(env)

    def run_env(self, env: dict[str, Tensor | None]) -> Tensor | tuple[Tensor, ...]:
        for node in self.nodes:
            try:
                result = OPS[node.op_type]([env[i] for i in node.inputs], node.attrs)
            except HwoptError:
                raise
            except Exception as exc:  # report which node failed; torch errors name only the kernel
                raise RuntimeError(f"node {node.name!r} ({node.op_type}) failed: {exc}") from exc
            if isinstance(result, tuple):
                for out, value in zip(node.outputs, result):
                    if out:
                        env[out] = value
            else:
                env[node.outputs[0]] = result
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def _constant_value(node: onnx.NodeProto, attrs: dict[str, Any]) -> Tensor:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise HwoptError(f"Constant node {node.name!r}: unsupported value attribute {sorted(attrs)}")


def onnx_to_torch(model: onnx.ModelProto, trainable: Iterable[str] | None = None) -> OnnxModule:
    """Convert a (normalized) ONNX model into a differentiable `OnnxModule`.

    `trainable` names extra float initializers to make parameters (e.g. quantization scales for
    LSQ). Unknown ops raise HwoptError naming the op.
    """
    return OnnxModule(model, trainable)


def write_back(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """Copy of `model` with the module's current parameter values in the matching initializers.

    Names, dtypes and shapes stay as they are; a parameter whose initializer is missing or has a
    different shape is an error (the module was made from another model).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {t.name: t for t in out.graph.initializer}
    for name, attr in module.param_names.items():
        init = by_name.get(name)
        if init is None:
            raise HwoptError(f"parameter {name!r} has no matching initializer in the model")
        value = getattr(module, attr).detach().cpu()
        if tuple(value.shape) != tuple(init.dims):
            raise HwoptError(f"parameter {name!r} has shape {tuple(value.shape)}, initializer has {tuple(init.dims)}")
        np_dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        array = value.float().numpy().astype(np_dtype) if value.dtype == torch.bfloat16 else value.numpy().astype(np_dtype)
        init.CopyFrom(numpy_helper.from_array(array, name))
    return out
