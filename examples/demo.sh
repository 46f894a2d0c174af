#!/usr/bin/env bash
# The README's demo: install hwopt (with its runtimes) from this checkout, then compress the bundled
# example model for a Raspberry Pi 4 (predicted latency, verified .tflite) and for this x86 machine
# (measured latency). Results land in out/demo-*/ (report.json, report.html, the deployable model).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt -e '.[all]'
hwopt inspect examples/resnet_digits.onnx
hwopt compress examples/resnet_digits.onnx --target rpi4 \
  --calib examples/calib.npz --eval examples/eval.npz -o out/demo-rpi4
hwopt compress examples/resnet_digits.onnx --target x86-avx512 \
  --calib examples/calib.npz --eval examples/eval.npz -o out/demo-x86
# A real PaddlePaddle export (PP-OCR direction classifier: opset 11, weights in Constant nodes,
# dynamic H/W): the data's 48x192 size is what it is judged at; the .tflite is static at that size.
mkdir -p out
python -c "import numpy as np; np.savez('out/ppocr_cls_calib.npz', x=np.random.default_rng(0).random((16, 3, 48, 192), dtype=np.float32))"
hwopt compress tests/data/ppocr_cls.onnx --target rpi4 --calib out/ppocr_cls_calib.npz -o out/demo-ppocr-cls
