"""Train the two example models on scikit-learn's digits and export them with their data sets.

    python examples/train_examples.py            # writes examples/*.onnx, calib.npz, eval.npz
    python examples/train_examples.py --out DIR  # somewhere else

The 8x8 digits (1797 images, bundled with scikit-learn, nothing is downloaded) are upsampled to
32x32, repeated to 3 channels and normalized, so the models look like small image classifiers.
A stratified 75/25 split gives 1347 training and 450 held-out images. Both models train in well
under a minute on 2 CPU cores; seeds are fixed, so reruns give the same accuracies.

Outputs (opset 17, dynamic batch, input `input` (N, 3, 32, 32) float32, output `logits` (N, 10)):
  resnet_digits.onnx     ResNet-style CNN: basic blocks with residual adds
  mobilenet_digits.onnx  MobileNetV2-style CNN: inverted residuals, depthwise 3x3, squeeze-excite
  calib.npz              256 training images (`input`) and their `labels`
  eval.npz               the 450 held-out images (`input`) and `labels`
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from hwopt.graph.load import atomic_write_bytes
from hwopt.models.export import export_onnx
from hwopt.models.zoo import Classifier, ConvBNAct, InvertedResidual, resnet_basic

INPUT_SHAPE = (1, 3, 32, 32)
SEED = 0
CALIB_SAMPLES = 256


def build_resnet_digits() -> nn.Module:
    """ResNet-style: 3x3 stem, three stages of one basic block (16/32/64 channels), residual adds."""
    return resnet_basic(num_classes=10, width=1.0, depths=(1, 1, 1))


def build_mobilenet_digits() -> nn.Module:
    """MobileNetV2-style: strided stem, inverted residuals (expand 4) with depthwise 3x3 convs and squeeze-excite."""
    blocks = [  # (in, hidden, out, stride, squeeze-excite)
        (16, 64, 24, 1, True),
        (24, 96, 24, 1, True),
        (24, 96, 40, 2, True),
        (40, 160, 40, 1, True),
    ]
    layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.ReLU6)]
    layers += [InvertedResidual(cin, hid, cout, 3, s, nn.ReLU6, se) for cin, hid, cout, s, se in blocks]
    layers.append(ConvBNAct(40, 128, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, Classifier(128, 10))


MODELS = {"resnet_digits": build_resnet_digits, "mobilenet_digits": build_mobilenet_digits}


def digits_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): digits as normalized float32 (N, 3, 32, 32) images."""
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=INPUT_SHAPE[2:], mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = ((x - 0.5) / 0.5).numpy()  # pixel values 0..1 -> -1..1
    y = digits.target.astype(np.int64)
    tx, vx, ty, vy = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
    return tx, ty, vx, vy


def shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """Random translations of up to `max_shift` pixels (digits are small; shifts are the useful augmentation)."""
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int = 64, lr: float = 4e-3) -> nn.Module:
    """AdamW with a one-cycle schedule and label smoothing; deterministic for a given seed."""
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(shift_augment(xt[idx], gen)), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed into memory, then an atomic write (a half-written .npz is never left behind)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(buf.getvalue(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    tx, ty, vx, vy = digits_images()
    rng = np.random.default_rng(SEED)
    calib_idx = np.sort(rng.choice(len(tx), CALIB_SAMPLES, replace=False))
    save_npz(args.out / "calib.npz", input=tx[calib_idx], labels=ty[calib_idx])
    save_npz(args.out / "eval.npz", input=vx, labels=vy)
    print(f"data: {len(tx)} train, {len(vx)} eval, {CALIB_SAMPLES} calib images of {tx.shape[1:]}")

    for name, builder in MODELS.items():
        torch.manual_seed(SEED)
        t0 = time.perf_counter()
        model = train(builder(), tx, ty, epochs=args.epochs)
        seconds = time.perf_counter() - t0
        path = args.out / f"{name}.onnx"
        export_onnx(model, path, INPUT_SHAPE, opset=17, dynamic_batch=True, input_name="input", output_name="logits")
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name}: {params} params, trained in {seconds:.0f} s, train acc {accuracy(model, tx, ty):.2f}%, "
            f"eval acc {accuracy(model, vx, vy):.2f}%, {path.stat().st_size / 1024:.0f} KiB -> {path}"
        )


if __name__ == "__main__":
    main()
