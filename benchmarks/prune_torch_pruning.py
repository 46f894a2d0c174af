"""hwopt prune (L1, OBSPA) vs Torch-Pruning (DepGraph + L1) at the same MACs target.

    python benchmarks/prune_torch_pruning.py [--quick]

1. Example models (examples/*.onnx, trained on digits): accuracy on examples/eval.npz at 50% MACs,
   without fine-tuning and after a short KD fine-tune on examples/calib.npz (the same KD routine,
   `hwopt.graph.finetune.kd_finetune`, for every method). Torch-Pruning works on a torch module,
   so the ONNX weights are loaded into the example architecture (BatchNorm folded into the convs,
   as in the ONNX file; checked to give the same logits).
2. ResNet-18 and MobileNetV2 architectures (zoo, random weights): params/MACs and measured
   onnxruntime latency speedup (1 thread, interleaved repeats) at the same MACs target, with
   unrounded channel counts and rounded to 16 (this machine's profile, and Torch-Pruning's round_to).
3. Which zoo graphs each tool can prune at 30%.

Writes benchmarks/results/prune_torch_pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from hwopt.data import load_dataset
from hwopt.graph.census import census
from hwopt.graph.load import atomic_write_text
from hwopt.graph.normalize import normalize_model
from hwopt.models.zoo import ZOO, build
from hwopt.pruning import prune_model
from hwopt.graph.finetune import kd_finetune
from hwopt.pruning.prune import measure_latency_ms

ROOT = Path(__file__).resolve().parents[1]
MACS_TARGET = 0.5  # keep 50% of the MACs
TARGET = "x86-avx512"  # this machine's profile: kept channels rounded to its channel_multiple (16)
ROUND_TO = 16  # the same rounding for Torch-Pruning (its round_to), so latencies compare fairly


def to_onnx(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(module).eval(), (torch.randn(*shape),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_model_from_string(buf.getvalue())


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 64]})[0] for i in range(0, len(x), 64)])


def accuracy(model: onnx.ModelProto, ds) -> float:
    return float((ort_run(model, ds.inputs["input"]).argmax(1) == ds.labels).mean() * 100)


def bisect(fn, base_macs: int, steps: int) -> tuple[float, object, int]:
    """Smallest ratio whose model keeps <= MACS_TARGET of the MACs; fn(ratio) -> (model, macs)."""
    lo, hi = 0.0, 0.95
    best = fn(hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = fn(mid)
        if cand[1] <= MACS_TARGET * base_macs:
            hi, best = mid, cand
        else:
            lo = mid
    return hi, best[0], best[1]


# ---------------------------------------------------------------- Torch-Pruning side


def tp_prune(module: nn.Module, shape, ratio: float, round_to: int | None = None) -> tuple[nn.Module, int]:
    import torch_pruning as tp

    m = copy.deepcopy(module).eval()
    x = torch.randn(*shape)
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                       ignored_layers=[last], round_to=round_to)
    pruner.step()
    macs, _ = tp.utils.count_ops_and_params(m, x)
    return m, int(macs)


def load_folded_weights(module: nn.Module, model: onnx.ModelProto) -> nn.Module:
    """Put an exported (BN-folded) ONNX model's weights into its torch architecture, BN set to identity."""
    m = copy.deepcopy(module).eval()
    order: list[nn.Module] = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: order.append(mod)) for mod in m.modules()
             if isinstance(mod, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        m(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == len(order), "layer count mismatch between ONNX and torch"
    with torch.no_grad():
        for node, mod in zip(layers, order):
            mod.weight.copy_(torch.from_numpy(inits[node.input[1]].copy()))
            bias = torch.from_numpy(inits[node.input[2]]) if len(node.input) > 2 else torch.zeros(mod.weight.shape[0])
            mod.bias = nn.Parameter(bias.clone())
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0 - mod.eps)
    return m


# ---------------------------------------------------------------- sections


def example_models(quick: bool, folder: Path) -> list[dict]:
    spec = importlib.util.spec_from_file_location("train_examples", ROOT / "examples" / "train_examples.py")
    te = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(te)
    rows = []
    steps = 5 if quick else 7
    epochs = 5 if quick else 10
    for name, builder in te.MODELS.items():
        path = folder / f"{name}.onnx"
        if not path.exists():
            print(f"skip {name}: {path} missing (run examples/train_examples.py)")
            continue
        model = onnx.load(path)
        calib = load_dataset(folder / "calib.npz", model)
        ev = load_dataset(folder / "eval.npz", model)
        base_macs = census(model).macs
        torch_model = load_folded_weights(builder(), model)
        ref = to_onnx(torch_model, (1, 3, 32, 32))
        assert np.allclose(ort_run(ref, ev.inputs["input"][:16]), ort_run(model, ev.inputs["input"][:16]), atol=1e-3)
        row = {"model": name, "original_accuracy": accuracy(model, ev), "macs": base_macs, "methods": {}}
        teacher = normalize_model(model)
        methods = {
            "hwopt_l1": lambda r: _ours(model, r, "l1", None),
            "hwopt_obspa": lambda r: _ours(model, r, "obs", calib),
            "torch_pruning_l1": lambda r: _theirs(torch_model, r),
        }
        for method, fn in methods.items():
            t0 = time.perf_counter()
            ratio, pruned, macs = bisect(fn, base_macs, steps)
            seconds = time.perf_counter() - t0
            tuned = kd_finetune(normalize_model(pruned), teacher, calib, epochs=epochs, quiet=True)
            row["methods"][method] = {
                "ratio": ratio, "macs_kept": macs / base_macs, "params": census(pruned).params,
                "accuracy": accuracy(pruned, ev), "accuracy_kd": accuracy(tuned, ev), "prune_seconds": seconds,
            }
        rows.append(row)
    return rows


def _ours(model, ratio, criterion, calib, target=None):
    res = prune_model(model, ratio, criterion=criterion, calib=calib, target=target, multiple=None if target else 1)
    return res.model, res.summary["macs_after"]


def _theirs(torch_model, ratio):
    m, _ = tp_prune(torch_model, (1, 3, 32, 32), ratio)
    proto = to_onnx(m, (1, 3, 32, 32))
    return proto, census(proto).macs


def architectures(quick: bool) -> list[dict]:
    rows = []
    for name in ("resnet18", "mobilenet_v2"):
        module, shape = build(name)
        model = to_onnx(module, shape)
        base = census(model).macs
        rng = np.random.default_rng(0)
        calib = {"input": rng.standard_normal((32, *shape[1:])).astype(np.float32)}
        from hwopt.data import Dataset

        ds = Dataset(calib)
        def theirs(r, round_to=None):
            proto = to_onnx(tp_prune(module, shape, r, round_to)[0], shape)
            return proto, census(proto).macs

        cands = {
            "hwopt_l1": bisect(lambda r: _ours(model, r, "l1", None), base, 5)[1],
            "hwopt_obspa": bisect(lambda r: _ours(model, r, "obs", ds), base, 5)[1],
            "torch_pruning_l1": bisect(theirs, base, 5)[1],
            f"hwopt_l1_{TARGET}": bisect(lambda r: _ours(model, r, "l1", None, TARGET), base, 5)[1],
            f"hwopt_obspa_{TARGET}": bisect(lambda r: _ours(model, r, "obs", ds, TARGET), base, 5)[1],
            f"torch_pruning_l1_round{ROUND_TO}": bisect(lambda r: theirs(r, ROUND_TO), base, 5)[1],
        }
        repeats = 3 if quick else 5
        lat = {k: [] for k in ["original", *cands]}
        for _ in range(repeats):  # interleaved: every model measured in each round
            lat["original"].append(measure_latency_ms(model, runs=30))
            for k, m in cands.items():
                lat[k].append(measure_latency_ms(m, runs=30))
        base_ms = float(np.median(lat["original"]))
        row = {"model": name, "macs": base, "params": census(model).params, "latency_ms": base_ms, "methods": {}}
        for k, m in cands.items():
            c = census(m)
            ms = float(np.median(lat[k]))
            row["methods"][k] = {"macs_kept": c.macs / base, "params": c.params, "latency_ms": ms, "speedup": base_ms / ms}
        rows.append(row)
    return rows


def coverage() -> list[dict]:
    rows = []
    for name in sorted(ZOO):
        module, shape = build(name)
        model = to_onnx(module, shape)
        entry = {"model": name}
        try:
            res = prune_model(model, 0.3)
            entry["hwopt"] = f"ok: {res.summary['groups_pruned']} groups, MACs x{res.summary['macs_after'] / res.summary['macs_before']:.2f}"
        except Exception as exc:  # report, do not stop the benchmark
            entry["hwopt"] = f"failed: {str(exc).splitlines()[0][:120]}"
        try:
            m, macs = tp_prune(module, shape, 0.3)
            with torch.no_grad():
                m(torch.randn(*shape))
            full, _ = _tp_macs(module, shape)
            entry["torch_pruning"] = f"ok: MACs x{macs / full:.2f}"
        except Exception as exc:
            entry["torch_pruning"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        rows.append(entry)
    return rows


def _tp_macs(module, shape):
    import torch_pruning as tp

    return tp.utils.count_ops_and_params(module, torch.randn(*shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer bisection steps, epochs and latency repeats")
    parser.add_argument("--examples", type=Path, default=ROOT / "examples", help="folder with the example models and data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    result = {"macs_target": MACS_TARGET, "quick": args.quick, "torch": torch.__version__.split("+")[0],
              "onnxruntime": ort.__version__}
    result["examples"] = example_models(args.quick, args.examples)
    print("\n== example models: accuracy (%) at <= 50% MACs, eval.npz ==")
    print(f"{'model':18} {'method':18} {'MACs kept':>9} {'params':>8} {'no FT':>7} {'KD FT':>7}  (original)")
    for row in result["examples"]:
        for k, v in row["methods"].items():
            print(f"{row['model']:18} {k:18} {v['macs_kept']:9.3f} {v['params']:8d} {v['accuracy']:7.2f} {v['accuracy_kd']:7.2f}  ({row['original_accuracy']:.2f})")
    result["architectures"] = architectures(args.quick)
    print("\n== architectures (random weights): onnxruntime 1 thread, same MACs target ==")
    print(f"{'model':14} {'method':30} {'MACs kept':>9} {'params':>8} {'ms':>7} {'speedup':>7}")
    for row in result["architectures"]:
        print(f"{row['model']:14} {'original':30} {1:9.3f} {row['params']:8d} {row['latency_ms']:7.3f} {1:7.2f}")
        for k, v in row["methods"].items():
            print(f"{row['model']:14} {k:30} {v['macs_kept']:9.3f} {v['params']:8d} {v['latency_ms']:7.3f} {v['speedup']:7.2f}")
    result["coverage"] = coverage()
    print("\n== zoo coverage at 30% ==")
    for row in result["coverage"]:
        print(f"{row['model']:20} hwopt: {row['hwopt']:45} torch-pruning: {row['torch_pruning']}")
    out = ROOT / "benchmarks" / "results" / "prune_torch_pruning.json"
    atomic_write_text(json.dumps(result, indent=2), out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
