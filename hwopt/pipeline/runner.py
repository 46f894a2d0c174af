"""Sequence stages over an artifact, each result cached by content (resume after a crash).

    pipe = Pipeline([Step("quantize", {"runtime": "openvino"}), Step("export", {"runtime": "openvino",
                     "precision": "int8"}), Step("evaluate", {"runtime": "openvino", "precision": "int8"})], cache, ctx)
    result = pipe.run(source_artifact)

The runner knows nothing about what stages do: it hashes the input artifact, the data and the
options, asks the cache, and runs the stage only on a miss.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from hwopt.pipeline.artifact import Artifact
from hwopt.pipeline.cache import RESULT, StageCache, cache_key
from hwopt.pipeline.stages import StageContext, Step


class Pipeline:
    """An ordered list of steps run with one cache and one context."""

    def __init__(self, steps: list[Step], cache: StageCache, ctx: StageContext):
        self.steps = steps
        self.cache = cache
        self.ctx = ctx
        self.trace: list[dict] = []  # one entry per step run: stage, options, cache hit or not, wall seconds

    def run(self, art: Artifact) -> Artifact:
        for step in self.steps:
            art = self.run_step(step, art)
        return art

    def run_step(self, step: Step, art: Artifact) -> Artifact:
        options, fn = step.build()
        opts = asdict(options)
        key = cache_key(step.stage, [art.digest, self.ctx.data_digest],
                        {**opts, "target": self.ctx.device.name, "threads": self.ctx.threads})
        # asked before the run: a stage may itself hit the cache (a shared TFLite conversion) and still run
        cached = (self.cache.entry(step.stage, key) / RESULT).is_file()

        def run(work: Path) -> dict:
            return fn(art, options, self.ctx, work).to_dict(work)

        t0 = time.perf_counter()
        result, entry = self.cache.get_or_run(step.stage, key, run)
        self.trace.append({"stage": step.stage, "options": opts, "cached": cached, "entry": entry.name,
                           "seconds": round(time.perf_counter() - t0, 2)})
        return Artifact.from_dict(result, entry)
