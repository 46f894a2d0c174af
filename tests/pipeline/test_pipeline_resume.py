"""Kill compress mid-run, run it again: it resumes from the cache and gives the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from hwopt.devices import load_device
from hwopt.pipeline import load_recipe, plan_recipe


def _small_recipe(path):
    """The planned x86 recipe cut to three candidates (keeps the test quick); also exercises --recipe."""
    plan = plan_recipe(load_device("x86-avx512"))
    keep = {"onnxruntime-fp32", "openvino-fp32", "openvino-int8-minmax"}
    plan.candidates = [c for c in plan.candidates if c.name in keep]
    plan.save(path)
    assert [c.name for c in load_recipe(path).candidates] == [c.name for c in plan.candidates]
    return path


def _cmd(model, calib, ev, recipe, out):
    return ["hwopt", "compress", str(model), "--target", "x86-avx512", "--calib", str(calib), "--eval", str(ev),
            "--recipe", str(recipe), "-o", str(out), "--json", "--quiet"]


def test_kill_after_first_stage_then_resume(small_model, tmp_path):
    model, calib, ev = small_model
    recipe = _small_recipe(tmp_path / "recipe.yaml")
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cmd(model, calib, ev, recipe, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    try:
        while not list((out / ".cache").glob("load-*/result.json")):
            assert proc.poll() is None, "compress finished before it could be killed"
            assert time.time() < deadline, "first stage never finished"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "report.json").exists()
    first = subprocess.run(_cmd(model, calib, ev, recipe, out), capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    rep = json.loads(first.stdout)
    assert rep["stages"][0] == {"stage": "load", "what": rep["stages"][0]["what"], "cached": True}  # resumed
    # a killed stage leaves at most a hidden staging folder; every visible entry is complete
    assert all((e / "result.json").is_file() for e in (out / ".cache").iterdir() if not e.name.startswith("."))
    again = subprocess.run(_cmd(model, calib, ev, recipe, out), capture_output=True, text=True, env=env, timeout=600)
    rep2 = json.loads(again.stdout)
    assert rep2["result"] == rep["result"] and rep2["speedup"] == rep["speedup"]
    assert rep2["candidates"] == rep["candidates"] or all(c["cached_stages"] >= 2 for c in rep2["candidates"])
    assert {c["name"] for c in rep2["candidates"]} == {"onnxruntime-fp32", "openvino-fp32", "openvino-int8-minmax"}
