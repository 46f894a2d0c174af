"""ONNX graph core: loading and checking, shape handling, normalization, census."""

from hwopt.graph.load import load_model, save_model
from hwopt.graph.normalize import normalize_model

__all__ = ["load_model", "save_model", "normalize_model"]
