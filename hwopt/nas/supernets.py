"""Registry of trained supernets that `hwopt search --supernet NAME` can specialise.

A registered supernet is its family spec, its training data and a weights file bundled in
hwopt/nas/weights/ (stored as float16 to stay small; computation is float32). Missing weights can
be rebuilt offline with `python -m hwopt.nas.supernets train NAME` (minutes on two cores).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_bytes
from hwopt.nas.digits import DigitsSplit, load_digits_split
from hwopt.nas.ofa import (
    OFAMobileNetV3,
    OFASpec,
    TrainSchedule,
    extract_subnet,
    largest_config,
    recalibrate_bn,
    resize,
    subnet_accuracy,
    train_supernet,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class SupernetEntry:
    name: str
    description: str
    spec: OFASpec
    data: Callable[[], DigitsSplit]
    schedule: TrainSchedule

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"


SUPERNETS: dict[str, SupernetEntry] = {
    "ofa-mbv3-digits": SupernetEntry(
        name="ofa-mbv3-digits",
        description="OFA MobileNetV3 (kernel 3/5/7, expand 3/4/6, depth 2/3/4 x 5 stages, resolution 24/28/32) on scikit-learn digits",
        spec=OFASpec(),
        data=load_digits_split,
        schedule=TrainSchedule(),
    ),
}


@dataclass
class LoadedSupernet:
    entry: SupernetEntry
    net: OFAMobileNetV3
    data: DigitsSplit
    meta: dict

    @property
    def spec(self) -> OFASpec:
        return self.net.spec

    def subnet(self, config: dict, calib_images: int = 512) -> torch.nn.Module:
        """A standalone subnet with BatchNorm statistics recalibrated on training images."""
        sub = extract_subnet(self.net, config)
        x = resize(torch.from_numpy(self.data.train_x[:calib_images]), config["resolution"])
        return recalibrate_bn(sub, x)

    def accuracy(self, config: dict, limit: int | None = None) -> float:
        """Top-1 (%) of a subnet on the held-out split (never seen in supernet training)."""
        x, y = self.data.val_x[:limit], self.data.val_y[:limit]
        return subnet_accuracy(self.subnet(config), x, y, config["resolution"])


def get_entry(name: str) -> SupernetEntry:
    if name not in SUPERNETS:
        raise HwoptError(f"unknown supernet {name!r}; known supernets: {', '.join(SUPERNETS)}")
    return SUPERNETS[name]


def load_supernet(name: str, weights: str | os.PathLike | None = None) -> LoadedSupernet:
    """The registered supernet `name` with its trained weights and data split."""
    entry = get_entry(name)
    path = Path(weights) if weights else entry.weights
    if not path.is_file():
        raise HwoptError(f"supernet {name} has no weights at {path}; build them with: python -m hwopt.nas.supernets train {name}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    spec = OFASpec.from_dict(blob["spec"])
    net = OFAMobileNetV3(spec)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return LoadedSupernet(entry, net.eval(), entry.data(), blob.get("meta", {}))


def train_registered(name: str, out: str | os.PathLike | None = None, *, seed: int = 0, log=print) -> Path:
    """Train the registered supernet from scratch and write its (float16) weights atomically."""
    entry = get_entry(name)
    torch.set_num_threads(1)  # shared 2-core machines: one thread is steadier and leaves a core free
    data = entry.data()
    t0 = time.time()
    net = train_supernet(entry.spec, data.train_x, data.train_y, schedule=entry.schedule, seed=seed, log=log)
    seconds = time.time() - t0
    big = largest_config(entry.spec)
    loaded = LoadedSupernet(entry, net, data, {})
    acc = loaded.accuracy(big)
    meta = {"train_seconds": round(seconds, 1), "largest_val_accuracy": acc, "seed": seed, "schedule": vars(entry.schedule)}
    log(f"trained {name} in {seconds:.0f} s; largest subnet val top-1 {acc:.2f}%")
    buf = io.BytesIO()
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"spec": entry.spec.to_dict(), "state_dict": state, "meta": meta}, buf)
    path = atomic_write_bytes(buf.getvalue(), Path(out) if out else entry.weights)
    path.chmod(0o644)  # a bundled data file, readable by everyone like the rest of the package
    return path


def _main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "train":
        print(f"usage: python -m hwopt.nas.supernets train NAME [OUT]   (known: {', '.join(SUPERNETS)})")
        return 2
    print(train_registered(argv[1], argv[2] if len(argv) > 2 else None))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
