"""Latency tables and predictors: per-device kernel lookup (Once-for-All style) plus nn-Meter style
kernel detection, a learned predictor for unseen kernels, and a calibrated roofline for targets
without hardware here."""

from hwopt.latency.fusion import FUSION_RULES, FusionRule, extract_kernels
from hwopt.latency.kernels import Kernel
from hwopt.latency.predict import LayerLatency, Prediction, predict_kernels, predict_latency, resolve_table
from hwopt.latency.profiler import profile_table
from hwopt.latency.table import SCHEMA_VERSION, LatencyTable, load_table

__all__ = [
    "FUSION_RULES", "FusionRule", "Kernel", "LatencyTable", "LayerLatency", "Prediction", "SCHEMA_VERSION",
    "extract_kernels", "load_table", "predict_kernels", "predict_latency", "profile_table", "resolve_table",
]
