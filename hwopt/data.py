"""Calibration and evaluation data sets, and the metrics that judge a compressed model.

A data set is an .npz whose keys are the model's input names (first axis = samples) plus an
optional `labels` array, or a folder of images (PNG/JPEG/BMP/WebP) turned into the model's input
by a preprocess spec (`Preprocess`: size, channel order, scale, mean/std, layout), given as
options or as `preprocess.yaml` / `preprocess.json` in the folder. Images in class subfolders
get `labels` (the sorted subfolder index). Without labels, a candidate is judged by agreement
with the original model: top-1 agreement for single-output classifiers, cosine similarity of all
outputs otherwise (SQNR and cosine are always reported).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from hwopt.errors import HwoptError
from hwopt.graph.shapes import InputSpec, input_specs


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, batch_size: int = 1, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of `batch_size` samples each (the last may be shorter), up to `limit` samples."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            yield {k: v[i : min(i + batch_size, n)] for k, v in self.inputs.items()}

    def subset(self, n: int) -> Dataset:
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n], self.source)


def load_dataset(path: str | os.PathLike, model: onnx.ModelProto | None = None,
                 preprocess: Preprocess | Mapping[str, Any] | None = None) -> Dataset:
    """Load an .npz data set or an image folder and, given a model, check it against the model.

    The check covers input names, ranks, static dims and finite values. `preprocess` (options
    that override the folder's preprocess.yaml/json) applies to image folders only.
    """
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p, model, preprocess)
    if preprocess is not None:
        raise HwoptError(f"{p}: preprocess options apply to image folders, not to .npz data")
    if not p.is_file():
        raise HwoptError(f"data file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise HwoptError(f"cannot read data file {p} (expected .npz): {exc}") from exc
    labels = arrays.pop("labels", None)
    if not arrays:
        raise HwoptError(f"data file {p} has no input arrays")
    scalars = sorted(k for k, v in arrays.items() if v.ndim == 0)
    if scalars:
        raise HwoptError(f"data file {p}: array(s) {scalars} are scalars; every array needs one row per sample on axis 0")
    ds = Dataset(arrays, labels, str(p))
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or (labels is not None and len(labels) != len(ds)):
        raise HwoptError(f"data file {p}: arrays have different sample counts {lengths}")
    if model is not None:
        check_dataset(ds, model)
    return ds


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPEC_FILES = ("preprocess.yaml", "preprocess.yml", "preprocess.json")


@dataclass
class Preprocess:
    """How images become model input: out = (pixels * scale - mean) / std, in `layout`.

    `size` is (height, width) to resize to (default: the model input's static H and W);
    `channels` is RGB, BGR or L (grayscale; default L for 1-channel inputs, else RGB); `mean`
    and `std` are per channel (or one value) on the scaled pixels; `layout` NCHW or NHWC
    (default: NHWC when the model's last dim is the channel count and dim 1 is not);
    `input` names the model input to feed (default: its only input); at most `limit` images
    are read (evenly spread over the sorted files), which bounds memory.
    """

    size: tuple[int, int] | None = None
    channels: str | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None
    input: str | None = None
    limit: int = 1024

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> Preprocess:
        """Validated spec from a mapping (a preprocess file or keyword options)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise HwoptError(f"{where}: unknown preprocess key(s) {unknown}; known: {sorted(known)}")
        spec = cls(**dict(options))
        try:
            spec.size = None if spec.size is None else _pair(spec.size)
            spec.mean, spec.std = _floats(spec.mean), _floats(spec.std)
            spec.scale, spec.limit = float(spec.scale), int(spec.limit)
        except (TypeError, ValueError) as exc:
            raise HwoptError(f"{where}: bad preprocess value ({exc})") from exc
        spec.channels = spec.channels.upper() if spec.channels else None
        spec.layout = spec.layout.upper() if spec.layout else None
        if spec.channels not in (None, "RGB", "BGR", "L"):
            raise HwoptError(f"{where}: channels must be RGB, BGR or L, got {spec.channels!r}")
        if spec.layout not in (None, "NCHW", "NHWC"):
            raise HwoptError(f"{where}: layout must be NCHW or NHWC, got {spec.layout!r}")
        if spec.limit < 1 or any(v == 0 for v in spec.std) or (spec.size and min(spec.size) < 1):
            raise HwoptError(f"{where}: limit and size must be positive and std non-zero")
        return spec


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, str):
        v = v.lower().split("x")
    h, w = (int(x) for x in v)
    return h, w


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))


def _read_spec(folder: Path) -> dict[str, Any]:
    for name in SPEC_FILES:
        f = folder / name
        if f.is_file():
            try:
                data = json.loads(f.read_text()) if f.suffix == ".json" else yaml.safe_load(f.read_text())
            except (ValueError, yaml.YAMLError) as exc:
                raise HwoptError(f"cannot parse {f}: {str(exc).splitlines()[0]}") from exc
            if data is None:
                return {}
            if not isinstance(data, dict):
                raise HwoptError(f"{f} must hold a mapping of preprocess keys")
            return data
    return {}


def _image_files(folder: Path) -> tuple[list[Path], list[int] | None]:
    """Images of the folder and, when they sit in class subfolders, their labels (sorted subfolder index)."""
    def images(d: Path) -> list[Path]:
        return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

    top = images(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and images(d))
    if top and classes:
        raise HwoptError(f"{folder}: images both at the top and in subfolders {classes[:3]}; use one or the other")
    if top:
        return top, None
    files, labels = [], []
    for k, c in enumerate(classes):
        found = images(folder / c)
        files += found
        labels += [k] * len(found)
    if not files:
        raise HwoptError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder or its subfolders")
    return files, labels


def _target_input(spec: Preprocess, model: onnx.ModelProto | None, folder: Path) -> tuple[str, InputSpec | None]:
    if model is None:
        return spec.input or "input", None
    specs = {s.name: s for s in input_specs(model)}
    name = spec.input or (next(iter(specs)) if len(specs) == 1 else None)
    if name is None or name not in specs:
        raise HwoptError(f"{folder}: say which model input the images feed (preprocess `input`, one of {sorted(specs)})")
    if len(specs[name].dims) != 4:
        raise HwoptError(f"{folder}: model input {name!r} has dims {specs[name].dims}; images need a 4-D input")
    return name, specs[name]


def _resolve(spec: Preprocess, target: InputSpec | None, folder: Path) -> tuple[str, str, tuple[int, int]]:
    """Layout, channel order and (H, W) from the spec, filled in from the model input."""
    dims = target.dims if target is not None else (None, None, None, None)
    layout = spec.layout or ("NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW")
    c_dim, hw = (dims[1], dims[2:4]) if layout == "NCHW" else (dims[3], dims[1:3])
    channels = spec.channels or ("L" if c_dim == 1 else "RGB")
    n_ch = 1 if channels == "L" else 3
    if isinstance(c_dim, int) and c_dim != n_ch:
        raise HwoptError(f"{folder}: channels {channels} give {n_ch} channel(s); model input {layout} has {c_dim}")
    size = spec.size or (tuple(hw) if all(isinstance(d, int) for d in hw) else None)
    if size is None:
        raise HwoptError(f"{folder}: the model input's height/width are dynamic {tuple(hw)}; give preprocess size: HxW")
    for want, got, what in zip(hw, size, ("height", "width")):
        if isinstance(want, int) and want != got:
            raise HwoptError(f"{folder}: preprocess size {size[0]}x{size[1]} does not match the model input {what} {want}")
    for what, v in (("mean", spec.mean), ("std", spec.std)):
        if len(v) not in (1, n_ch):
            raise HwoptError(f"{folder}: {what} has {len(v)} values for {n_ch} channel(s)")
    return layout, channels, (int(size[0]), int(size[1]))


def load_image_folder(folder: str | os.PathLike, model: onnx.ModelProto | None = None,
                      preprocess: Preprocess | Mapping[str, Any] | None = None) -> Dataset:
    """A data set from a folder of images (see `Preprocess`); labels from class subfolders.

    The folder's preprocess.yaml/json gives the spec; `preprocess` options override it. The
    samples array is allocated once for at most `limit` images and filled image by image.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise HwoptError("image-folder data needs Pillow (pip install pillow)") from exc
    folder = Path(folder)
    options = _read_spec(folder)
    if isinstance(preprocess, Preprocess):
        options.update({f.name: getattr(preprocess, f.name) for f in fields(Preprocess)})
    elif preprocess is not None:
        options.update(preprocess)
    spec = Preprocess.from_options(options, str(folder))
    files, labels = _image_files(folder)
    if len(files) > spec.limit:
        keep = np.unique(np.linspace(0, len(files) - 1, spec.limit).round().astype(int))
        files = [files[i] for i in keep]
        labels = None if labels is None else [labels[i] for i in keep]
    name, target = _target_input(spec, model, folder)
    layout, channels, (h, w) = _resolve(spec, target, folder)
    n_ch = 1 if channels == "L" else 3
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    out = np.empty((len(files), h, w, n_ch) if layout == "NHWC" else (len(files), n_ch, h, w), np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("L" if channels == "L" else "RGB").resize((w, h), Image.BILINEAR)
                px = np.asarray(im, np.float32).reshape(h, w, n_ch)
        except (UnidentifiedImageError, OSError) as exc:
            raise HwoptError(f"cannot read image {f}: {exc}") from exc
        if channels == "BGR":
            px = px[..., ::-1]
        px = (px * spec.scale - mean) / std
        out[i] = px if layout == "NHWC" else px.transpose(2, 0, 1)
    ds = Dataset({name: out}, None if labels is None else np.asarray(labels, np.int64), str(folder))
    if model is not None:
        check_dataset(ds, model)
    return ds


def check_dataset(ds: Dataset, model: onnx.ModelProto) -> None:
    """Clear errors for wrong input names, ranks, static dims, and non-finite values."""
    specs = {s.name: s for s in input_specs(model)}
    missing = sorted(set(specs) - set(ds.inputs))
    if missing:
        raise HwoptError(f"data file {ds.source} lacks model input(s) {missing}; it has {sorted(ds.inputs)}")
    extra = sorted(set(ds.inputs) - set(specs))
    if extra:
        raise HwoptError(f"data file {ds.source} has array(s) {extra} that are not model inputs {sorted(specs)}")
    for name, spec in specs.items():
        arr = ds.inputs[name]
        if not spec.dims:
            raise HwoptError(f"model input {name!r} is a scalar; hwopt data sets hold samples on axis 0 and cannot feed scalar inputs")
        if arr.ndim != len(spec.dims):
            raise HwoptError(
                f"data {name!r} has per-sample shape {arr.shape[1:]} (rank {arr.ndim} with the sample axis); "
                f"model expects rank {len(spec.dims)} {spec.dims}"
            )
        for i, d in enumerate(spec.dims[1:], start=1):
            if isinstance(d, int) and arr.shape[i] != d:
                raise HwoptError(f"data {name!r} has shape {arr.shape}; model input dim {i} must be {d}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise HwoptError(f"data {name!r} contains NaN or inf values")
        if arr.dtype != spec.dtype:
            ds.inputs[name] = arr.astype(spec.dtype)


def run_outputs(session, ds: Dataset, *, batch_size: int = 1, limit: int | None = None) -> list[np.ndarray]:
    """Run a runtime Session over a data set; outputs concatenated along the sample axis."""
    chunks: list[list[np.ndarray]] = []
    for feeds in ds.batches(batch_size, limit):
        chunks.append(session.run(feeds))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64).ravel()
    noise = ref - test.astype(np.float64).ravel()
    pn = float(np.mean(noise**2))
    ps = float(np.mean(ref**2))
    if pn == 0:
        return float("inf")
    return 10 * np.log10(max(ps, 1e-30) / pn)


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    a = reference.astype(np.float64).ravel()
    b = test.astype(np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else 1.0


def is_classifier_output(y: np.ndarray) -> bool:
    """A (N, C) score matrix with C > 1 is treated as class scores."""
    return y.ndim == 2 and y.shape[1] > 1


def accuracy_metrics(outputs: list[np.ndarray], labels: np.ndarray | None, reference: list[np.ndarray] | None) -> dict:
    """Metrics of a candidate's outputs: `accuracy` in percent is the headline number.

    With labels and class scores: top-1 accuracy against the labels. Without labels: top-1
    agreement with the reference outputs for a single-output classifier, else cosine similarity
    x 100 averaged over all outputs. A model with several outputs is judged on all of them
    because its first (N, C) output is as often a box or landmark regression (MTCNN, detectors)
    as class scores, and the argmax of a regression says nothing.
    SQNR and cosine vs the reference are always added when a reference is given.
    """
    y = outputs[0]
    m: dict = {}
    if labels is not None and is_classifier_output(y):
        m["accuracy"] = float((y.argmax(1) == labels).mean() * 100)
        m["metric"] = "top1"
    elif reference is not None and len(outputs) == 1 and is_classifier_output(y):
        m["accuracy"] = float((y.argmax(1) == reference[0].argmax(1)).mean() * 100)
        m["metric"] = "top1_agreement"
    elif reference is not None:
        m["accuracy"] = float(np.mean([cosine(r, o) for r, o in zip(reference, outputs)]) * 100)
        m["metric"] = "cosine_x100"
    else:
        raise HwoptError("cannot measure accuracy: no labels and no reference outputs")
    if reference is not None:
        m["sqnr_db"] = float(min(sqnr_db(r, o) for r, o in zip(reference, outputs)))
        m["cosine"] = float(min(cosine(r, o) for r, o in zip(reference, outputs)))
    return m
