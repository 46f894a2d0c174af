"""Table files: sorted JSON, schema version, device/runtime checks, clear errors."""

from __future__ import annotations

import json

import pytest

from hwopt.errors import HwoptError
from hwopt.latency import SCHEMA_VERSION, extract_kernels, load_table
from hwopt.latency.analytical import Roofline
from hwopt.latency.table import LatencyTable


def _table(net) -> LatencyTable:
    t = LatencyTable(device="x86-avx512", runtime="onnxruntime", threads=1, method="measured",
                     provenance={"measured_on": "test"}, roofline=Roofline(threads=1), overhead_ms=0.01)
    for i, k in enumerate(extract_kernels(net, "onnxruntime")):
        t.add(k, 0.1 * (i + 1))
    return t


def test_round_trip_is_sorted_and_lossless(tmp_path, net):
    t = _table(net)
    path = t.save(tmp_path / "t.json")
    text = path.read_text()
    doc = json.loads(text)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert list(doc["entries"]) == sorted(doc["entries"])
    assert text == t.to_json()  # deterministic: saving twice gives identical bytes (diff-friendly)
    back = load_table(path, device="x86-avx512", runtime="onnxruntime")
    assert back.entries == pytest.approx(t.entries)
    assert back.kernels == t.kernels


def test_other_schema_version_is_rejected(tmp_path, net):
    path = _table(net).save(tmp_path / "t.json")
    doc = json.loads(path.read_text())
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(HwoptError, match="schema version 99"):
        load_table(path)


def test_table_for_another_device_or_runtime_is_rejected(tmp_path, net):
    path = _table(net).save(tmp_path / "t.json")
    with pytest.raises(HwoptError, match="is for device 'x86-avx512', not 'rpi4'"):
        load_table(path, device="rpi4")
    with pytest.raises(HwoptError, match="is for runtime 'onnxruntime', not 'openvino'"):
        load_table(path, runtime="openvino")


@pytest.mark.parametrize("content,match", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                            ('{"schema_version": 1}', "malformed")])
def test_broken_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HwoptError, match=match):
        load_table(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(HwoptError, match="not found"):
        load_table(tmp_path / "nope.json")
