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

#: recurrent layers: a kernel's `weight` is (directions, gates x hidden, input + hidden), W and R side by side
RNN_OPS = ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")
#: ops whose cost is dominated by a matrix product (compute-bound when large)
MATRIX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", *RNN_OPS)
#: op families the predictor one-hot encodes; anything else is "other"
FAMILIES = ("conv", "dwconv", "pwconv", "gemm", "pool", "gpool", "eltwise", "act", "concat", "norm", "move", "other")

#: a BatchNormalization left standalone (after a ConvTranspose, a concat, an input) is a per-channel
#: scale and shift at inference: priced like a broadcast Mul, not like the softmax and layer norms
#: the trees learned "norm" from (they put a 24x160x160 one at 3.5 ms; it ran in 0.09)
_ELTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Where", "BatchNormalization"}
_ACTS = {
    "Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Swish", "Gelu", "Elu", "Erf",
    "Exp", "Sqrt", "Softplus", "PRelu", "Mish", "Neg", "Abs", "Reciprocal", "Cast",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",  # one elementwise pass over the tensor
}
_POOLS = {"MaxPool", "AveragePool"}
_GPOOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
_NORMS = {"LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
          "LogSoftmax"}
_MOVES = {"Transpose", "Resize", "Upsample", "Pad", "Slice", "Split", "Gather", "Tile", "Expand", "DepthToSpace",
          "SpaceToDepth"}

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def fmt_shape(shape: Shape | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "?"


def numel(shape: Shape | None) -> int:
    """Element count; 0 for an unknown shape or one holding a negative (unresolved, e.g. -1) dim,
    so a shape the exporter left symbolic can never turn into negative FLOPs or bytes."""
    if not shape or any(d < 0 for d in shape):
        return 0
    return prod(shape)


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
        if op in ("Gemm", "MatMul") or op in RNN_OPS:
            return "gemm"  # a recurrent layer is one small matrix product per time step
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
        out = numel(self.output)
        if self.op in ("Conv",) and self.weight is not None:
            return out * numel(self.weight[1:])
        if self.op == "ConvTranspose" and self.weight is not None and self.inputs:
            return numel(self.inputs[0]) * numel(self.weight[1:])
        if self.op in ("Gemm", "MatMul") and self.inputs and self.inputs[0]:
            return out * max(self.inputs[0][-1], 0)  # A's last dim is the reduction length (transA is normalized away)
        if self.op in RNN_OPS and self.weight is not None and self.inputs:
            return numel(self.inputs[0][:-1]) * numel(self.weight)  # steps x batch x (W + R) per step
        if self.op in _POOLS and self.kernel is not None:
            return out * numel(self.kernel)
        return max(out, max((numel(s) for s in self.inputs), default=0))

    @cached_property
    def flops(self) -> float:
        """2 per MAC for matrix ops, plus one op per output element for every fused elementwise op."""
        base = 2.0 * self.macs if self.op in MATRIX_OPS else float(self.macs)
        return base + len(self.fused) * float(numel(self.output))

    @cached_property
    def bytes_moved(self) -> float:
        """Activation reads + writes + weight reads, at the kernel's element size."""
        size = DTYPE_BYTES.get(self.dtype, 4)
        act = sum(numel(s) for s in self.inputs) + numel(self.output)
        if "Add" in self.fused:
            act += numel(self.output)
        return float(size * (act + numel(self.weight)))

    @cached_property
    def io_bytes(self) -> float:
        """Activation bytes in and out: what an isolated measurement pays to copy or re-layout."""
        return float(DTYPE_BYTES.get(self.dtype, 4) * (sum(numel(s) for s in self.inputs) + numel(self.output)))

    def features(self) -> list[float]:
        """Numeric features for the learned predictor (log scales: costs span five decades).

        Total for any shape: unknown or negative dims count as 0 (never a math domain error)."""
        x = self.inputs[0] if self.inputs else ()
        c_in = max(x[1], 0) if len(x) > 1 else 1
        spatial = numel(x[2:]) if len(x) > 2 else 1
        c_out = max(self.output[1], 0) if len(self.output) > 1 else 1
        k = numel(self.kernel) if self.kernel else 1
        onehot = [1.0 if self.family == f else 0.0 for f in FAMILIES]
        return [
            log1p(self.flops), log1p(self.bytes_moved), log1p(numel(self.weight)),
            log1p(c_in), log1p(c_out), log1p(spatial), float(k), float(max(self.stride, 1)),
            log1p(max(self.groups, 1)), 1.0 if self.dtype == "int8" else 0.0, float(len(self.fused)),
            1.0 if "Add" in self.fused else 0.0, float(len(self.inputs)), *onehot,
            # vector-width fit (AVX-512 holds 16 floats; blocked layouts pad channels to 8/16) and
            # arithmetic intensity (FLOPs per byte: which side of the roofline the kernel sits on)
            float(c_in % 16 == 0), float(c_out % 16 == 0), float(c_out % 8 == 0),
            log1p(self.flops) - log1p(self.bytes_moved),
        ]

    def rnn_parts(self) -> list[tuple[Kernel, int]]:
        """A recurrent layer as the matrix products a CPU runtime runs, with their counts: per direction
        one input projection over all steps (a large GEMM) and one small recurrent product per step.
        Pricing those with the table's GEMM data beats treating the layer as a single product."""
        x = self.inputs[0] if self.inputs else ()
        if self.op not in RNN_OPS or self.weight is None or len(x) != 3:
            return []
        dirs, gates_h, width = self.weight
        steps, batch, n_in = x
        hidden = width - n_in
        proj = Kernel("Gemm", ((steps * batch, n_in),), (steps * batch, gates_h), (n_in, gates_h), dtype=self.dtype)
        step = Kernel("Gemm", ((batch, hidden),), (batch, gates_h), (hidden, gates_h), dtype=self.dtype)
        return [(proj, dirs), (step, dirs * steps)]

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
