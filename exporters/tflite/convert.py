"""ONNX -> TFLite worker, run by hwopt inside its own TensorFlow venv (never in hwopt's process).

TensorFlow and torch pin conflicting libraries, so hwopt keeps TensorFlow in a separate venv and
talks to this script over the command line: it reads a static-shape ONNX model and calibration
arrays already in TensorFlow's NHWC layout, runs onnx2tf, and prints one JSON line naming the
.tflite files it wrote.

onnx2tf downloads a sample image set from the internet to validate and calibrate models with
one 3-channel image input; here that function is replaced by one that returns the caller's
calibration data, so the conversion runs offline and is calibrated on the user's samples.

usage: python convert.py --onnx M.onnx --out DIR --calib calib.npz --precisions fp32,fp16,int8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    args = ap.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = set(precisions) - set(SUFFIXES)
    if unknown:
        print(json.dumps({"error": f"unknown precision(s) {sorted(unknown)}"}))
        return 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnx2tf
    import onnx2tf.onnx2tf as o2t_module

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(args.calib) as z:
        calib = {k: z[k].astype(np.float32) for k in z.files}
    first = next(iter(calib.values()))

    def offline_images() -> np.ndarray:
        # replaces onnx2tf's internet download: the caller's own samples, NHWC float32
        return first

    o2t_module.download_test_image_data = offline_images
    calib_args = []
    for name, arr in calib.items():
        npy = out / f".calib_{len(calib_args)}.npy"
        np.save(npy, arr)
        zeros = np.zeros((1,) * (arr.ndim - 1) + (arr.shape[-1],), np.float32)
        calib_args.append([name, str(npy), zeros, np.ones_like(zeros)])

    stdout = sys.stdout
    sys.stdout = sys.stderr  # onnx2tf prints progress; keep our stdout for the one JSON line
    try:
        onnx2tf.convert(
            input_onnx_file_path=args.onnx,
            output_folder_path=str(out),
            output_integer_quantized_tflite="int8" in precisions,
            custom_input_op_name_np_data_path=calib_args if "int8" in precisions else None,
            quant_type="per-channel",
            input_quant_dtype="int8",
            output_quant_dtype="int8",
            non_verbose=True,
        )
    finally:
        sys.stdout = stdout
        for c in calib_args:
            Path(c[1]).unlink(missing_ok=True)
    stem = Path(args.onnx).stem
    files = {p: str(out / f"{stem}{SUFFIXES[p]}") for p in precisions}
    missing = [p for p, f in files.items() if not Path(f).is_file()]
    if missing:
        print(json.dumps({"error": f"onnx2tf wrote no {', '.join(missing)} model"}))
        return 1
    print(json.dumps({"files": files, "onnx2tf": onnx2tf.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
