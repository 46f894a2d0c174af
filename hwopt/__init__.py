"""hwopt: hardware-aware model compression and deployment.

    import hwopt
    hwopt.inspect("model.onnx")                          # census: ops, params, MACs, prunable groups
    hwopt.bench("model.onnx", runtime="openvino")        # measured latency here
    hwopt.load_device("rpi4")                            # typed device profile
    hwopt.predict_latency("model.onnx", "rpi4")          # per-layer latency from the device's table
    hwopt.prune("model.onnx", ratio=0.3, criterion="obs", calib="calib.npz")
    hwopt.quantize("model.onnx", calib="calib.npz", target="x86-avx512")
    hwopt.export("model.onnx", to="openvino", out="model.xml")
    hwopt.search("model.onnx", target="x86-avx512", latency_ms=1.0, out_dir="subnets")
    hwopt.compress("model.onnx", target="rpi4", calib="calib.npz", eval="eval.npz", out_dir="out")

The heavier entry points are imported on first use, so `import hwopt` and the CLI stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from hwopt.api import bench, inspect, list_devices, load_device
from hwopt.errors import HwoptError, NotAvailableError

__version__ = "0.4.0"

# public name -> (module, attribute), imported lazily
_LAZY = {
    "prune": ("hwopt.pruning", "prune_model"),
    "PruneResult": ("hwopt.pruning", "PruneResult"),
    "quantize": ("hwopt.quant.api", "quantize"),
    "QuantResult": ("hwopt.quant.api", "QuantResult"),
    "predict_latency": ("hwopt.latency", "predict_latency"),
    "Prediction": ("hwopt.latency", "Prediction"),
    "profile_table": ("hwopt.latency", "profile_table"),
    "export": ("hwopt.exporters", "export"),
    "ExportResult": ("hwopt.exporters", "ExportResult"),
    "compress": ("hwopt.pipeline", "compress"),
    "Result": ("hwopt.pipeline", "Result"),
    "Pipeline": ("hwopt.pipeline", "Pipeline"),
    "search": ("hwopt.nas", "search"),
    "onnx_to_torch": ("hwopt.graph.to_torch", "onnx_to_torch"),
    "write_back": ("hwopt.graph.to_torch", "write_back"),
    "kd_finetune": ("hwopt.graph.finetune", "kd_finetune"),
    "load_dataset": ("hwopt.data", "load_dataset"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwopt' has no attribute {name!r}")


__all__ = ["HwoptError", "NotAvailableError", "__version__", "bench", "inspect", "list_devices", "load_device", *_LAZY]
