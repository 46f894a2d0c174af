"""Torch models for tests, benchmarks and examples (no torchvision, no downloaded weights).

Needs torch (`pip install 'hwopt[torch]'`); nothing else in hwopt imports this package at start-up.
"""

from hwopt.models.export import export_onnx
from hwopt.models.zoo import ZOO, ZooEntry, build

__all__ = ["ZOO", "ZooEntry", "build", "export_onnx"]
