"""A fixed speed-probe network: how fast is this machine *now*, compared with when a table was timed.

On this shared VM the process CPU time of the same model drifts by 5-15% within minutes, machine-wide
(another job on the sibling hardware thread slows every model a little), so a comparison of a
prediction with a measurement mixes the predictor's error with the machine's mood. The probe is
one small, always identical network (dense, depthwise and pointwise convs, a residual add, a
HardSwish and a Gemm: the kernel kinds the tables are made of) timed round-robin with whatever is
measured. `retime_profile` times it alongside the profiled networks and the table records its time
in `provenance.speed_probe`; a later measurement that also timed it can report its error both raw
and *drift-normalized* (the prediction x probe now / probe at profile). The normalized number is
labelled as such everywhere: it removes a machine-wide speed change, not any error of the table.
"""

from __future__ import annotations

import onnx

from hwopt.latency.builders import GraphBuilder
from hwopt.latency.table import LatencyTable

PROBE_VERSION = 1  # bump when the probe network changes: older recorded probe times no longer compare
PROBE_SID = "speed-probe"  # its record's id in `<table>.samples.jsonl` (a later re-timing replaces it)


def probe_model() -> onnx.ModelProto:
    """The probe: fp32, 1x3x96x96, about 8 M MACs (0.19 ms on onnxruntime, 0.28 ms on OpenVINO at one thread here)."""
    g = GraphBuilder((1, 3, 96, 96), seed=PROBE_VERSION, name="probe_in")
    x = g.conv(g.input, 16, 3, 2, act="Relu")
    y = g.conv(x, 16, 3, act="Relu", residual=x)
    y = g.conv(y, 16, 3, 2, g=16, act="HardSwish")
    y = g.conv(y, 48, 1, act="Relu")
    y = g.conv(y, 48, 3, g=48, act="Relu")
    y = g.conv(y, 32, 1)
    return g.build([g.gemm(g.flatten(g.global_pool(y)), 10)])


def probe_record(ms: float, passes: int) -> dict:
    """The samples-file record of a probe timed with a re-timing run (its fastest pass, like the networks)."""
    return {"sid": PROBE_SID, "kind": "probe", "version": PROBE_VERSION, "ms": round(float(ms), 6), "passes": passes}


def probe_provenance(records) -> dict | None:
    """`provenance.speed_probe` for a table built from `records` (None when no re-timing timed the probe)."""
    probe = next((r for r in records if r.get("kind") == "probe" and r.get("version") == PROBE_VERSION), None)
    if probe is None:
        return None
    return {"ms": probe["ms"], "version": PROBE_VERSION, "passes": probe["passes"],
            "method": ("fastest of the re-timing passes, timed round-robin with the profiled networks "
                       "(hwopt.latency.probe); the table's level is that of those passes")}


def table_probe_ms(table: LatencyTable) -> float | None:
    """The probe's time when the table was (re-)timed, or None (no probe recorded, or another probe version)."""
    rec = table.provenance.get("speed_probe") or {}
    return float(rec["ms"]) if rec.get("version") == PROBE_VERSION and rec.get("ms") else None


def drift(table: LatencyTable, probe_now_ms: float) -> float | None:
    """Machine speed now relative to the table's timing: > 1 means the machine is slower now."""
    then = table_probe_ms(table)
    return probe_now_ms / then if then else None
