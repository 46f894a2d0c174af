"""Compress a model for two targets with the Python API, then run a custom stage flow.

    python examples/compress_api.py [OUT_DIR]

Uses examples/resnet_digits.onnx with examples/calib.npz and eval.npz (made by
examples/train_examples.py); without them it exports a small zoo ResNet with random data, so
the script always runs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from hwopt.data import load_dataset
from hwopt.devices import load_device
from hwopt.pipeline import Artifact, Pipeline, StageCache, StageContext, Step, compress, data_digest

HERE = Path(__file__).resolve().parent


def example_inputs(tmp: Path) -> tuple[Path, Path, Path]:
    if (HERE / "resnet_digits.onnx").is_file():
        return HERE / "resnet_digits.onnx", HERE / "calib.npz", HERE / "eval.npz"
    from hwopt.models.export import export_onnx
    from hwopt.models.zoo import resnet_basic

    export_onnx(resnet_basic(width=0.25, depths=(1, 1)), tmp / "model.onnx", (1, 3, 32, 32))
    rng = np.random.default_rng(0)
    np.savez(tmp / "calib.npz", input=rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
    np.savez(tmp / "eval.npz", input=rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
    return tmp / "model.onnx", tmp / "calib.npz", tmp / "eval.npz"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hwopt-example-"))
    model, calib, ev = example_inputs(out)

    # 1. the whole pipeline for this machine (measured) and for a Raspberry Pi 4 (predicted)
    for target in ("x86-avx512", "rpi4"):
        r = compress(model, target=target, calib=calib, eval=ev, max_accuracy_drop=1.0, out_dir=out / target)
        res, base = r.report["result"], r.report["baseline"]
        print(f"{target}: {res['runtime']} {res['precision']} -> {r.artifact}")
        print(f"  latency {res['latency_ms']} ms ({res['latency_source']}), baseline {base['runtime']} "
              f"{base['latency_ms']} ms; speedup {r.report['speedup']}, accuracy drop {r.report['accuracy_drop']}")
        print(f"  {r.reason}; report {r.html_path}")

    # 2. a custom flow: quantize for OpenVINO, export the IR, judge it -- every step cached
    from hwopt.data import run_outputs
    from hwopt.runtimes import get_runtime

    device = load_device("x86-avx512")
    calib_ds, eval_ds = load_dataset(calib), load_dataset(ev)
    source = Artifact(Path(model))
    reference = run_outputs(get_runtime("onnxruntime").session(source.load_onnx()), eval_ds)
    ctx = StageContext(device, calib_ds, eval_ds, data_digest=data_digest(calib, ev),
                       shapes={k: (1, *v.shape[1:]) for k, v in eval_ds.inputs.items()},
                       reference=reference)
    pipe = Pipeline([Step("quantize", {"runtime": "openvino", "method": "percentile"}),
                     Step("export", {"runtime": "openvino", "precision": "int8"}),
                     Step("evaluate", {"runtime": "openvino", "precision": "int8"})], StageCache(out / "custom-cache"), ctx)
    art = pipe.run(source)
    print(f"custom flow: {art.path.name} accuracy {art.meta['accuracy']:.2f} ({art.meta['metric']}), "
          f"{art.meta['latency_ms']:.3f} ms {art.meta['latency_source']}; steps cached: {[t['cached'] for t in pipe.trace]}")


if __name__ == "__main__":
    main()
