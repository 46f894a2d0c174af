"""Which QDQ groups onnxruntime really runs as int8 kernels, asked of onnxruntime itself.

onnxruntime turns DequantizeLinear -> Conv -> QuantizeLinear into one QLinearConv only when its
selectors accept the group, and the rule depends on the build and the CPU: on this x86 machine
(onnxruntime 1.32.0), every conv of a ResNet quantized by onnxruntime's own quantizer (S8S8,
asymmetric activations) stayed a float Conv between Q/DQ nodes, a model from hwopt's quantizer
got 3 of 9 convs fused, and the profiler's generated blocks were all fused. Unfused groups run a
float conv plus a DequantizeLinear of the weight and Q/DQ of the activations on every inference,
which made int8 models 1.5-2x slower than fp32 while the int8 kernel sum predicted them faster.
No static rule matched all three, so for a runtime present here we run onnxruntime's graph
optimizer on the model (no inference) and read which anchors and Q/DQ nodes are left.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_CACHE: dict[str, QdqPlacement | None] = {}


@dataclass(frozen=True)
class QdqPlacement:
    """Names of the original nodes that onnxruntime left as they are in the optimized graph."""

    float_nodes: frozenset[str]  # nodes still running as their float op (QDQ groups that were not fused)
    qdq_nodes: frozenset[str]  # QuantizeLinear/DequantizeLinear nodes that still run


def observed_placement(model: onnx.ModelProto) -> QdqPlacement | None:
    """onnxruntime's own answer for a QDQ model (cached by content); None when it cannot tell."""
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return None
    blob = model.SerializeToString()
    key = hashlib.sha1(blob).hexdigest()
    if key not in _CACHE:
        if len(_CACHE) >= 256:  # a long compress run predicts many int8 candidates; keep memory bounded
            _CACHE.clear()
        _CACHE[key] = _optimize(blob)
    return _CACHE[key]


def _optimize(blob: bytes) -> QdqPlacement | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the measured sessions
        opts.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
            optimized = onnx.load(str(out), load_external_data=False)
        except Exception:  # noqa: BLE001 - a model onnxruntime rejects: fall back to the static rules
            return None
    # a fused group becomes a new QLinear*/QGemm node; a node left alone keeps its name and op, and runs
    # in float when it still reads a DequantizeLinear output. MaxPool, Resize, Transpose and the like keep
    # their op but lose their Q/DQ pair and run on the int8 tensor (onnxruntime's int8 MaxPool is its
    # slow generic kernel: 3.4 ms where a float one takes 0.05 ms), so those are not float nodes.
    producer = {o: n.op_type for n in optimized.graph.node for o in n.output}
    return QdqPlacement(
        float_nodes=frozenset(n.name for n in optimized.graph.node
                              if n.name and n.op_type not in _QDQ and n.input
                              and producer.get(n.input[0]) == "DequantizeLinear"),
        qdq_nodes=frozenset(n.name for n in optimized.graph.node if n.name and n.op_type in _QDQ),
    )
