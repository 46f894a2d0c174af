"""Random training networks for in-context profiling: small CNNs assembled from block families.

The profiler times kernels inside these networks (see `node_times`), so the table learns what a
kernel costs where real models run it: after another kernel, in the runtime's blocked layout,
with the reorders and quantize steps a network needs. A network is a stride-2 stem conv (3x3;
from profile seed 3 on also 5x5 or 7x7) followed by 2-7 stages drawn from the families real
classifiers and detectors are made of (dense conv, depthwise separable, inverted residual with
and without squeeze-excite, ResNet basic block, ShuffleNet style split/concat/shuffle, pooling,
FPN-style upsample + concat), with random widths (not only multiples of 8: Paddle models use 24,
40, 72, 120...), activations, strides and input sizes, and a classifier head (global pool + Gemm)
or a detector-style head (1x1 conv, optional softmax or transpose) or a sequence head (every
position through Gemm or MatMul, as CRNN and transformer recognizers end: matrix products with
hundreds of rows). Draws are seeded; nothing is taken from the benchmark's held-out models (those are
torch exports of the zoo and the real models, checked against the profiled kernel sequences by
`benchmarks/latency_predict.py`).

int8 networks come in the two QDQ layouts predict meets: the builder's (every op its own Q/DQ
group, int32 bias at the product scale, which onnxruntime fuses into QLinearConv) and
onnxruntime's `quantize_static` output (which onnxruntime on this machine mostly runs as float
convs between Q/DQ nodes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from hwopt.latency.builders import GraphBuilder

RESOLUTIONS = [24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224]
WIDTHS = [8, 12, 16, 24, 32, 40, 48, 64, 72, 96, 120, 128, 160, 200, 256, 320, 480, 576, 640, 960, 1280]
ACTS = ["Relu", "Relu", "Relu6", "HardSwish", "Swish", "Sigmoid", None]
FAMILIES = ["conv", "dwsep", "ir", "ir_se", "basic", "shuffle", "pool", "neck"]
WIDE_STEMS_FROM_SEED = 3  # profile seeds from here on also draw 5x5 / 7x7 stems (`stem_kernels`)
DEEP_FROM_SEED = 4  # profile seeds from here on also draw deep, classifier-shaped networks (`Schedule`)
MAX_MACS = 120e6  # a network stays under ~15 ms at one thread, so a profile sees hundreds of them


def _pick(rng: np.random.Generator, values: list):
    return values[int(rng.integers(len(values)))]


def _width(rng: np.random.Generator, c: int, grow: bool) -> int:
    """Next stage's width: often the same, sometimes wider (after a stride), from the width list."""
    if not grow and rng.random() < 0.5:
        return c
    wider = [w for w in WIDTHS if c <= w <= 3 * c] if c < 160 else [w for w in WIDTHS if c <= w <= 6 * c]
    return _pick(rng, wider or WIDTHS)


def _stage(g: GraphBuilder, rng: np.random.Generator, x: str, family: str, c_out: int, stride: int, act: str) -> str:
    c_in = g.shapes[x][1]
    if family == "conv":
        k = _pick(rng, [1, 3, 3, 5])
        res = x if stride == 1 and c_in == c_out and rng.random() < 0.4 else None
        return g.conv(x, c_out, k, stride if k > 1 else 1, act=act, residual=res)
    if family == "dwsep":
        k = _pick(rng, [3, 3, 5])
        y = g.conv(x, c_in, k, stride, g=c_in, act=act)
        return g.conv(y, c_out, 1, act=act)
    if family in ("ir", "ir_se"):
        e, k = _pick(rng, [1, 3, 4, 6]), _pick(rng, [3, 3, 5])
        hid = c_in * e
        y = g.conv(x, hid, 1, act=act) if e > 1 else x
        y = g.conv(y, hid, k, stride, g=hid, act=act)
        if family == "ir_se":
            sq = g.conv(g.global_pool(y), max(8, hid // 4), 1, act="Relu")
            y = g.mul(y, g.conv(sq, hid, 1, act=_pick(rng, ["HardSigmoid", "Sigmoid"])))
        return g.conv(y, c_out, 1, residual=x if stride == 1 and c_out == c_in else None)
    if family == "basic":
        y = g.conv(x, c_out, 3, stride, act="Relu")
        short = x if stride == 1 and c_out == c_in else g.conv(x, c_out, 1, stride)
        return g.conv(y, c_out, 3, act="Relu", residual=short)
    if family == "shuffle":
        half = max(4, c_out // 2)
        a = g.conv(g.conv(x, half, 1, act="Relu"), half, 3, stride, g=half)
        b = g.conv(x, half, 1, stride, act="Relu")
        y = g.concat([g.conv(a, half, 1, act="Relu"), b])
        return g.channel_shuffle(y, 2)
    if family == "pool":
        if stride == 1:
            return g.pool(x, "MaxPool", 3, 1, pad=1)
        return g.pool(x, _pick(rng, ["MaxPool", "AveragePool"]), 2, 2)
    # neck: reduce, upsample back, concat with a lateral branch (FPN / PAN in detectors)
    n, c, h, w = g.shapes[x]
    if h < 4:
        return g.conv(x, c_out, 1, act=act)
    down = g.conv(x, c_out, 3, 2, act=act)
    up = g.resize(down, 2)
    if g.shapes[up][2:] != (h, w):
        return down
    return g.concat([up, g.conv(x, c_out, 1, act=act)])


def stem_kernels(profile_seed: int) -> tuple[int, ...]:
    """Stem conv sizes a profile run with this seed draws. Runs before `WIDE_STEMS_FROM_SEED` drew
    3x3 stems only (kept, so that their networks can still be rebuilt and re-timed); later runs also
    draw the 5x5 and 7x7 stride-2 stems of ResNet-style models, whose 3-channel 7x7 conv the
    predictor otherwise extrapolates (it priced ResNet-18's 1.4-1.9x too slow)."""
    return (3,) if profile_seed < WIDE_STEMS_FROM_SEED else (3, 3, 5, 7)


def deep_share(profile_seed: int) -> float:
    """Share of *deep* networks a profile run with this seed draws (0 before `DEEP_FROM_SEED`, whose
    streams stay unchanged so their networks can be rebuilt and re-timed).

    A shallow network (2-7 stages, a stride in about a third of them, none below 8x8) rarely ends
    where real classifiers spend their last milliseconds: 2x2 to 7x7 maps with 128-1280 channels
    after four or five strides. There the predictor extrapolated, and priced ResNet-18's last
    stages (3x3 convs on 2x2 and 4x4 maps) up to 2.6x too slow. Deep draws have 5-10 stages, a
    stride in most while the map is 4x4 or larger, and widths growing with each stride."""
    return 0.0 if profile_seed < DEEP_FROM_SEED else 0.5


def training_network(rng: np.random.Generator, int8: bool, seed: int, stems: tuple[int, ...] = (3,),
                     deep: float = 0.0) -> onnx.ModelProto:
    """One random network (fp32 or builder-QDQ int8); see the module docstring for the families.
    `stems`: the stem conv sizes to draw from (`stem_kernels`; one size draws nothing from `rng`);
    `deep`: the chance that this draw is a deep network (`deep_share`; 0 draws nothing from `rng`)."""
    is_deep = deep > 0 and rng.random() < deep
    stages, stride_p, min_hw = ((5, 11), 0.6, 4) if is_deep else ((2, 8), 0.35, 8)
    res = _pick(rng, RESOLUTIONS)
    c = _pick(rng, WIDTHS[:8])
    act = _pick(rng, ACTS)
    g = GraphBuilder((1, 3, res, res), int8=int8, seed=seed)
    y = g.conv(g.input, c, _pick(rng, list(stems)) if len(stems) > 1 else stems[0], 2, act=act or "Relu")
    for _ in range(int(rng.integers(*stages))):
        family = _pick(rng, FAMILIES)
        stride = 2 if g.shapes[y][2] >= min_hw and rng.random() < stride_p else 1
        c = _width(rng, g.shapes[y][1], stride > 1)
        y = _stage(g, rng, y, family, c, stride, _pick(rng, ACTS) or "Relu")
    head = rng.random()
    if head < 0.45:  # classifier head
        y = g.gemm(g.flatten(g.global_pool(y)), _pick(rng, [2, 4, 10, 100, 1000]))
    elif head < 0.7:  # sequence head: every position through matrix products (CRNN, transformer heads)
        _, c, h, w = g.shapes[y]
        seq = g.transpose(y, [0, 2, 3, 1])
        n_out = _pick(rng, [64, 96, 128, 256, 512, 1024, 4000])
        if int8 or rng.random() < 0.5:
            y = g.gemm(g.reshape(seq, (h * w, c)), n_out, act=_pick(rng, [None, "Relu"]))
        else:
            y = g.matmul(g.reshape(seq, (1, h * w, c)), n_out, act=_pick(rng, [None, "Relu", "Swish"]))
            y = g.matmul(y, _pick(rng, [64, 128, 256, 512, 4000]))
    else:  # dense head: per-position scores, as detectors and text detectors end
        y = g.conv(y, _pick(rng, [1, 2, 4, 6, 25, 80]), 1, act=_pick(rng, [None, "Sigmoid"]))
        tail = rng.random()
        if tail < 0.2:
            y = g.softmax(y, axis=1)
        elif tail < 0.4:
            y = g.transpose(y, [0, 2, 3, 1])
    return g.build([y])


def ort_quantized(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """`model` quantized by onnxruntime's `quantize_static` (QDQ, S8S8, per-channel weights)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice is not for us
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load(str(dst))


def network_macs(kernels) -> float:
    return float(sum(k.macs for k in kernels))
