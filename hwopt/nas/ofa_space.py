"""The OFA-MobileNetV3 family as a gene space, and its per-block latency lookup table.

Genes: resolution, then per stage its depth and, per block position, kernel and expand ratio.
Blocks beyond a stage's depth are inactive (their genes are zeroed in canonical form). The
latency table has one cell per (resolution, stage, first-or-repeated block, kernel, expand) -- the
same signature OFA's tables use -- plus the stem+head at each resolution, so a subnet's latency is
a lookup-sum and a whole population is scored in microseconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from hwopt.nas.genes import AdditiveLatency, Gene, Term
from hwopt.nas.ofa import Config, OFAMobileNetV3, OFASpec, validate_config

BlockTimer = Callable[[onnx.ModelProto], float]  # ONNX model -> ms (without per-inference overhead)


class OFASearchSpace:
    def __init__(self, spec: OFASpec):
        self.spec = spec
        self.res = tuple(sorted(spec.resolutions))
        self.depths = tuple(sorted(spec.depths))
        self.kernels = tuple(sorted(spec.kernels))
        self.expands = tuple(sorted(spec.expands))
        self.genes: list[Gene] = [Gene("resolution", self.res)]
        self.depth_gene: list[int] = []
        self.block_genes: list[list[tuple[int, int]]] = []  # [stage][pos] -> (kernel gene, expand gene)
        for s in range(len(spec.widths)):
            self.depth_gene.append(len(self.genes))
            self.genes.append(Gene(f"stage{s}.depth", self.depths))
            pos = []
            for i in range(spec.max_depth):
                pos.append((len(self.genes), len(self.genes) + 1))
                self.genes += [Gene(f"stage{s}.block{i}.kernel", self.kernels), Gene(f"stage{s}.block{i}.expand", self.expands)]
            self.block_genes.append(pos)

    def _active(self, pop: np.ndarray, s: int, i: int) -> np.ndarray:
        return np.asarray(self.depths)[pop[:, self.depth_gene[s]]] > i

    def decode(self, row: np.ndarray) -> Config:
        stages = []
        for s, pos in enumerate(self.block_genes):
            d = self.depths[row[self.depth_gene[s]]]
            stages.append({
                "kernel": [self.kernels[row[kg]] for kg, _ in pos[:d]],
                "expand": [self.expands[row[eg]] for _, eg in pos[:d]],
            })
        return {"resolution": self.res[row[0]], "stages": stages}

    def encode(self, config: Config) -> np.ndarray:
        config = validate_config(self.spec, config)
        row = np.zeros(len(self.genes), dtype=np.int64)
        row[0] = self.res.index(config["resolution"])
        for s, sc in enumerate(config["stages"]):
            row[self.depth_gene[s]] = self.depths.index(len(sc["kernel"]))
            for (kg, eg), k, e in zip(self.block_genes[s], sc["kernel"], sc["expand"]):
                row[kg], row[eg] = self.kernels.index(k), self.expands.index(e)
        return row

    def canonical(self, pop: np.ndarray) -> np.ndarray:
        pop = np.array(pop, dtype=np.int64, copy=True)
        for s, pos in enumerate(self.block_genes):
            for i, (kg, eg) in enumerate(pos):
                off = ~self._active(pop, s, i)
                pop[off, kg] = 0
                pop[off, eg] = 0
        return pop

    def features(self, pop: np.ndarray) -> np.ndarray:
        """One-hot kernel and expand per block position (zeros when skipped), one-hot resolution and
        one-hot stage depths (implicit in the zeroed blocks, but explicit depth lifted the held-out
        Spearman of both regressors by ~0.01-0.02 over 5 splits of 100 measured digits subnets)."""
        pop = np.atleast_2d(pop)
        cols = [np.eye(len(self.res))[pop[:, 0]]] + [np.eye(len(self.depths))[pop[:, g]] for g in self.depth_gene]
        for s, pos in enumerate(self.block_genes):
            for i, (kg, eg) in enumerate(pos):
                on = self._active(pop, s, i)[:, None]
                cols += [np.eye(len(self.kernels))[pop[:, kg]] * on, np.eye(len(self.expands))[pop[:, eg]] * on]
        return np.concatenate(cols, axis=1).astype(np.float32)

    # ------------------------------------------------------------ latency table

    def spatial_sizes(self, resolution: int) -> list[int]:
        """Input height/width of each stage's first block, then of the head, at `resolution`."""
        h = (resolution + 1) // 2  # stem stride 2, padding 1, kernel 3
        sizes = []
        for stride in self.spec.strides:
            sizes.append(h)
            h = (h - 1) // stride + 1
        return sizes + [h]

    def latency_model(self, net: OFAMobileNetV3, timer: BlockTimer, overhead_ms: float, *, target: str, runtime: str,
                      provenance: dict | None = None) -> AdditiveLatency:
        """Time every block signature with `timer` and assemble the lookup-sum latency model."""
        spec = self.spec
        nr, nd, nk, ne = len(self.res), len(self.depths), len(self.kernels), len(self.expands)
        base = np.zeros(nr)
        # block_ms[r, s, first?, k, e]
        block_ms = np.zeros((nr, len(spec.widths), 2, nk, ne))
        with tempfile.TemporaryDirectory() as tmp:
            for r, res in enumerate(self.res):
                sizes = self.spatial_sizes(res)
                base[r] = timer(_onnx(net.stem, (1, 3, res, res), tmp)) + timer(_onnx(net.head, (1, spec.widths[-1], sizes[-1], sizes[-1]), tmp))
                for s, stage in enumerate(net.stages):
                    for first in (0, 1):
                        block = stage[0] if first else stage[1]
                        h = sizes[s] if first else (sizes[s] - 1) // spec.strides[s] + 1
                        for k, kern in enumerate(self.kernels):
                            for e, exp in enumerate(self.expands):
                                block_ms[r, s, first, k, e] = timer(_onnx(block.static(kern, exp), (1, block.cin, h, h), tmp))
        terms = [Term((0,), base, "stem+head")]
        for s, pos in enumerate(self.block_genes):
            for i, (kg, eg) in enumerate(pos):
                table = np.zeros((nr, nd, nk, ne))
                for d, depth in enumerate(self.depths):
                    if depth > i:
                        table[:, d] = block_ms[:, s, int(i == 0)]
                terms.append(Term((0, self.depth_gene[s], kg, eg), table, f"stage{s}.block{i}"))
        return AdditiveLatency(target, runtime, overhead_ms, terms, provenance or {})


def _onnx(module: nn.Module, shape: tuple[int, ...], tmp: str) -> onnx.ModelProto:
    from hwopt.models.export import export_onnx

    return export_onnx(module, Path(tmp) / "block.onnx", shape, dynamic_batch=False)


def export_subnet(module: nn.Module, resolution: int, path: str | Path) -> onnx.ModelProto:
    """Write an extracted subnet as ONNX (input `input`, 1x3xRxR with a dynamic batch)."""
    from hwopt.models.export import export_onnx

    module = module.eval()
    with torch.no_grad():
        return export_onnx(module, path, (1, 3, resolution, resolution))
