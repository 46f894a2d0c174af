"""Once-for-All-style subnet selection: elastic spaces, supernets, accuracy predictor, evolutionary search.

    from hwopt.nas import search
    report = search(supernet="ofa-mbv3-digits", target="x86-avx512", budgets=[0.12, 0.16], out_dir="out")
    report = search("model.onnx", target="rpi4", latency_ms=20, eval_data="eval.npz", out_dir="out")
"""

from hwopt.nas.api import SearchReport, SearchResult, search
from hwopt.nas.evolution import EvolutionResult, EvolutionSettings, evolve
from hwopt.nas.ofa import OFAMobileNetV3, OFASpec, TrainSchedule, extract_subnet, train_supernet
from hwopt.nas.predictor import AccuracyPredictor, fit_predictor
from hwopt.nas.space import OnnxSpace
from hwopt.nas.supernets import SUPERNETS, load_supernet

__all__ = [
    "SUPERNETS",
    "AccuracyPredictor",
    "EvolutionResult",
    "EvolutionSettings",
    "OFAMobileNetV3",
    "OFASpec",
    "OnnxSpace",
    "SearchReport",
    "SearchResult",
    "TrainSchedule",
    "evolve",
    "extract_subnet",
    "fit_predictor",
    "load_supernet",
    "search",
    "train_supernet",
]
