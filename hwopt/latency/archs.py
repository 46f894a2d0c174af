"""Reference architectures as ONNX graphs, for calibrating and checking latency models.

HW-NAS-Bench publishes Raspberry Pi 4 / Pixel 3 latencies per architecture of the NAS-Bench-201
and FBNet spaces, and projects such as ncnn and XNNPACK publish per-model numbers for classic
networks. To use those numbers, the networks are rebuilt here from their published definitions
(layer lists, not code) with the same graph builder the profiler uses, so their kernels come
from the same fusion rules as any user model.
"""

from __future__ import annotations

import onnx

from hwopt.latency.builders import GraphBuilder

# ---- NAS-Bench-201 (CIFAR-10 variant: 32x32 input, C=16, N=5 cells per stage, 10 classes) ----
NB201_EDGES = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]  # op_codes order: node <- source


def nb201_canonical(op_codes: str) -> str | None:
    """`op_codes` with every edge that cannot reach the cell output set to `none` (a converter drops
    them), so archs that compute the same network get the same string; None for degenerate archs
    (the cell outputs zeros). NAS-Bench-201's 15625 archs are about 1000 distinct networks."""
    ops = dict(zip(NB201_EDGES, (int(ch) for ch in op_codes)))
    alive = {0}
    for j in (1, 2, 3):
        if any(ops[(j, i)] and i in alive for i in range(j)):
            alive.add(j)
    if 3 not in alive:
        return None
    useful = {3}
    for j in (3, 2, 1):
        if j in useful:
            useful |= {i for i in range(j) if ops[(j, i)] and i in alive}
    return "".join(str(ops[(j, i)]) if j in useful and i in useful else "0" for j, i in NB201_EDGES)


def _nb201_cell(g: GraphBuilder, x: str, codes: str) -> str:
    """One cell of canonical `codes` (see `nb201_canonical`)."""
    c = g.shapes[x][1]
    ops = dict(zip(NB201_EDGES, (int(ch) for ch in codes)))
    nodes = {0: x}
    for j in (1, 2, 3):
        terms = []
        for i in range(j):
            op = ops[(j, i)]
            if not op:
                continue
            src = nodes[i]
            if op == 1:
                terms.append(src)
            elif op in (2, 3):
                terms.append(g.conv(g.act(src, "Relu"), c, 1 if op == 2 else 3, bias=False, bn=True))
            else:
                terms.append(g.pool(src, "AveragePool", 3, 1, pad=1))
        if not terms:
            continue
        y = terms[0]
        for t in terms[1:]:
            y = g.add(y, t)
        nodes[j] = y
    return nodes[3]


def nb201(op_codes: str, *, classes: int = 10) -> onnx.ModelProto | None:
    """NB201 TinyNetwork for an `op_codes` string (6 digits); None for degenerate archs."""
    codes = nb201_canonical(op_codes)
    if codes is None:
        return None
    g = GraphBuilder((1, 3, 32, 32))
    x = g.conv(g.input, 16, 3, bias=False, bn=True)
    for stage, c in enumerate((16, 32, 64)):
        if stage:
            a = g.conv(g.act(x, "Relu"), c, 3, 2, bias=False, bn=True)
            a = g.conv(g.act(a, "Relu"), c, 3, bias=False, bn=True)
            x = g.add(a, g.conv(g.pool(x, "AveragePool", 2, 2), c, 1, bias=False))
        for _ in range(5):
            x = _nb201_cell(g, x, codes)
    x = g.act(g.batchnorm(x), "Relu")
    return g.build([g.gemm(g.flatten(g.global_pool(x)), classes)])


# ---- FBNet space (CIFAR-100 setting of HW-NAS-Bench) ----
FBNET_BLOCKS = [(3, 1, 1), (3, 1, 2), (3, 3, 1), (3, 6, 1), (5, 1, 1), (5, 1, 2), (5, 3, 1), (5, 6, 1), None]
FBNET_STAGES = [(1, 16, 1), (4, 24, 1), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1)]


def fbnet(choices: list[int], *, classes: int = 100) -> onnx.ModelProto:
    """FBNet-space net for 22 block choices (0..8, see FBNET_BLOCKS; 8 = skip)."""
    g = GraphBuilder((1, 3, 32, 32))
    x = g.conv(g.input, 16, 3, bias=False, bn=True, act="Relu")
    i = 0
    for n, c_out, stride in FBNET_STAGES:
        for j in range(n):
            s = stride if j == 0 else 1
            c_in = g.shapes[x][1]
            block = FBNET_BLOCKS[choices[i]]
            i += 1
            if block is None:
                if s != 1 or c_in != c_out:
                    x = g.conv(x, c_out, 1, s, bias=False, bn=True, act="Relu")
                continue
            k, e, grp = block
            y = g.conv(x, c_in * e, 1, g=grp, bias=False, bn=True, act="Relu")
            if grp > 1:
                y = g.channel_shuffle(y, grp)
            y = g.conv(y, c_in * e, k, s, g=c_in * e, bias=False, bn=True, act="Relu")
            y = g.conv(y, c_out, 1, g=grp, bias=False, bn=True,
                       residual=x if (s == 1 and c_in == c_out) else None)
            x = y
    x = g.conv(x, 1504, 1, bias=False, bn=True, act="Relu")
    return g.build([g.gemm(g.flatten(g.global_pool(x)), classes)])


# ---- classic ImageNet networks (published per-model numbers) ----
def mobilenet_v1(res: int = 224) -> onnx.ModelProto:
    g = GraphBuilder((1, 3, res, res))
    x = g.conv(g.input, 32, 3, 2, bias=False, bn=True, act="Relu")
    for c, s in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]:
        cin = g.shapes[x][1]
        x = g.conv(x, cin, 3, s, g=cin, bias=False, bn=True, act="Relu")
        x = g.conv(x, c, 1, bias=False, bn=True, act="Relu")
    return g.build([g.gemm(g.flatten(g.global_pool(x)), 1000)])


def mobilenet_v2(res: int = 224) -> onnx.ModelProto:
    g = GraphBuilder((1, 3, res, res))
    x = g.conv(g.input, 32, 3, 2, bias=False, bn=True, act="Relu6")
    for e, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for j in range(n):
            cin = g.shapes[x][1]
            st = s if j == 0 else 1
            y = g.conv(x, cin * e, 1, bias=False, bn=True, act="Relu6") if e > 1 else x
            y = g.conv(y, cin * e, 3, st, g=cin * e, bias=False, bn=True, act="Relu6")
            x = g.conv(y, c, 1, bias=False, bn=True, residual=x if (st == 1 and cin == c) else None)
    x = g.conv(x, 1280, 1, bias=False, bn=True, act="Relu6")
    return g.build([g.gemm(g.flatten(g.global_pool(x)), 1000)])


def _mbv3(blocks: list[tuple[int, int, int, bool, str, int]], last: int, head: int, res: int) -> onnx.ModelProto:
    """MobileNetV3 from its block table: (kernel, expansion channels, out channels, SE, act, stride)."""
    g = GraphBuilder((1, 3, res, res))
    x = g.conv(g.input, 16, 3, 2, bias=False, bn=True, act="HardSwish")
    for k, exp, c, se, act, s in blocks:
        cin = g.shapes[x][1]
        y = g.conv(x, exp, 1, bias=False, bn=True, act=act) if exp != cin else x
        y = g.conv(y, exp, k, s, g=exp, bias=False, bn=True, act=act)
        if se:  # squeeze-excite: pool, reduce to a quarter (multiple of 8), expand, hard-sigmoid gate
            z = g.conv(g.global_pool(y), max(8, (exp // 4 + 4) // 8 * 8), 1, act="Relu")
            y = g.mul(y, g.conv(z, exp, 1, act="HardSigmoid"))
        x = g.conv(y, c, 1, bias=False, bn=True, residual=x if (s == 1 and cin == c) else None)
    x = g.conv(x, last, 1, bias=False, bn=True, act="HardSwish")
    return g.build([g.gemm(g.gemm(g.flatten(g.global_pool(x)), head, act="HardSwish"), 1000)])


def mobilenet_v3_large(res: int = 224) -> onnx.ModelProto:
    blocks = [(3, 16, 16, False, "Relu", 1), (3, 64, 24, False, "Relu", 2), (3, 72, 24, False, "Relu", 1),
              (5, 72, 40, True, "Relu", 2), (5, 120, 40, True, "Relu", 1), (5, 120, 40, True, "Relu", 1),
              (3, 240, 80, False, "HardSwish", 2), (3, 200, 80, False, "HardSwish", 1),
              (3, 184, 80, False, "HardSwish", 1), (3, 184, 80, False, "HardSwish", 1),
              (3, 480, 112, True, "HardSwish", 1), (3, 672, 112, True, "HardSwish", 1),
              (5, 672, 160, True, "HardSwish", 2), (5, 960, 160, True, "HardSwish", 1),
              (5, 960, 160, True, "HardSwish", 1)]
    return _mbv3(blocks, 960, 1280, res)


def mobilenet_v3_small(res: int = 224) -> onnx.ModelProto:
    blocks = [(3, 16, 16, True, "Relu", 2), (3, 72, 24, False, "Relu", 2), (3, 88, 24, False, "Relu", 1),
              (5, 96, 40, True, "HardSwish", 2), (5, 240, 40, True, "HardSwish", 1),
              (5, 240, 40, True, "HardSwish", 1), (5, 120, 48, True, "HardSwish", 1),
              (5, 144, 48, True, "HardSwish", 1), (5, 288, 96, True, "HardSwish", 2),
              (5, 576, 96, True, "HardSwish", 1), (5, 576, 96, True, "HardSwish", 1)]
    return _mbv3(blocks, 576, 1024, res)


def resnet(depth: int = 18, res: int = 224) -> onnx.ModelProto:
    """ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks)."""
    layers = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    g = GraphBuilder((1, 3, res, res))
    x = g.pool(g.conv(g.input, 64, 7, 2, bias=False, bn=True, act="Relu"), "MaxPool", 3, 2, pad=1)
    for stage, n in enumerate(layers):
        width = 64 * 2**stage
        for j in range(n):
            s = 2 if (j == 0 and stage > 0) else 1
            cin = g.shapes[x][1]
            c_out = width * (4 if depth >= 50 else 1)
            short = x if (s == 1 and cin == c_out) else g.conv(x, c_out, 1, s, bias=False, bn=True)
            if depth >= 50:
                y = g.conv(x, width, 1, bias=False, bn=True, act="Relu")
                y = g.conv(y, width, 3, s, bias=False, bn=True, act="Relu")
                x = g.conv(y, c_out, 1, bias=False, bn=True, act="Relu", residual=short)
            else:
                y = g.conv(x, width, 3, s, bias=False, bn=True, act="Relu")
                x = g.conv(y, width, 3, bias=False, bn=True, act="Relu", residual=short)
    return g.build([g.gemm(g.flatten(g.global_pool(x)), 1000)])


def vgg16(res: int = 224) -> onnx.ModelProto:
    g = GraphBuilder((1, 3, res, res))
    x = g.input
    for n, c in [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]:
        for _ in range(n):
            x = g.conv(x, c, 3, act="Relu")
        x = g.pool(x, "MaxPool", 2, 2)
    x = g.gemm(g.gemm(g.flatten(x), 4096, act="Relu"), 4096, act="Relu")
    return g.build([g.gemm(x, 1000)])


def squeezenet(res: int = 227) -> onnx.ModelProto:
    """SqueezeNet 1.1 (the variant ncnn's benchmark ships)."""
    g = GraphBuilder((1, 3, res, res))
    x = g.pool(g.conv(g.input, 64, 3, 2, pad=0, act="Relu"), "MaxPool", 3, 2)
    for i, (sq, ex) in enumerate([(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256),
                                  (64, 256)]):
        s = g.conv(x, sq, 1, act="Relu")
        x = g.concat([g.conv(s, ex, 1, act="Relu"), g.conv(s, ex, 3, act="Relu")])
        if i in (1, 3):
            x = g.pool(x, "MaxPool", 3, 2)
    x = g.conv(x, 1000, 1, act="Relu")
    return g.build([g.flatten(g.global_pool(x))])


CLASSIC = {
    "mobilenet": mobilenet_v1, "mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small, "resnet18": lambda: resnet(18),
    "resnet50": lambda: resnet(50), "vgg16": vgg16, "squeezenet": squeezenet,
}
