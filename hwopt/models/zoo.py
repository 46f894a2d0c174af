"""Small torch models covering the graph patterns hwopt must handle (no torchvision, no weights).

Each builder takes `num_classes` and `width` (a channel multiplier: 1.0 is the reference layout,
0.25 a quarter of every channel count) and returns an untrained `nn.Module`. The set is chosen
for its *structure*, not accuracy: residual adds, bottlenecks, depthwise and grouped convs,
squeeze-excite with hardswish, dense concatenation, split/concat (YOLOv8 C2f), SPPF, transposed
convs and resizes (UNet), channel shuffles (reshape/transpose), and attention written with explicit
q/k/v projections. Pruning, quantization, latency prediction and export are tested on all of them.

`ZOO` maps a name to a builder preset small enough for fast tests and its example input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from hwopt.errors import HwoptError


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """Channel count `channels * width` rounded to a multiple of `divisor` (never below it).

    Rounding to multiples of 8 keeps grouped convs, channel splits and attention heads valid at
    any width, and matches the channel multiples SIMD kernels prefer.
    """
    value = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    if value < 0.9 * channels * width:  # never round down by more than 10%
        value += divisor
    return value


class ConvBNAct(nn.Sequential):
    """Conv + BatchNorm + activation; BatchNorm folds into the Conv on ONNX export (eval mode)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class Classifier(nn.Sequential):
    """Global average pool + flatten + linear: the head shared by the classification models."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


# ---------------------------------------------------------------- ResNets


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual add; a 1x1 projection when the shape changes."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBNAct(cin, planes, 3, stride)
        self.conv2 = ConvBNAct(planes, cout, 3, act=None)
        self.shortcut = ConvBNAct(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (optionally grouped), 1x1 expand by 4, residual add."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBNAct(cin, planes, 1)
        self.conv2 = ConvBNAct(planes, planes, 3, stride, groups=groups)
        self.conv3 = ConvBNAct(planes, cout, 1, act=None)
        self.shortcut = ConvBNAct(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, stages of residual blocks (first block of each later stage strides by 2), classifier."""

    def __init__(self, block: Callable[..., nn.Module], expansion: int, depths: list[int], planes: list[int],
                 stem: nn.Module, stem_out: int, num_classes: int):
        super().__init__()
        self.stem = stem
        layers: list[nn.Module] = []
        cin = stem_out
        for i, (depth, p) in enumerate(zip(depths, planes)):
            for j in range(depth):
                layers.append(block(cin, p, 2 if (i > 0 and j == 0) else 1))
                cin = p * expansion
        self.layers = nn.Sequential(*layers)
        self.head = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def resnet_basic(num_classes: int = 10, width: float = 1.0, depths: tuple[int, ...] = (2, 2, 2)) -> nn.Module:
    """CIFAR-style ResNet of basic blocks (3x3 stem, stages of 16/32/64 channels at width 1)."""
    planes = [scaled(c, width) for c in (16, 32, 64)][: len(depths)]
    stem_out = planes[0]
    return ResNet(BasicBlock, 1, list(depths), planes, ConvBNAct(3, stem_out, 3), stem_out, num_classes)


def resnet_bottleneck(num_classes: int = 10, width: float = 1.0, depths: tuple[int, ...] = (1, 1, 1)) -> nn.Module:
    """CIFAR-style ResNet of bottleneck blocks (expansion 4; 16/32/64 bottleneck planes at width 1)."""
    planes = [scaled(c, width) for c in (16, 32, 64)][: len(depths)]
    stem_out = planes[0]
    return ResNet(Bottleneck, 4, list(depths), planes, ConvBNAct(3, stem_out, 3), stem_out, num_classes)


def resnet18(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """ResNet-18 in the ImageNet layout: 7x7/2 stem, 3x3/2 max-pool, 4 stages of 2 basic blocks.

    width 1.0 with num_classes 1000 has torchvision's ResNet-18 shapes (11.7M params, 1.82 GMACs at
    224x224); smaller widths and resolutions keep the layout for fast tests.
    """
    planes = [scaled(c, width) for c in (64, 128, 256, 512)]
    stem = nn.Sequential(ConvBNAct(3, planes[0], 7, 2), nn.MaxPool2d(3, 2, 1))
    return ResNet(BasicBlock, 1, [2, 2, 2, 2], planes, stem, planes[0], num_classes)


# ---------------------------------------------------------------- MobileNets


class SqueezeExcite(nn.Module):
    """Channel attention: pool, 1x1 reduce, activation, 1x1 expand, gate, multiply."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.ReLU, gate: type[nn.Module] = nn.Hardsigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, kxk depthwise, optional SE, 1x1 linear project, add if same shape."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, act: type[nn.Module], se: bool):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, scaled(hidden // 4, 1.0)))
        layers.append(ConvBNAct(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expand ratio, output channels, repeats, first stride) as in the MobileNetV2 paper, table 2
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """MobileNetV2 (ReLU6, depthwise 3x3, linear bottlenecks); width 1.0 = 3.4M params at 1000 classes."""
    cin = scaled(32, width)
    layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
    for t, c, n, s in _MBV2:
        cout = scaled(c, width)
        for i in range(n):
            layers.append(InvertedResidual(cin, cin * t, cout, 3, s if i == 0 else 1, nn.ReLU6, se=False))
            cin = cout
    last = scaled(1280, max(1.0, width))
    layers.append(ConvBNAct(cin, last, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, Classifier(last, num_classes))


# (kernel, expanded, out, SE, hardswish, stride) of MobileNetV3-Small (Howard et al. 2019, table 2)
_MBV3_SMALL = [
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
]


def mobilenet_v3(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """MobileNetV3-Small: squeeze-excite with hard-sigmoid gates, hardswish, 5x5 depthwise convs."""
    cin = scaled(16, width)
    layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.Hardswish)]
    for k, exp, out, se, hs, s in _MBV3_SMALL:
        cout = scaled(out, width)
        layers.append(InvertedResidual(cin, scaled(exp, width), cout, k, s, nn.Hardswish if hs else nn.ReLU, se))
        cin = cout
    last = scaled(576, width)
    layers.append(ConvBNAct(cin, last, 1, act=nn.Hardswish))
    hidden = scaled(1024, width)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, hidden), nn.Hardswish(), nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers, head)


# ---------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN-ReLU-1x1-BN-ReLU-3x3 producing `growth` channels concatenated onto the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def densenet_tiny(num_classes: int = 10, width: float = 1.0, layers_per_block: int = 3) -> nn.Module:
    """DenseNet-BC style: dense blocks (every layer concatenates its output) and 1x1 + avg-pool transitions.

    Pre-activation BatchNorms sit after concats, so they do not fold into a conv: realistic for pruning.
    """
    growth = scaled(16, width)
    cin = 2 * growth
    layers: list[nn.Module] = [nn.Conv2d(3, cin, 3, padding=1, bias=False)]
    for b in range(3):
        for _ in range(layers_per_block):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        if b < 2:
            cout = cin // 2
            layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2)]
            cin = cout
    layers += [nn.BatchNorm2d(cin), nn.ReLU()]
    return nn.Sequential(*layers, Classifier(cin, num_classes))


# ---------------------------------------------------------------- YOLOv8


class YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3, act=nn.SiLU)
        self.cv2 = ConvBNAct(c, c, 3, act=nn.SiLU)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 conv, split in two, chain of bottlenecks on one half, concat all, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBNAct(cin, 2 * self.c, 1, act=nn.SiLU)
        self.cv2 = ConvBNAct((2 + n) * self.c, cout, 1, act=nn.SiLU)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = list(self.cv1(x).split((self.c, self.c), dim=1))
        for m in self.m:
            ys.append(m(ys[-1]))
        return self.cv2(torch.cat(ys, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools concatenated with their input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNAct(cin, hidden, 1, act=nn.SiLU)
        self.cv2 = ConvBNAct(4 * hidden, cout, 1, act=nn.SiLU)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.cv2(torch.cat([x, p1, p2, self.pool(p2)], dim=1))


class YoloV8Tiny(nn.Module):
    """Backbone (strided convs + C2f, SPPF), FPN neck (upsample + concat), per-scale 1x1 heads.

    The output concatenates box coordinates and sigmoid class scores into (B, 4 + classes, anchors),
    like real YOLOv8 exports: the layout that makes one int8 scale crush the scores.
    """

    def __init__(self, num_classes: int, width: float):
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (16, 32, 64, 128, 256))
        self.stem = nn.Sequential(ConvBNAct(3, c1, 3, 2, act=nn.SiLU), ConvBNAct(c1, c2, 3, 2, act=nn.SiLU), C2f(c2, c2))
        self.p3 = nn.Sequential(ConvBNAct(c2, c3, 3, 2, act=nn.SiLU), C2f(c3, c3, 2))
        self.p4 = nn.Sequential(ConvBNAct(c3, c4, 3, 2, act=nn.SiLU), C2f(c4, c4, 2))
        self.p5 = nn.Sequential(ConvBNAct(c4, c5, 3, 2, act=nn.SiLU), C2f(c5, c5), SPPF(c5, c5))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C2f(c5 + c4, c4, shortcut=False)
        self.n3 = C2f(c4 + c3, c3, shortcut=False)
        self.no = 4 + num_classes
        self.heads = nn.ModuleList(nn.Conv2d(c, self.no, 1) for c in (c3, c4, c5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], dim=1))
        n3 = self.n3(torch.cat([self.up(n4), p3], dim=1))
        out = torch.cat([h(f).flatten(2) for h, f in zip(self.heads, (n3, n4, p5))], dim=2)
        box, cls = out.split((4, self.no - 4), dim=1)
        return torch.cat([box, cls.sigmoid()], dim=1)


def yolov8_tiny(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """YOLOv8-style detector (C2f split/concat, SPPF, FPN upsample+concat); input sides divisible by 32."""
    return YoloV8Tiny(num_classes, width)


# ---------------------------------------------------------------- UNet


class UNetTiny(nn.Module):
    """Three-level UNet: max-pool encoder; decoder with one ConvTranspose and one bilinear Resize, skip concats."""

    def __init__(self, num_classes: int, width: float):
        super().__init__()
        c1, c2, c3 = (scaled(c, width) for c in (16, 32, 64))
        self.enc1 = nn.Sequential(ConvBNAct(3, c1), ConvBNAct(c1, c1))
        self.enc2 = nn.Sequential(ConvBNAct(c1, c2), ConvBNAct(c2, c2))
        self.mid = nn.Sequential(ConvBNAct(c2, c3), ConvBNAct(c3, c3))
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = nn.Sequential(ConvBNAct(2 * c2, c2), ConvBNAct(c2, c2))
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(c2, c1, 1))
        self.dec1 = nn.Sequential(ConvBNAct(2 * c1, c1), ConvBNAct(c1, c1))
        self.out = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


def unet_tiny(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """Segmentation UNet: per-pixel class scores (B, num_classes, H, W); input sides divisible by 4."""
    return UNetTiny(num_classes, width)


# ---------------------------------------------------------------- ShuffleNet


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across groups (reshape, transpose, reshape in ONNX)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split channels (stride 1) or duplicate input (stride 2), branch, concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        branch_in = cin if stride == 2 else half
        self.branch = nn.Sequential(
            ConvBNAct(branch_in, half, 1), ConvBNAct(half, half, 3, stride, groups=half, act=None), ConvBNAct(half, half, 1)
        )
        self.proj = (
            nn.Sequential(ConvBNAct(cin, cin, 3, 2, groups=cin, act=None), ConvBNAct(cin, half, 1)) if stride == 2 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch(b)], dim=1)
        else:
            out = torch.cat([self.proj(x), self.branch(x)], dim=1)
        return channel_shuffle(out, 2)


def shufflenet_tiny(num_classes: int = 10, width: float = 1.0, repeats: tuple[int, ...] = (2, 3, 2)) -> nn.Module:
    """ShuffleNetV2-style net (stages of 48/96/192 channels at width 1, after a 3x3/2 stem)."""
    cin = scaled(24, width)
    layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2)]
    for c, n in zip((48, 96, 192), repeats):
        cout = scaled(c, width, divisor=16)
        for i in range(n):
            layers.append(ShuffleUnit(cin, cout, 2 if i == 0 else 1))
            cin = cout
    last = scaled(512, width)
    layers.append(ConvBNAct(cin, last, 1))
    return nn.Sequential(*layers, Classifier(last, num_classes))


# ---------------------------------------------------------------- Transformer


class MultiHeadAttention(nn.Module):
    """Self-attention with explicit q/k/v and output Linear layers (MatMul + Add in ONNX, prunable by head)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of ratio 4."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Token classifier: input projection, encoder layers, final LayerNorm, mean over tokens, Linear."""

    def __init__(self, num_classes: int, dim: int, depth: int, heads: int, in_features: int):
        super().__init__()
        self.embed = nn.Linear(in_features, dim)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layers(self.embed(x))).mean(dim=1))


def transformer_encoder(num_classes: int = 10, width: float = 1.0, depth: int = 2, heads: int = 4, in_features: int = 32) -> nn.Module:
    """Encoder over tokens (B, T, in_features); model dim 128 at width 1 (rounded to a multiple of 8*heads)."""
    return TransformerEncoder(num_classes, scaled(128, width, divisor=8 * heads), depth, heads, in_features)


# ---------------------------------------------------------------- grouped convs


class _GroupedBottleneck(Bottleneck):
    """Bottleneck with a grouped 3x3 conv and expansion 2 (ResNeXt's wide-group variant)."""

    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 4):
        super().__init__(cin, planes, stride, groups)


def grouped_conv_net(num_classes: int = 10, width: float = 1.0, groups: int = 4) -> nn.Module:
    """ResNeXt-style: bottlenecks whose 3x3 conv has `groups` groups (pruning must keep groups whole)."""
    planes = [scaled(c, width, divisor=2 * groups) for c in (32, 64, 128)]
    stem_out = scaled(32, width)
    block = partial(_GroupedBottleneck, groups=groups)
    return ResNet(block, 2, [1, 1, 1], planes, ConvBNAct(3, stem_out, 3), stem_out, num_classes)


# ---------------------------------------------------------------- registry


class ZooEntry(NamedTuple):
    """A builder preset (call it with optional `num_classes`/`width` overrides) and its example input shape."""

    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]


ZOO: dict[str, ZooEntry] = {
    "resnet_basic": ZooEntry(partial(resnet_basic, width=1.0), (1, 3, 32, 32)),
    "resnet_bottleneck": ZooEntry(partial(resnet_bottleneck, width=1.0), (1, 3, 32, 32)),
    "resnet18": ZooEntry(partial(resnet18, width=0.25), (1, 3, 64, 64)),
    "mobilenet_v2": ZooEntry(partial(mobilenet_v2, width=0.5), (1, 3, 64, 64)),
    "mobilenet_v3": ZooEntry(partial(mobilenet_v3, width=0.5), (1, 3, 64, 64)),
    "densenet_tiny": ZooEntry(partial(densenet_tiny, width=1.0), (1, 3, 32, 32)),
    "yolov8_tiny": ZooEntry(partial(yolov8_tiny, width=0.5), (1, 3, 64, 64)),
    "unet_tiny": ZooEntry(partial(unet_tiny, width=0.5), (1, 3, 32, 32)),
    "shufflenet_tiny": ZooEntry(partial(shufflenet_tiny, width=0.5), (1, 3, 64, 64)),
    "transformer_encoder": ZooEntry(partial(transformer_encoder, width=0.5), (1, 16, 32)),
    "grouped_conv_net": ZooEntry(partial(grouped_conv_net, width=0.5), (1, 3, 32, 32)),
}


def build(name: str, **kwargs) -> tuple[nn.Module, tuple[int, ...]]:
    """The zoo model `name` in eval mode (seeded init, so repeated builds are identical) and its input shape."""
    if name not in ZOO:
        raise HwoptError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}")
    entry = ZOO[name]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = entry.builder(**kwargs)
    return model.eval(), entry.input_shape
