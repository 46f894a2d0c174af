"""Once-for-All MobileNetV3 supernet: elastic kernel, expand ratio, depth and resolution.

One set of weights serves every subnet. Smaller kernels are the centre of the 7x7 kernel passed
through a learned per-layer linear transform (OFA's kernel transformation), so a 3x3 subnet does
not have to live with the 7x7's centre as it is; a smaller expand ratio keeps the first channels of
the inverted bottleneck, which the expand phase first sorts by importance; a shallower stage keeps
its first blocks. Subnets are extracted as plain torch modules (no elastic logic), their BatchNorm
statistics recalibrated on training images, and exported to ONNX.

A subnet config is small readable JSON:
    {"resolution": 28, "stages": [{"kernel": [7, 5, 3], "expand": [6, 4, 4]}, ...]}
where each stage's depth is the length of its lists.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwopt.errors import HwoptError

Config = dict


@dataclass(frozen=True)
class OFASpec:
    """The shape of an OFA-MobileNetV3 family (OFA's ImageNet family has widths 24..160)."""

    stem_width: int = 8
    widths: tuple[int, ...] = (12, 16, 24, 32, 40)
    strides: tuple[int, ...] = (2, 2, 2, 1, 1)
    acts: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    se: tuple[bool, ...] = (False, True, False, True, True)
    final_width: int = 128
    mix_width: int = 128
    num_classes: int = 10
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = (24, 28, 32)

    @classmethod
    def from_dict(cls, d: dict) -> OFASpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def max_depth(self) -> int:
        return max(self.depths)


def _act(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hswish" else nn.ReLU()


def _act_fn(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.hardswish(x) if name == "hswish" else F.relu(x)


def _se_hidden(channels: int) -> int:
    return max(8, channels // 4)


# ---------------------------------------------------------------- elastic building blocks


class ElasticDepthwise(nn.Module):
    """Depthwise conv whose kernel shrinks 7 -> 5 -> 3 by centre crop plus a learned transform."""

    def __init__(self, channels: int, stride: int, kernels: tuple[int, ...]):
        super().__init__()
        self.kernels = tuple(sorted(kernels, reverse=True))
        self.stride = stride
        k = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # identity start: a fresh transform leaves the cropped centre unchanged
        self.transforms = nn.ParameterDict(
            {f"{a}to{b}": nn.Parameter(torch.eye(b * b)) for a, b in zip(self.kernels, self.kernels[1:])}
        )

    def kernel(self, k: int, channels: int) -> torch.Tensor:
        w = self.weight[:channels]
        for big, small in zip(self.kernels, self.kernels[1:]):
            if big == k:
                break
            s = (big - small) // 2
            w = w[:, :, s : s + small, s : s + small].reshape(channels, small * small)
            w = (w @ self.transforms[f"{big}to{small}"]).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel(k, c), stride=self.stride, padding=k // 2, groups=c)


class ElasticBN(nn.BatchNorm2d):
    """BatchNorm over the first C channels of its full width (running stats are updated in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        return F.batch_norm(
            x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
            self.training, self.momentum or 0.1, self.eps,
        )

    def static(self, c: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(c, eps=self.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(self, name)[:c])
        return bn


class ElasticSE(nn.Module):
    """Squeeze-excite whose hidden width follows the (elastic) channel count, as in OFA's dynamic SE."""

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, _se_hidden(channels), 1)
        self.expand = nn.Conv2d(_se_hidden(channels), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h = x.shape[1], _se_hidden(x.shape[1])
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.reduce.weight[:h, :c], self.reduce.bias[:h]))
        s = F.hardsigmoid(F.conv2d(s, self.expand.weight[:c, :h], self.expand.bias[:c]))
        return x * s

    def static(self, c: int) -> SqueezeExcite:
        h = _se_hidden(c)
        se = SqueezeExcite(c)
        with torch.no_grad():
            se.reduce.weight.copy_(self.reduce.weight[:h, :c])
            se.reduce.bias.copy_(self.reduce.bias[:h])
            se.expand.weight.copy_(self.expand.weight[:c, :h])
            se.expand.bias.copy_(self.expand.bias[:c])
        return se


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, _se_hidden(channels), 1)
        self.expand = nn.Conv2d(_se_hidden(channels), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(s))


class MBConv(nn.Module):
    """A plain (extracted) inverted-bottleneck block: 1x1 expand, kxk depthwise, [SE], 1x1 project."""

    def __init__(self, expand: nn.Module, dw: nn.Module, se: nn.Module | None, project: nn.Module, act: str, residual: bool):
        super().__init__()
        self.expand, self.dw, self.project = expand, dw, project
        self.se = se if se is not None else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class ElasticMBConv(nn.Module):
    """Inverted bottleneck with elastic kernel size and expand ratio."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, se: bool, spec: OFASpec):
        super().__init__()
        self.cin, self.cout, self.stride, self.act = cin, cout, stride, act
        mid = cin * max(spec.expands)
        self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = ElasticBN(mid)
        self.dw = ElasticDepthwise(mid, stride, spec.kernels)
        self.bn2 = ElasticBN(mid)
        self.se = ElasticSE(mid) if se else None
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = ElasticBN(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, k: int, e: int) -> torch.Tensor:
        mid = self.cin * e
        h = _act_fn(self.act, self.bn1(F.conv2d(x, self.expand_conv.weight[:mid])))
        h = _act_fn(self.act, self.bn2(self.dw(h, k)))
        if self.se is not None:
            h = self.se(h)
        y = self.bn3(F.conv2d(h, self.project_conv.weight[:, :mid]))
        return x + y if self.residual else y

    def static(self, k: int, e: int) -> MBConv:
        mid = self.cin * e
        expand = nn.Conv2d(self.cin, mid, 1, bias=False)
        dw = nn.Conv2d(mid, mid, k, self.stride, k // 2, groups=mid, bias=False)
        project = nn.Conv2d(mid, self.cout, 1, bias=False)
        with torch.no_grad():
            expand.weight.copy_(self.expand_conv.weight[:mid])
            dw.weight.copy_(self.dw.kernel(k, mid))
            project.weight.copy_(self.project_conv.weight[:, :mid])
        return MBConv(
            nn.Sequential(expand, self.bn1.static(mid), _act(self.act)),
            nn.Sequential(dw, self.bn2.static(mid), _act(self.act)),
            self.se.static(mid) if self.se is not None else None,
            nn.Sequential(project, self.bn3.static(self.cout)),
            self.act,
            self.residual,
        )

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order the expanded channels (and SE hidden units) by importance, so a prefix keeps the best."""
        if self.se is not None:
            order = self.se.expand.weight.abs().sum((0, 2, 3)).argsort(descending=True)
            self.se.expand.weight.copy_(self.se.expand.weight[:, order])
            self.se.reduce.weight.copy_(self.se.reduce.weight[order])
            self.se.reduce.bias.copy_(self.se.reduce.bias[order])
        order = self.project_conv.weight.abs().sum((0, 2, 3)).argsort(descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        self.dw.weight.copy_(self.dw.weight[order])
        for bn in (self.bn1, self.bn2):
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(bn, name)
                t.copy_(t[order])
        if self.se is not None:
            self.se.reduce.weight.copy_(self.se.reduce.weight[:, order])
            self.se.expand.weight.copy_(self.se.expand.weight[order])
            self.se.expand.bias.copy_(self.se.expand.bias[order])


class Head(nn.Module):
    """Final 1x1 expand, global pool, feature-mix 1x1 and classifier (shared by every subnet)."""

    def __init__(self, cin: int, spec: OFASpec):
        super().__init__()
        self.final = nn.Sequential(nn.Conv2d(cin, spec.final_width, 1, bias=False), nn.BatchNorm2d(spec.final_width), nn.Hardswish())
        self.mix = nn.Sequential(nn.Conv2d(spec.final_width, spec.mix_width, 1), nn.Hardswish())
        self.classifier = nn.Linear(spec.mix_width, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(self.final(x).mean((2, 3), keepdim=True))
        return self.classifier(torch.flatten(x, 1))


class OFAMobileNetV3(nn.Module):
    """The supernet. `forward(x, config)` runs the subnet `config` on `x` (already at its resolution)."""

    def __init__(self, spec: OFASpec = OFASpec()):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(nn.Conv2d(3, spec.stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(spec.stem_width), nn.Hardswish())
        stages = []
        cin = spec.stem_width
        for width, stride, act, se in zip(spec.widths, spec.strides, spec.acts, spec.se):
            blocks = [ElasticMBConv(cin if i == 0 else width, width, stride if i == 0 else 1, act, se, spec) for i in range(spec.max_depth)]
            stages.append(nn.ModuleList(blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = Head(cin, spec)

    def forward(self, x: torch.Tensor, config: Config) -> torch.Tensor:
        x = self.stem(x)
        for stage, sc in zip(self.stages, config["stages"]):
            for block, k, e in zip(stage, sc["kernel"], sc["expand"]):
                x = block(x, k, e)
        return self.head(x)

    def sort_channels(self) -> None:
        for stage in self.stages:
            for block in stage:
                block.sort_channels()


# ---------------------------------------------------------------- configs


def largest_config(spec: OFASpec) -> Config:
    d, k, e = max(spec.depths), max(spec.kernels), max(spec.expands)
    return {"resolution": max(spec.resolutions), "stages": [{"kernel": [k] * d, "expand": [e] * d} for _ in spec.widths]}


def smallest_config(spec: OFASpec, *, kernels: tuple[int, ...] | None = None, expands: tuple[int, ...] | None = None,
                    depths: tuple[int, ...] | None = None) -> Config:
    """The cheapest subnet over the given (default: all) choices; a shrinking phase passes its own."""
    d, k, e = min(depths or spec.depths), min(kernels or spec.kernels), min(expands or spec.expands)
    return {"resolution": min(spec.resolutions), "stages": [{"kernel": [k] * d, "expand": [e] * d} for _ in spec.widths]}


def random_config(
    spec: OFASpec,
    rng: np.random.Generator,
    *,
    kernels: tuple[int, ...] | None = None,
    expands: tuple[int, ...] | None = None,
    depths: tuple[int, ...] | None = None,
    resolutions: tuple[int, ...] | None = None,
) -> Config:
    """A uniformly random subnet over the given (default: all) choices."""
    kernels, expands = kernels or spec.kernels, expands or spec.expands
    depths, resolutions = depths or spec.depths, resolutions or spec.resolutions
    stages = []
    for _ in spec.widths:
        d = int(rng.choice(depths))
        stages.append({"kernel": [int(v) for v in rng.choice(kernels, d)], "expand": [int(v) for v in rng.choice(expands, d)]})
    return {"resolution": int(rng.choice(resolutions)), "stages": stages}


def validate_config(spec: OFASpec, config: Config) -> Config:
    """Check a user-given config against the family; a clear one-line error names what is wrong."""
    try:
        res = int(config["resolution"])
        stages = config["stages"]
        if len(stages) != len(spec.widths):
            raise HwoptError(f"subnet config needs {len(spec.widths)} stages, got {len(stages)}")
        out = []
        for i, sc in enumerate(stages):
            k, e = [int(v) for v in sc["kernel"]], [int(v) for v in sc["expand"]]
            if len(k) != len(e) or len(k) not in spec.depths:
                raise HwoptError(f"stage {i}: kernel and expand lists must both have a length in {spec.depths}")
            if set(k) - set(spec.kernels) or set(e) - set(spec.expands):
                raise HwoptError(f"stage {i}: kernels must be in {spec.kernels} and expand ratios in {spec.expands}")
            out.append({"kernel": k, "expand": e})
    except (KeyError, TypeError, ValueError) as exc:
        raise HwoptError(f"bad subnet config ({exc}); expected {{'resolution': R, 'stages': [{{'kernel': [...], 'expand': [...]}}, ...]}}") from None
    if res not in spec.resolutions:
        raise HwoptError(f"resolution {res} is not one of {spec.resolutions}")
    return {"resolution": res, "stages": out}


# ---------------------------------------------------------------- extraction


def extract_subnet(supernet: OFAMobileNetV3, config: Config) -> nn.Sequential:
    """The subnet as a standalone torch module with its own copies of the shared weights."""
    config = validate_config(supernet.spec, config)
    blocks: list[nn.Module] = [copy.deepcopy(supernet.stem)]
    for stage, sc in zip(supernet.stages, config["stages"]):
        blocks += [block.static(k, e) for block, k, e in zip(stage, sc["kernel"], sc["expand"])]
    blocks.append(copy.deepcopy(supernet.head))
    return nn.Sequential(*blocks).eval()


@torch.no_grad()
def recalibrate_bn(module: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute BatchNorm statistics for this subnet (shared running stats fit none of them exactly)."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    module.eval()
    for bn in bns:
        bn.train()
    for i in range(0, len(images), batch_size):
        module(images[i : i + batch_size])
    module.eval()
    return module


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images at the subnet's resolution (the same bilinear resize in training, evaluation and data prep)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- progressive shrinking


@dataclass
class TrainSchedule:
    """Epochs per progressive-shrinking phase and the per-step subnet sampling.

    The defaults are what the bundled digits supernet was trained with: a long `full` phase (a
    weak largest subnet is a weak teacher for every other one), then shorter shrinking phases at a
    lower learning rate (`shrink_lr`, as OFA does) so the shared weights are adapted, not relearnt.
    With `sandwich` each shrinking step also trains the smallest subnet of the phase (BigNAS's
    sandwich rule): the cheap end of the space, where tight budgets land, gets a gradient every
    step instead of only when a random draw happens to be small.
    """

    full: int = 25
    kernel: int = 5
    depth: int = 5
    expand: int = 10
    subnets_per_step: int = 1
    sandwich: bool = True
    batch_size: int = 64
    lr: float = 3e-3
    shrink_lr: float = 1e-3
    phases: list[str] = field(default_factory=lambda: ["full", "kernel", "depth", "expand"])


def _phase_choices(spec: OFASpec, phase: str) -> dict:
    """What is elastic in each phase: kernel first, then depth, then expand (OFA's order)."""
    big_k, big_e, big_d = (max(spec.kernels),), (max(spec.expands),), (max(spec.depths),)
    return {
        "kernel": {"kernels": spec.kernels, "expands": big_e, "depths": big_d},
        "depth": {"kernels": spec.kernels, "expands": big_e, "depths": spec.depths},
        "expand": {"kernels": spec.kernels, "expands": spec.expands, "depths": spec.depths},
    }[phase]


def train_supernet(
    spec: OFASpec,
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    schedule: TrainSchedule = TrainSchedule(),
    seed: int = 0,
    log=None,
) -> OFAMobileNetV3:
    """Train a supernet with progressive shrinking and in-place distillation.

    Each step trains the largest subnet on the labels and, in the shrinking phases, the phase's
    smallest subnet (with `schedule.sandwich`) plus `subnets_per_step` random subnets of the phase on
    the largest one's soft predictions (in-place distillation), so small subnets learn from the best
    teacher available without a separately trained one.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = OFAMobileNetV3(spec)
    x_all, y_all = torch.from_numpy(train_x), torch.from_numpy(train_y)
    big = largest_config(spec)
    for phase in schedule.phases:
        epochs = getattr(schedule, phase)
        if phase == "expand":
            net.sort_channels()
        choices = None if phase == "full" else _phase_choices(spec, phase)
        lr = schedule.lr if choices is None else schedule.shrink_lr
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * int(np.ceil(len(x_all) / schedule.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        net.train()
        for epoch in range(epochs):
            perm = torch.from_numpy(rng.permutation(len(x_all)))
            total = 0.0
            for i in range(0, len(perm), schedule.batch_size):
                idx = perm[i : i + schedule.batch_size]
                x, y = _augment(x_all[idx], rng), y_all[idx]
                opt.zero_grad()
                logits = net(resize(x, big["resolution"]), big)
                loss = F.cross_entropy(logits, y)
                if choices is not None:
                    soft = F.softmax(logits.detach(), 1)
                    students = [smallest_config(spec, **choices)] if schedule.sandwich else []
                    students += [random_config(spec, rng, **choices) for _ in range(schedule.subnets_per_step)]
                    for cfg in students:
                        sub = net(resize(x, cfg["resolution"]), cfg)
                        loss = loss + F.kl_div(F.log_softmax(sub, 1), soft, reduction="batchmean")
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if log:
                log(f"{phase} epoch {epoch + 1}/{epochs} loss {total / len(x_all):.4f}")
    return net.eval()


def _augment(x: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation of the batch by up to `max_shift` pixels (digits are tiny; this is enough)."""
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
    pad = F.pad(x, (max_shift,) * 4, mode="replicate")
    h, w = x.shape[-2:]
    return pad[..., max_shift + dy : max_shift + dy + h, max_shift + dx : max_shift + dx + w]


@torch.no_grad()
def subnet_accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray, resolution: int, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of an extracted subnet on images resized to its resolution."""
    module.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = resize(torch.from_numpy(x[i : i + batch_size]), resolution)
        correct += int((module(xb).argmax(1).numpy() == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)
