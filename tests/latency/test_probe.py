"""The speed probe: a fixed network, recorded when a table is re-timed, and drift-normalized errors."""

from __future__ import annotations

import pytest

from hwopt.latency.analytical import Roofline
from hwopt.latency.probe import PROBE_VERSION, drift, probe_model, probe_provenance, probe_record, table_probe_ms
from hwopt.latency.profiler import _networks
from hwopt.latency.table import LatencyTable
from hwopt.latency.validate import drift_normalized


def _table(provenance: dict) -> LatencyTable:
    return LatencyTable(device="x86-avx512", runtime="onnxruntime", threads=1, method="measured",
                        provenance=provenance, roofline=Roofline(threads=1))


def test_probe_network_is_always_the_same():
    a, b = probe_model(), probe_model()
    assert a.SerializeToString() == b.SerializeToString()  # same weights too: a fixed reference
    assert {n.op_type for n in a.graph.node} >= {"Conv", "Add", "HardSwish", "Gemm"}


def test_probe_record_becomes_table_provenance_and_drift():
    records = [{"sid": 1, "kind": "net-fp32"}, probe_record(0.2, passes=2)]
    prov = probe_provenance(records)
    assert prov["ms"] == 0.2 and prov["version"] == PROBE_VERSION and prov["passes"] == 2
    table = _table({"speed_probe": prov})
    assert table_probe_ms(table) == 0.2
    assert drift(table, 0.3) == pytest.approx(1.5)  # the machine is 1.5x slower than when the table was timed
    assert probe_provenance([{"sid": 1, "kind": "net-fp32"}]) is None


def test_probe_of_another_version_or_missing_gives_no_drift():
    assert drift(_table({}), 0.3) is None
    assert drift(_table({"speed_probe": {"ms": 0.2, "version": PROBE_VERSION + 1}}), 0.3) is None


def test_drift_normalized_errors_scale_predictions_by_the_probe():
    table = _table({"speed_probe": {"ms": 0.2, "version": PROBE_VERSION}})
    rep = drift_normalized(table, 0.22, [1.0, 2.0, 4.0], [1.1, 2.2, 4.4])  # machine 10% slower, all 10% over
    assert rep["drift"] == pytest.approx(1.1)
    assert rep["predicted_ms"] == pytest.approx([1.1, 2.2, 4.4])
    assert rep["summary"]["mean_abs_rel_error"] == pytest.approx(0.0, abs=1e-9)
    bare = drift_normalized(_table({}), 0.22, [1.0], [1.1])
    assert bare["drift"] is None and "summary" not in bare and "no speed probe" in bare["note"]


def test_probe_records_are_not_counted_as_profiled_networks():
    done = {1: {"sid": 1, "kind": "net-fp32"}, -1: {"sid": -1, "kind": "retime"}, "speed-probe": probe_record(0.2, 1)}
    assert _networks(done) == 1
