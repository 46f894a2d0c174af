"""The compress pipeline: recipe planning, cached stage runner, accuracy guard, report.

    from hwopt.pipeline import compress
    result = compress("model.onnx", target="rpi4", calib="calib.npz", eval="eval.npz", out_dir="out")

Custom flows chain stages themselves:

    from hwopt.pipeline import Pipeline, StageCache, Step
    pipe = Pipeline([Step("quantize", {"runtime": "openvino"}), Step("export", {"runtime": "openvino",
                     "precision": "int8"})], StageCache("out/.cache"), ctx)
"""

from hwopt.pipeline.artifact import Artifact, data_digest
from hwopt.pipeline.cache import StageCache
from hwopt.pipeline.compress import Result, compress
from hwopt.pipeline.guard import Verdict, choose
from hwopt.pipeline.recipe import Candidate, Recipe, load_recipe, plan_recipe
from hwopt.pipeline.runner import Pipeline
from hwopt.pipeline.stages import (
    EvaluateOptions,
    ExportOptions,
    PruneOptions,
    QuantizeOptions,
    StageContext,
    Step,
)

__all__ = [
    "Artifact", "Candidate", "EvaluateOptions", "ExportOptions", "Pipeline", "PruneOptions", "QuantizeOptions", "Recipe",
    "Result", "StageCache", "StageContext", "Step", "Verdict", "choose", "compress", "data_digest", "load_recipe", "plan_recipe",
]
