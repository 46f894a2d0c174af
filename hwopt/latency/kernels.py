"""Kernel signatures: what one fused runtime kernel does, as a readable, hashable key.

A latency table is a lookup from these keys to milliseconds (Once-for-All style), so the key has
to be something a person can read and check: op, activation shapes, kernel, stride, groups,
dtype and what the runtime fused into it. The same object yields the numeric features the
learned predictor and the roofline model use (FLOPs, bytes moved, shape sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from math import log1p, prod

Shape = tuple[int, ...]

#: ops whose cost is dominated by a matrix product (compute-bound when large)
MATRIX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: op families the predictor one-hot encodes; anything else is "other"
FAMILIES = ("conv", "dwconv", "pwconv", "gemm", "pool", "gpool", "eltwise", "act", "concat", "norm", "move", "other")

_ELTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Where"}
_ACTS = {
    "Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Swish", "Gelu", "Elu", "Erf",
    "Exp", "Sqrt", "Softplus", "PRelu", "Mish", "Neg", "Abs", "Reciprocal", "Cast",
}
_POOLS = {"MaxPool", "AveragePool"}
_GPOOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
_NORMS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
          "LogSoftmax"}
_MOVES = {"Transpose", "Resize", "Upsample", "Pad", "Slice", "Split", "Gather", "Tile", "Expand", "DepthToSpace",
          "SpaceToDepth"}

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def fmt_shape(shape: Shape | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "?"


@dataclass(frozen=True)
class Kernel:
    """One kernel as the runtime runs it (after fusion). `nodes` names the ONNX nodes it covers.

    `inputs` are the activation inputs (not weights); `weight` is the weight tensor's shape for
    matrix ops. `fused` lists what runs inside the kernel besides the anchor op, e.g.
    ("Add", "Relu") for a residual conv; ops folded away at compile time (BatchNorm after a conv,
    a constant bias Add) are left out, because they do not change the kernel's cost.
    """

    op: str
    inputs: tuple[Shape, ...]
    output: Shape
    weight: Shape | None = None
    kernel: tuple[int, ...] | None = None
    stride: int = 1
    groups: int = 1
    dtype: str = "fp32"
    fused: tuple[str, ...] = ()
    nodes: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @cached_property
    def key(self) -> str:
        """The table key, e.g. `Conv|in=1x16x32x32|out=1x32x16x16|w=32x16x3x3|k=3x3|s=2|g=1|fp32|fused=Relu`."""
        parts = [self.op, "in=" + ",".join(fmt_shape(s) for s in self.inputs), "out=" + fmt_shape(self.output)]
        if self.weight is not None:
            parts.append("w=" + fmt_shape(self.weight))
        if self.kernel is not None:
            parts += ["k=" + fmt_shape(self.kernel), f"s={self.stride}", f"g={self.groups}"]
        parts.append(self.dtype)
        if self.fused:
            parts.append("fused=" + "+".join(self.fused))
        return "|".join(parts)

    @cached_property
    def family(self) -> str:
        """Coarse op family: depthwise and pointwise convs behave very differently from 3x3 dense ones."""
        op = self.op
        if op in ("Conv", "ConvTranspose"):
            cin = self.inputs[0][1] if self.inputs and len(self.inputs[0]) > 1 else 1
            if self.groups > 1 and self.groups == cin:
                return "dwconv"
            if self.kernel is not None and prod(self.kernel) == 1:
                return "pwconv"
            return "conv"
        if op in ("Gemm", "MatMul"):
            return "gemm"
        if op in _POOLS:
            return "pool"
        if op in _GPOOLS:
            return "gpool"
        if op in _ELTWISE:
            return "eltwise"
        if op in _ACTS:
            return "act"
        if op == "Concat":
            return "concat"
        if op in _NORMS:
            return "norm"
        if op in _MOVES:
            return "move"
        return "other"

    @cached_property
    def macs(self) -> int:
        """Multiply-accumulates of the anchor op; elementwise work is counted as one op per output element."""
        out = prod(self.output) if self.output else 0
        if self.op in ("Conv",) and self.weight is not None:
            return out * prod(self.weight[1:])
        if self.op == "ConvTranspose" and self.weight is not None and self.inputs:
            return prod(self.inputs[0]) * prod(self.weight[1:])
        if self.op in ("Gemm", "MatMul") and self.inputs:
            return out * self.inputs[0][-1]  # A's last dim is the reduction length (transA is normalized away)
        if self.op in _POOLS and self.kernel is not None:
            return out * prod(self.kernel)
        return max(out, max((prod(s) for s in self.inputs), default=0))

    @cached_property
    def flops(self) -> float:
        """2 per MAC for matrix ops, plus one op per output element for every fused elementwise op."""
        base = 2.0 * self.macs if self.op in MATRIX_OPS else float(self.macs)
        return base + len(self.fused) * float(prod(self.output) if self.output else 0)

    @cached_property
    def bytes_moved(self) -> float:
        """Activation reads + writes + weight reads, at the kernel's element size."""
        size = DTYPE_BYTES.get(self.dtype, 4)
        act = sum(prod(s) for s in self.inputs) + (prod(self.output) if self.output else 0)
        if "Add" in self.fused:
            act += prod(self.output)
        w = prod(self.weight) if self.weight is not None else 0
        return float(size * (act + w))

    @cached_property
    def io_bytes(self) -> float:
        """Activation bytes in and out: what an isolated measurement pays to copy or re-layout."""
        return float(DTYPE_BYTES.get(self.dtype, 4) * (sum(prod(s) for s in self.inputs) + prod(self.output or (0,))))

    def features(self) -> list[float]:
        """Numeric features for the learned predictor (log scales: costs span five decades)."""
        x = self.inputs[0] if self.inputs else ()
        c_in = x[1] if len(x) > 1 else 1
        spatial = prod(x[2:]) if len(x) > 2 else 1
        c_out = self.output[1] if len(self.output) > 1 else 1
        k = prod(self.kernel) if self.kernel else 1
        onehot = [1.0 if self.family == f else 0.0 for f in FAMILIES]
        return [
            log1p(self.flops), log1p(self.bytes_moved), log1p(prod(self.weight) if self.weight else 0),
            log1p(c_in), log1p(c_out), log1p(spatial), float(k), float(self.stride),
            log1p(self.groups), 1.0 if self.dtype == "int8" else 0.0, float(len(self.fused)),
            1.0 if "Add" in self.fused else 0.0, float(len(self.inputs)), *onehot,
        ]

    def to_dict(self) -> dict:
        """The fields a table entry stores next to its milliseconds (enough to rebuild the Kernel)."""
        d: dict = {"op": self.op, "inputs": [list(s) for s in self.inputs], "output": list(self.output), "dtype": self.dtype}
        if self.weight is not None:
            d["weight"] = list(self.weight)
        if self.kernel is not None:
            d.update(kernel=list(self.kernel), stride=self.stride, groups=self.groups)
        if self.fused:
            d["fused"] = list(self.fused)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Kernel:
        return cls(
            op=d["op"],
            inputs=tuple(tuple(s) for s in d["inputs"]),
            output=tuple(d["output"]),
            weight=tuple(d["weight"]) if d.get("weight") is not None else None,
            kernel=tuple(d["kernel"]) if d.get("kernel") is not None else None,
            stride=int(d.get("stride", 1)),
            groups=int(d.get("groups", 1)),
            dtype=d.get("dtype", "fp32"),
            fused=tuple(d.get("fused", ())),
        )
