"""Torch implementations of ONNX operators, one function per op type, for `onnx_to_torch`.

Every function takes the node's inputs (tensors, `None` for omitted optional inputs) and its
attributes (a plain dict prepared at conversion time) and returns one tensor or a tuple. They
follow the ONNX operator specification at opset 13 and later, including the corners real exports
hit (asymmetric pads, ceil-mode pooling, 0 and -1 in Reshape, negative-step Slice), so that a
converted model reproduces onnxruntime's outputs and stays differentiable for fine-tuning.

Shape-valued inputs (Reshape's shape, Slice's starts...) are read from tensors at run time, so
dynamic shapes work: `Shape -> Gather -> Concat -> Reshape` chains compute on the fly.
Quantize/DequantizeLinear are straight-through fake-quant; see `quantize_linear`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hwopt.errors import HwoptError

Attrs = dict[str, Any]
OpFn = Callable[[list[Tensor | None], Attrs], Tensor | tuple[Tensor, ...]]

OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Register a function as the implementation of one or more ONNX op types."""

    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return register


def ints(t: Tensor | None) -> list[int]:
    """A 1-D int tensor (shape, axes, pads...) as a Python list."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _scalar(t: Tensor | None, default: float | None = None) -> float | None:
    return default if t is None else t.reshape(-1)[0].item()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---------------------------------------------------------------- elementwise and activations

def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda x, a: fn(x[0], x[1])


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda x, a: fn(x[0])


OPS.update(
    {
        "Add": _binary(torch.add),
        "Sub": _binary(torch.sub),
        "Mul": _binary(torch.mul),
        "Equal": _binary(torch.eq),
        "Less": _binary(torch.lt),
        "LessOrEqual": _binary(torch.le),
        "Greater": _binary(torch.gt),
        "GreaterOrEqual": _binary(torch.ge),
        "And": _binary(torch.logical_and),
        "Or": _binary(torch.logical_or),
        "Xor": _binary(torch.logical_xor),
        "Not": _unary(torch.logical_not),
        "Sqrt": _unary(torch.sqrt),
        "Neg": _unary(torch.neg),
        "Abs": _unary(torch.abs),
        "Exp": _unary(torch.exp),
        "Log": _unary(torch.log),
        "Reciprocal": _unary(torch.reciprocal),
        "Erf": _unary(torch.erf),
        "Sigmoid": _unary(torch.sigmoid),
        "Tanh": _unary(torch.tanh),
        "Relu": _unary(torch.relu),
        "Sin": _unary(torch.sin),
        "Cos": _unary(torch.cos),
        "Floor": _unary(torch.floor),
        "Ceil": _unary(torch.ceil),
        "Sign": _unary(torch.sign),
        "Softplus": _unary(F.softplus),
        "Softsign": _unary(F.softsign),
        "Mish": _unary(F.mish),
        "Identity": _unary(lambda t: t),
        "HardSwish": _unary(F.hardswish),
        "Where": lambda x, a: torch.where(x[0], x[1], x[2]),
        "Max": lambda x, a: _fold(torch.maximum, x),
        "Min": lambda x, a: _fold(torch.minimum, x),
        "Sum": lambda x, a: _fold(torch.add, x),
        "Mean": lambda x, a: _fold(torch.add, x) / len(x),
    }
)


def _fold(fn: Callable[[Tensor, Tensor], Tensor], xs: Sequence[Tensor | None]) -> Tensor:
    out = xs[0]
    for t in xs[1:]:
        out = fn(out, t)
    return out


@op("Div")
def div(x: list, a: Attrs) -> Tensor:
    if x[0].is_floating_point():
        return x[0] / x[1]
    return torch.div(x[0], x[1], rounding_mode="trunc")  # ONNX integer Div truncates


@op("Mod")
def mod(x: list, a: Attrs) -> Tensor:
    return torch.fmod(x[0], x[1]) if a.get("fmod", 0) else torch.remainder(x[0], x[1])


@op("Pow")
def pow_(x: list, a: Attrs) -> Tensor:
    return torch.pow(x[0], x[1]).to(x[0].dtype)  # the result keeps the base's type


@op("LeakyRelu")
def leaky_relu(x: list, a: Attrs) -> Tensor:
    return F.leaky_relu(x[0], a.get("alpha", 0.01))


@op("Elu")
def elu(x: list, a: Attrs) -> Tensor:
    return F.elu(x[0], a.get("alpha", 1.0))


@op("Selu")
def selu(x: list, a: Attrs) -> Tensor:
    alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x[0] > 0, x[0], alpha * (torch.exp(x[0]) - 1))


@op("PRelu")
def prelu(x: list, a: Attrs) -> Tensor:
    return torch.where(x[0] < 0, x[0] * x[1], x[0])


@op("HardSigmoid")
def hard_sigmoid(x: list, a: Attrs) -> Tensor:
    return torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0.0, 1.0)


@op("Clip")
def clip(x: list, a: Attrs) -> Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    out = x[0]
    if lo is not None:
        out = torch.maximum(out, torch.as_tensor(lo, dtype=out.dtype))
    if hi is not None:
        out = torch.minimum(out, torch.as_tensor(hi, dtype=out.dtype))
    return out


@op("Gelu")
def gelu(x: list, a: Attrs) -> Tensor:
    return F.gelu(x[0], approximate=a.get("approximate", "none"))


@op("Softmax")
def softmax(x: list, a: Attrs) -> Tensor:
    return torch.softmax(x[0], a.get("axis", -1))


@op("LogSoftmax")
def log_softmax(x: list, a: Attrs) -> Tensor:
    return torch.log_softmax(x[0], a.get("axis", -1))


# ---------------------------------------------------------------- linear algebra and conv

@op("MatMul")
def matmul(x: list, a: Attrs) -> Tensor:
    return torch.matmul(x[0], x[1])


@op("Gemm")
def gemm(x: list, a: Attrs) -> Tensor:
    A = x[0].transpose(0, 1) if a.get("transA", 0) else x[0]
    B = x[1].transpose(0, 1) if a.get("transB", 0) else x[1]
    out = torch.matmul(A, B)
    alpha = a.get("alpha", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if len(x) > 2 and x[2] is not None:
        beta = a.get("beta", 1.0)
        out = out + (x[2] * beta if beta != 1.0 else x[2])
    return out


@op("Einsum")
def einsum(x: list, a: Attrs) -> Tensor:
    return torch.einsum(a["equation"], *x)


def _same_pads(in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], mode: str) -> list[int]:
    """Explicit ONNX pads [b1, b2, ..., e1, e2, ...] for auto_pad SAME_UPPER/SAME_LOWER/VALID."""
    n = len(in_sizes)
    if mode == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _window_params(x: Tensor, kernel: Sequence[int], a: Attrs) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and explicit pads of a conv/pool node given its input."""
    n = len(kernel)
    strides = list(a.get("strides", [1] * n))
    dilations = list(a.get("dilations", [1] * n))
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        pads = _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad)
    else:
        pads = list(a.get("pads", [0] * (2 * n)))
    return strides, dilations, pads


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX [b1..bn, e1..en] over the spatial dims -> F.pad's last-dim-first (b, e) pairs."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _symmetric(pads: Sequence[int]) -> bool:
    n = len(pads) // 2
    return list(pads[:n]) == list(pads[n:])


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("Conv")
def conv(x: list, a: Attrs) -> Tensor:
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    n = w.dim() - 2
    strides, dilations, pads = _window_params(inp, w.shape[2:], a)
    if _symmetric(pads):
        padding = pads[:n]
    else:
        inp, padding = F.pad(inp, _torch_pad(pads)), [0] * n
    return _CONV[n](inp, w, b, strides, padding, dilations, a.get("group", 1))


@op("ConvTranspose")
def conv_transpose(x: list, a: Attrs) -> Tensor:
    """Full transposed conv, then ONNX's pads/output_padding/output_shape by cropping and padding.

    Computing the unpadded result and trimming it handles asymmetric and SAME pads uniformly;
    the bias is added last so that positions added by output_padding get it too, as in the spec.
    """
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    n = w.dim() - 2
    strides = list(a.get("strides", [1] * n))
    dilations = list(a.get("dilations", [1] * n))
    out_pad = list(a.get("output_padding", [0] * n))
    auto_pad = a.get("auto_pad", "NOTSET")
    full = _CONV_T[n](inp, w, None, strides, 0, 0, a.get("group", 1), dilations)
    if "output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        targets = list(a["output_shape"])[-n:] if "output_shape" in a else [s * strides[i] for i, s in enumerate(inp.shape[2:])]
        begin, end = [], []
        for i in range(n):
            total = full.shape[2 + i] + out_pad[i] - targets[i]
            small, large = total // 2, total - total // 2
            # the spec (and onnxruntime): SAME_UPPER puts an odd pad element at the end, else first
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    else:
        pads = list(a.get("pads", [0] * (2 * n)))
    tpad: list[int] = []
    for i in reversed(range(n)):
        tpad += [-pads[i], out_pad[i] - pads[i + n]]
    out = F.pad(full, tpad)
    if b is not None:
        out = out + b.reshape([1, -1] + [1] * n)
    return out


# ---------------------------------------------------------------- recurrent

def _lstm_direction(x: Tensor, w: Tensor, r: Tensor, b: Tensor | None, h: Tensor, c: Tensor,
                    p: Tensor | None, reverse: bool, clip: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of ONNX LSTM (gates i, o, f, c; default activations): (Y, h, c)."""
    hidden = r.shape[1]
    xw = torch.matmul(x, w.t())  # (T, B, 4H), all time steps at once
    if b is not None:
        xw = xw + b[: 4 * hidden] + b[4 * hidden :]
    pi, po, pf = (None, None, None) if p is None else p.split(hidden)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    ys: list[Tensor] = []
    for t in steps:
        g = xw[t] + torch.matmul(h, r.t())
        if clip is not None:
            g = g.clamp(-clip, clip)
        gi, go, gf, gc = g.split(hidden, dim=-1)
        i = torch.sigmoid(gi if pi is None else gi + pi * c)
        f = torch.sigmoid(gf if pf is None else gf + pf * c)
        c = f * c + i * torch.tanh(gc)
        o = torch.sigmoid(go if po is None else go + po * c)
        h = o * torch.tanh(c)
        ys.append(h)
    if reverse:
        ys.reverse()
    return torch.stack(ys), h, c


@op("LSTM")
def lstm(x: list, a: Attrs) -> tuple[Tensor, Tensor, Tensor]:
    """ONNX LSTM (forward, reverse or bidirectional; peepholes; `layout` 0 or 1).

    Only the default activations (Sigmoid, Tanh, Tanh) and full-length sequences are supported:
    that is what torch and Paddle exports emit.
    """
    default = ["Sigmoid", "Tanh", "Tanh"] * (2 if a.get("direction") == "bidirectional" else 1)
    if a.get("activations") not in (None, default):
        raise HwoptError(f"LSTM with activations {a['activations']} is not supported by the ONNX-to-torch converter")
    if a.get("input_forget", 0):
        raise HwoptError("LSTM with input_forget=1 is not supported by the ONNX-to-torch converter")
    xs, w, r = x[0], x[1], x[2]
    b, lens, h0, c0, p = (x[i] if len(x) > i else None for i in range(3, 8))
    batch_first = a.get("layout", 0) == 1
    if batch_first:
        xs = xs.transpose(0, 1)
        h0, c0 = (None if t is None else t.transpose(0, 1) for t in (h0, c0))
    if lens is not None and bool((lens != xs.shape[0]).any()):
        raise HwoptError("LSTM with sequence_lens shorter than the input is not supported by the ONNX-to-torch converter")
    dirs, hidden = w.shape[0], r.shape[2]
    zeros = xs.new_zeros(dirs, xs.shape[1], hidden)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    reverse = [a.get("direction", "forward") == "reverse"] if dirs == 1 else [False, True]
    outs = [_lstm_direction(xs, w[d], r[d], None if b is None else b[d], h0[d], c0[d], None if p is None else p[d],
                            reverse[d], a.get("clip")) for d in range(dirs)]
    y = torch.stack([o[0] for o in outs], dim=1)  # (T, dirs, B, H)
    y_h, y_c = torch.stack([o[1] for o in outs]), torch.stack([o[2] for o in outs])
    if batch_first:
        return y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    return y, y_h, y_c


# ---------------------------------------------------------------- normalization

@op("BatchNormalization")
def batch_norm(x: list, a: Attrs) -> Tensor:
    """Inference form: running statistics from the model, as runtimes compute it.

    The statistics are detached: exporters deduplicate equal initializers, so a running mean of
    zeros may be the very tensor that is also some layer's (trainable) bias.
    """
    return F.batch_norm(x[0], x[3].detach(), x[4].detach(), x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))


@op("InstanceNormalization")
def instance_norm(x: list, a: Attrs) -> Tensor:
    return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=a.get("epsilon", 1e-5))


@op("LayerNormalization")
def layer_norm(x: list, a: Attrs) -> Tensor:
    inp = x[0]
    axis = _axis(a.get("axis", -1), inp.dim())
    dims = list(range(axis, inp.dim()))
    mean = inp.mean(dims, keepdim=True)
    var = (inp - mean).pow(2).mean(dims, keepdim=True)
    out = (inp - mean) / torch.sqrt(var + a.get("epsilon", 1e-5)) * x[1]
    return out + x[2] if len(x) > 2 and x[2] is not None else out


@op("GroupNormalization")
def group_norm(x: list, a: Attrs) -> Tensor:
    inp, scale, bias = x[0], x[1], x[2]
    groups = a["num_groups"]
    channels = inp.shape[1]
    if scale.numel() != channels:  # opset 18 gave scale/bias per group; opset 21 per channel
        scale = scale.repeat_interleave(channels // groups)
        bias = bias.repeat_interleave(channels // groups)
    return F.group_norm(inp, groups, scale, bias, a.get("epsilon", 1e-5))


# ---------------------------------------------------------------- pooling

def _pool_output_sizes(in_sizes: Sequence[int], kernel: Sequence[int], strides, dilations, pads, ceil: bool) -> list[int]:
    """ONNX output sizes; with ceil_mode a window must start inside the input or its left pad."""
    n = len(kernel)
    out = []
    for i in range(n):
        eff = (kernel[i] - 1) * dilations[i] + 1
        span = in_sizes[i] + pads[i] + pads[i + n] - eff
        size = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (size - 1) * strides[i] >= in_sizes[i] + pads[i]:
            size -= 1
        out.append(size)
    return out


def _crop_to(t: Tensor, sizes: Sequence[int]) -> Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(0, s) for s in sizes)]


_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool")
def max_pool(x: list, a: Attrs) -> Tensor:
    inp = x[0]
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides, dilations, pads = _window_params(inp, kernel, a)
    ceil = bool(a.get("ceil_mode", 0))
    sizes = _pool_output_sizes(inp.shape[2:], kernel, strides, dilations, pads, ceil)
    padded = F.pad(inp, _torch_pad(pads), value=-math.inf) if any(pads) else inp
    out = _MAXPOOL[n](padded, kernel, strides, 0, dilations, ceil_mode=ceil)
    return _crop_to(out, sizes)


@op("AveragePool")
def avg_pool(x: list, a: Attrs) -> Tensor:
    """Pads are applied explicitly; without count_include_pad the divisor counts real elements.

    Dividing the pooled zero-padded input by the pooled zero-padded mask of ones gives the mean
    over real elements for any pads, including asymmetric and ceil-mode ones.
    """
    inp = x[0]
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides, dilations, pads = _window_params(inp, kernel, a)
    if any(d != 1 for d in dilations):
        raise HwoptError("AveragePool with dilations is not supported")
    ceil = bool(a.get("ceil_mode", 0))
    sizes = _pool_output_sizes(inp.shape[2:], kernel, strides, dilations, pads, ceil)
    tpad = _torch_pad(pads)
    padded = F.pad(inp, tpad) if any(pads) else inp
    out = _AVGPOOL[n](padded, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    if not a.get("count_include_pad", 0) and (any(pads) or ceil):
        mask = F.pad(torch.ones_like(inp[:1, :1]), tpad) if any(pads) else torch.ones_like(inp[:1, :1])
        out = out / _AVGPOOL[n](mask, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    return _crop_to(out, sizes)


@op("GlobalAveragePool")
def global_avg_pool(x: list, a: Attrs) -> Tensor:
    return x[0].mean(dim=list(range(2, x[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(x: list, a: Attrs) -> Tensor:
    return x[0].amax(dim=list(range(2, x[0].dim())), keepdim=True)


# ---------------------------------------------------------------- reductions

def _reduce_axes(x: list, a: Attrs) -> list[int] | None:
    """Axes from the input (opset 18+; ReduceSum 13+) or the attribute; None = all (or no-op)."""
    axes = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("axes", []))
    return axes or None


def _reduce(fn: Callable[[Tensor, list[int], bool], Tensor]) -> OpFn:
    def run(x: list, a: Attrs) -> Tensor:
        keep = bool(a.get("keepdims", 1))
        axes = _reduce_axes(x, a)
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                return x[0]
            axes = list(range(x[0].dim()))
        return fn(x[0], axes, keep)

    return run


OPS.update(
    {
        "ReduceMean": _reduce(lambda t, d, k: t.mean(d, keepdim=k)),
        "ReduceSum": _reduce(lambda t, d, k: t.sum(d, keepdim=k)),
        "ReduceMax": _reduce(lambda t, d, k: t.amax(d, keepdim=k)),
        "ReduceMin": _reduce(lambda t, d, k: t.amin(d, keepdim=k)),
        "ReduceProd": _reduce(lambda t, d, k: _prod(t, d, k)),
        "ReduceSumSquare": _reduce(lambda t, d, k: (t * t).sum(d, keepdim=k)),
        "ReduceL2": _reduce(lambda t, d, k: torch.sqrt((t * t).sum(d, keepdim=k))),
    }
)


def _prod(t: Tensor, dims: list[int], keep: bool) -> Tensor:
    for d in sorted((_axis(d, t.dim()) for d in dims), reverse=True):
        t = t.prod(d, keepdim=keep)
    return t


@op("ArgMax", "ArgMin")
def arg_max_min(x: list, a: Attrs) -> Tensor:
    fn = torch.argmax if a["_op"] == "ArgMax" else torch.argmin
    inp = x[0].flip(a.get("axis", 0)) if a.get("select_last_index", 0) else x[0]
    out = fn(inp, dim=a.get("axis", 0), keepdim=bool(a.get("keepdims", 1)))
    if a.get("select_last_index", 0):
        out = x[0].shape[a.get("axis", 0)] - 1 - out
    return out


# ---------------------------------------------------------------- shape manipulation

@op("Concat")
def concat(x: list, a: Attrs) -> Tensor:
    return torch.cat([t for t in x if t is not None], a["axis"])


@op("Split")
def split(x: list, a: Attrs) -> tuple[Tensor, ...]:
    inp = x[0]
    axis = a.get("axis", 0)
    sizes = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("split", []))
    if not sizes:
        parts = a.get("num_outputs", a["_n_outputs"])
        chunk = -(-inp.shape[axis] // parts)
        return tuple(torch.split(inp, chunk, axis))
    return tuple(torch.split(inp, sizes, axis))


@op("Slice")
def slice_(x: list, a: Attrs) -> Tensor:
    inp = x[0]
    starts, ends = ints(x[1]), ints(x[2])
    axes = ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    out = inp
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, inp.dim())
        begin, stop, stride = slice(start, end, step).indices(inp.shape[axis])  # ONNX clamping == Python's
        if stride > 0:
            index = (slice(None),) * axis + (slice(begin, stop, stride),)
            out = out[index]
        else:
            out = out.index_select(axis, torch.arange(begin, stop, stride, device=inp.device))
    return out


@op("Reshape")
def reshape(x: list, a: Attrs) -> Tensor:
    shape = ints(x[1])
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


@op("Flatten")
def flatten(x: list, a: Attrs) -> Tensor:
    axis = _axis(a.get("axis", 1), x[0].dim())
    lead = math.prod(x[0].shape[:axis])
    return x[0].reshape(lead, -1) if x[0].numel() else x[0].reshape(lead, math.prod(x[0].shape[axis:]))


@op("Transpose")
def transpose(x: list, a: Attrs) -> Tensor:
    perm = a.get("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(*perm)


@op("Squeeze")
def squeeze(x: list, a: Attrs) -> Tensor:
    axes = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("axes", []))
    if not axes:
        return x[0].squeeze()
    return x[0].squeeze(tuple(_axis(ax, x[0].dim()) for ax in axes))


@op("Unsqueeze")
def unsqueeze(x: list, a: Attrs) -> Tensor:
    axes = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("axes", []))
    rank = x[0].dim() + len(axes)
    out = x[0]
    for ax in sorted(_axis(ax, rank) for ax in axes):
        out = out.unsqueeze(ax)
    return out


@op("Gather")
def gather(x: list, a: Attrs) -> Tensor:
    data, idx = x[0], x[1].long()
    axis = _axis(a.get("axis", 0), data.dim())
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    flat = data.index_select(axis, idx.reshape(-1))
    return flat.reshape(data.shape[:axis] + idx.shape + data.shape[axis + 1 :])


@op("GatherElements")
def gather_elements(x: list, a: Attrs) -> Tensor:
    axis = _axis(a.get("axis", 0), x[0].dim())
    idx = x[1].long()
    return torch.gather(x[0], axis, torch.where(idx < 0, idx + x[0].shape[axis], idx))


@op("Shape")
def shape(x: list, a: Attrs) -> Tensor:
    dims = list(x[0].shape)
    rank = len(dims)
    start = max(0, min(rank, _axis(a.get("start", 0), rank)))
    end = max(0, min(rank, _axis(a.get("end", rank), rank)))
    return torch.tensor(dims[start:end], dtype=torch.int64)


@op("Size")
def size(x: list, a: Attrs) -> Tensor:
    return torch.tensor(x[0].numel(), dtype=torch.int64)


@op("Cast")
def cast(x: list, a: Attrs) -> Tensor:
    return x[0].to(a["_to_dtype"])


@op("CastLike")
def cast_like(x: list, a: Attrs) -> Tensor:
    return x[0].to(x[1].dtype)


@op("Constant")
def constant(x: list, a: Attrs) -> Tensor:
    return a["_value"]


@op("ConstantOfShape")
def constant_of_shape(x: list, a: Attrs) -> Tensor:
    value = a["_value"]
    return torch.full(ints(x[0]), value.reshape(-1)[0].item(), dtype=value.dtype)


@op("Dropout")
def dropout(x: list, a: Attrs) -> Tensor | tuple[Tensor, Tensor]:
    """Inference semantics (what runtimes do); the optional mask output is all true."""
    if a["_n_outputs"] > 1:
        return x[0], torch.ones_like(x[0], dtype=torch.bool)
    return x[0]


@op("Pad")
def pad(x: list, a: Attrs) -> Tensor:
    inp = x[0]
    pads = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("pads", []))
    value = _scalar(x[2] if len(x) > 2 else None, a.get("value", 0.0))
    rank = inp.dim()
    axes = ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(rank))
    full_b, full_e = [0] * rank, [0] * rank
    for i, ax in enumerate(axes):
        ax = _axis(ax, rank)
        full_b[ax], full_e[ax] = pads[i], pads[i + len(axes)]
    mode = a.get("mode", "constant")
    first = next((i for i in range(rank) if full_b[i] or full_e[i]), rank)
    tpad: list[int] = []
    for i in reversed(range(first, rank)):
        tpad += [full_b[i], full_e[i]]
    if not tpad:
        return inp
    if mode == "constant":
        return F.pad(inp, tpad, value=value)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise HwoptError(f"Pad mode {mode!r} is not supported")
    return F.pad(inp, tpad, mode=torch_mode)


@op("Expand")
def expand(x: list, a: Attrs) -> Tensor:
    target = torch.broadcast_shapes(tuple(x[0].shape), tuple(ints(x[1])))
    return x[0].expand(target)


@op("Tile")
def tile(x: list, a: Attrs) -> Tensor:
    return x[0].repeat(ints(x[1]))


@op("Range")
def range_(x: list, a: Attrs) -> Tensor:
    start, limit, delta = (t.reshape(()) for t in x[:3])
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=x[0].dtype)


@op("DepthToSpace")
def depth_to_space(x: list, a: Attrs) -> Tensor:
    b, c, h, w = x[0].shape
    bs = a["blocksize"]
    if a.get("mode", "DCR") == "DCR":
        t = x[0].reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        t = x[0].reshape(b, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@op("SpaceToDepth")
def space_to_depth(x: list, a: Attrs) -> Tensor:
    b, c, h, w = x[0].shape
    bs = a["blocksize"]
    t = x[0].reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return t.reshape(b, c * bs * bs, h // bs, w // bs)


# ---------------------------------------------------------------- Resize

def _source_coords(out_len: int, in_len: int, scale: float, mode: str, device: torch.device) -> Tensor:
    """Input coordinate of every output position, per ONNX coordinate_transformation_mode."""
    i = torch.arange(out_len, dtype=torch.float64, device=device)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(i)
    if mode == "align_corners":
        return i * (in_len - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(i)
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (in_len * scale)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (i + 0.5) / scale - 0.5
    raise HwoptError(f"Resize coordinate_transformation_mode {mode!r} is not supported")


def _nearest_index(coords: Tensor, mode: str, in_len: int) -> Tensor:
    if mode == "floor":
        idx = torch.floor(coords)
    elif mode == "ceil":
        idx = torch.ceil(coords)
    else:
        frac = coords - torch.floor(coords)
        tie = torch.isclose(frac, torch.full_like(frac, 0.5))
        rounded = torch.floor(coords + 0.5)
        idx = torch.where(tie, torch.floor(coords) if mode == "round_prefer_floor" else torch.ceil(coords), rounded)
    return idx.clamp(0, in_len - 1).long()


@op("Resize", "Upsample")
def resize(x: list, a: Attrs) -> Tensor:
    """Separable nearest / (bi)linear resize that follows ONNX's coordinate modes exactly.

    Each resized axis is an index_select (nearest) or a blend of two index_selects (linear), so
    every coordinate mode and rounding rule is reproduced without depending on which subset
    F.interpolate happens to cover.
    """
    inp = x[0]
    if a["_op"] == "Upsample":
        scales, sizes = [float(v) for v in x[1].tolist()], None
        coord_mode, nearest_mode = "asymmetric", "floor"
    else:
        scales = [float(v) for v in x[2].tolist()] if len(x) > 2 and x[2] is not None and x[2].numel() else None
        sizes = ints(x[3]) if len(x) > 3 and x[3] is not None and x[3].numel() else None
        coord_mode = a.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise HwoptError(f"Resize mode {mode!r} is not supported (nearest and linear are)")
    if a.get("axes") or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise HwoptError("Resize with axes or keep_aspect_ratio_policy is not supported")
    rank = inp.dim()
    if sizes is not None:
        scales = [sizes[d] / inp.shape[d] for d in range(rank)]
    else:
        sizes = [int(math.floor(inp.shape[d] * scales[d])) for d in range(rank)]
    out = inp
    for d in range(rank):
        in_len, out_len = inp.shape[d], sizes[d]
        if in_len == out_len and scales[d] == 1.0:
            continue
        coords = _source_coords(out_len, in_len, scales[d], coord_mode, inp.device)
        if mode == "nearest":
            out = out.index_select(d, _nearest_index(coords, nearest_mode, in_len))
            continue
        coords = coords.clamp(0, in_len - 1)
        lo = torch.floor(coords).long()
        hi = torch.clamp(lo + 1, max=in_len - 1)
        frac_shape = [1] * rank
        frac_shape[d] = out_len
        frac = (coords - lo).to(out.dtype).reshape(frac_shape)
        out = out.index_select(d, lo) * (1 - frac) + out.index_select(d, hi) * frac
    return out


# ---------------------------------------------------------------- quantization (fake-quant)

def _per_axis(t: Tensor, like: Tensor, axis: int) -> Tensor:
    """Reshape a per-channel scale/zero point so it broadcasts along `axis` of `like`."""
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[_axis(axis, like.dim())] = t.numel()
    return t.reshape(shape)


def round_ste(t: Tensor) -> Tensor:
    """Round half to even (as runtimes do) with an identity gradient (straight-through)."""
    return t + (torch.round(t) - t).detach()


@op("QuantizeLinear")
def quantize_linear(x: list, a: Attrs) -> Tensor:
    """saturate(round(x / scale) + zero_point), carried as a float tensor of integer values.

    The integer range comes from the zero point's type (int8, uint8, int4, ...) or from a
    narrower range set on the node for emulated low bit-widths. The gradient is straight-through
    inside the range and zero outside; with the same scale tensor feeding the matching
    DequantizeLinear, autograd gives the scale exactly LSQ's gradient.
    """
    inp = x[0]
    axis = a.get("axis", 1)
    scale = _per_axis(x[1], inp, axis)
    zp = _per_axis(x[2].to(inp.dtype), inp, axis) if len(x) > 2 and x[2] is not None else 0.0
    qmin, qmax = a["_qrange"]
    return torch.clamp(round_ste(inp / scale) + zp, qmin, qmax)


@op("DequantizeLinear")
def dequantize_linear(x: list, a: Attrs) -> Tensor:
    scale = x[1]
    q = x[0].to(scale.dtype)
    axis = a.get("axis", 1)
    s = _per_axis(scale, q, axis)
    zp = _per_axis(x[2].to(scale.dtype), q, axis) if len(x) > 2 and x[2] is not None else 0.0
    return (q - zp) * s
