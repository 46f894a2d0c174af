"""ONNX -> TFLite worker, run by hwopt inside its own TensorFlow venv (never in hwopt's process).

TensorFlow and torch pin conflicting libraries, so hwopt keeps TensorFlow in a separate venv and
talks to this script over the command line: it reads a static-shape ONNX model and calibration
arrays already in TensorFlow's NHWC layout, runs onnx2tf, and prints one JSON line naming the
.tflite files it wrote.

onnx2tf downloads a sample image set from the internet to validate and calibrate models with
one 3-channel image input; here that function is replaced by one that returns the caller's
calibration data, so the conversion runs offline and is calibrated on the user's samples.

onnx2tf writes the float32 and float16 files before it quantizes to int8, and TensorFlow's
full-integer quantizer can fail or even crash the process on some graphs (a segmentation fault
on an LSTM). The conversion therefore runs in a forked child; this parent then reports every file
that was written and, for a precision that is missing, why: the float files survive an int8 failure.

usage: python convert.py --onnx M.onnx --out DIR --calib calib.npz --precisions fp32,fp16,int8 [--keep-layout a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

#: onnx2tf output file suffixes for each precision hwopt asks for
SUFFIXES = {"fp32": "_float32.tflite", "fp16": "_float16.tflite", "int8": "_full_integer_quant.tflite"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib", required=True, help=".npz: input name -> samples in NHWC layout (float32)")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--keep-layout", default="", help="comma-separated inputs to keep in their ONNX layout")
    args = ap.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = set(precisions) - set(SUFFIXES)
    if unknown:
        print(json.dumps({"error": f"unknown precision(s) {sorted(unknown)}"}))
        return 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    error_file = out / ".error"
    pid = os.fork()
    if pid == 0:  # the child converts; nothing of TensorFlow is ever loaded in the parent
        code = 0
        try:
            convert(Path(args.onnx), out, Path(args.calib), precisions, [n for n in args.keep_layout.split(",") if n])
        except SystemExit as exc:  # onnx2tf exits after logging its error; the caller reads that from stderr
            code = exc.code if isinstance(exc.code, int) and exc.code else 1
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as the reason, whatever it is
            error_file.write_text(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = f"the converter crashed ({signal.Signals(sig).name})"
    else:
        why = error_file.read_text() if error_file.is_file() else f"the converter exited with {os.WEXITSTATUS(status)}"
    stem = Path(args.onnx).stem
    written = {p: str(out / f"{stem}{SUFFIXES[p]}") for p in precisions if (out / f"{stem}{SUFFIXES[p]}").is_file()}
    failed = {p: why if status else f"onnx2tf wrote no {p} model" for p in precisions if p not in written}
    if "fp32" not in written:
        print(json.dumps({"error": failed["fp32"]}))
        return 1
    print(json.dumps({"files": written, "failed": failed, "onnx2tf": version("onnx2tf")}))
    return 0


def convert(onnx_path: Path, out: Path, calib_path: Path, precisions: list[str], keep_layout: list[str]) -> None:
    """Run onnx2tf on `onnx_path` into `out`, calibrating int8 on the arrays in `calib_path` (NHWC for
    image inputs); the inputs named in `keep_layout` keep their ONNX layout."""
    import onnx2tf
    import onnx2tf.onnx2tf as o2t_module

    with np.load(calib_path) as z:
        calib = {k: z[k].astype(np.float32) for k in z.files}
    first = next(iter(calib.values()))

    def offline_images() -> np.ndarray:
        # replaces onnx2tf's internet download: the caller's own samples, NHWC float32
        return first

    o2t_module.download_test_image_data = offline_images
    if "int8" in precisions:
        convert_only_what_hwopt_uses()
    calib_args = []
    for name, arr in calib.items():
        npy = out / f".calib_{len(calib_args)}.npy"
        np.save(npy, arr)
        zeros = np.zeros((1,) * (arr.ndim - 1) + (arr.shape[-1],), np.float32)
        calib_args.append([name, str(npy), zeros, np.ones_like(zeros)])

    stdout = sys.stdout
    sys.stdout = sys.stderr  # onnx2tf prints progress; the parent's stdout carries the one JSON line
    try:
        onnx2tf.convert(
            input_onnx_file_path=str(onnx_path),
            output_folder_path=str(out),
            output_integer_quantized_tflite="int8" in precisions,
            custom_input_op_name_np_data_path=calib_args if "int8" in precisions else None,
            quant_type="per-channel",
            input_quant_dtype="int8",
            output_quant_dtype="int8",
            keep_ncw_or_nchw_or_ncdhw_input_names=keep_layout or None,
            non_verbose=True,
        )
    finally:
        sys.stdout = stdout
        for c in calib_args:
            Path(c[1]).unlink(missing_ok=True)


#: the TensorFlow converter classes onnx2tf builds (from a Keras model, concrete functions, a SavedModel)
_CONVERTERS = ("TFLiteConverterV2", "TFLiteFrozenGraphConverterV2", "TFLiteKerasModelConverterV2",
               "TFLiteSavedModelConverterV2")


def convert_only_what_hwopt_uses() -> None:
    """Skip the TFLite conversions whose files hwopt never reads (they come back as empty bytes).

    Asked for int8, onnx2tf also writes a dynamic-range model, an int8 model with float inputs and
    two int16-activation models: four more full conversions, three of them calibrated, and the
    ones that crashed TensorFlow on an LSTM. onnx2tf writes what the converter returns to files
    hwopt ignores, so only fp32, fp16 and full-integer int8 are really converted. (They cannot
    simply raise: the float-input int8 model shares its try block with the full-integer one.)
    """
    import tensorflow as tf
    from tensorflow.lite.python import lite

    def wanted(conv) -> bool:
        if not conv.optimizations:
            return True  # float32
        if tf.float16 in conv.target_spec.supported_types:
            return True  # float16
        return (conv.representative_dataset is not None and conv.inference_input_type == tf.int8
                and tf.lite.OpsSet.TFLITE_BUILTINS_INT8 in conv.target_spec.supported_ops)  # full-integer int8

    def guard(original):
        def convert(self):
            return original(self) if wanted(self) else b""

        return convert

    for name in _CONVERTERS:
        cls = getattr(lite, name)
        if "convert" in vars(cls):
            cls.convert = guard(vars(cls)["convert"])


if __name__ == "__main__":
    sys.exit(main())
