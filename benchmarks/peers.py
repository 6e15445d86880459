"""onnxprune beside its peers on the same models, in one run: onnxsim 0.8.1's pruning and
Torch-Pruning.

    python benchmarks/peers.py [--ratio 0.5] [--only cnn,transformers,autoencoder]

Tools, each at RATIO: onnxprune (``prune``, uniform L2, verified by the mask oracle); onnxsim
(``apply_structured_pruning``, ``apply_structured_wanda_pruning`` with its own 8 random samples;
on transformers also ``apply_attention_head_pruning`` and ``apply_transformer_block_pruning``
at its default 25%, beside onnxprune's ``remove_blocks`` of 25% of the removable blocks);
Torch-Pruning (MagnitudePruner, L2, the output layer kept) on the torch module the zoo builds,
exported after. Models: the zoo's torch CNNs, the transformer table's architectures (random
small configs, with their LM head) and the trained digits autoencoder.

Every run is a child process: seconds of the tool's call, peak resident memory read from
outside (``os.wait4``: the child's whole process, Python and libraries included). Each written
model is checked here: valid (``onnx.checker``, full), runs (onnxruntime at two input shapes
the original runs at), same interface (input and output names, ranks and static sizes),
parameters removed. The autoencoder: each tool's cut measured on the 450 test digits (PSNR),
onnxprune at the same parameters removed (uniform, and the recipe: sensitivity + compensate +
distill on 256 training images, 1500 steps), Torch-Pruning with its own recovery (fine-tuning
on the same 256 images, 1500 steps). Results: benchmarks/results/peers.json and peers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

RESULTS = Path(__file__).parent / "results"
CNNS = ("lenet", "vgg", "resnet_basic", "resnet_bottleneck", "mobilenetv2_small",
        "densenet_small", "unet", "resnet50", "resnet50:dynamo")  # :dynamo: torch's dynamo exporter
ARCHS = ("bert", "gpt2", "llama")
ONNXSIM = {"onnxsim structured": "apply_structured_pruning",
           "onnxsim wanda": "apply_structured_wanda_pruning",
           "onnxsim heads": "apply_attention_head_pruning",
           "onnxsim blocks": "apply_transformer_block_pruning"}


# -- the child: one tool on one model ---------------------------------------------------------
def job(spec: dict) -> dict:
    warnings.simplefilter("ignore")
    tool, src, out, ratio = spec["tool"], spec["src"], spec["out"], spec["ratio"]
    if tool.startswith("onnxprune"):
        from onnxprune.api import prune

        t = time.perf_counter()
        r = prune(src, out, **spec.get("options", {"ratio": ratio}))
        return {"seconds": time.perf_counter() - t, "verified": r.verification.passed}
    if tool.startswith("onnxsim"):
        import onnxsim.pruning as osp

        kw = {} if tool == "onnxsim blocks" else {"sparsity": ratio}
        t = time.perf_counter()
        model = getattr(osp, ONNXSIM[tool])(src, **kw)
        seconds = time.perf_counter() - t
        onnx.save(model, out)
        return {"seconds": seconds}
    if tool == "torch-pruning":
        import torch
        import torch_pruning as tp

        from onnxprune.zoo.torch_zoo import ZOO, build, export_onnx

        module = build(spec["model"]).eval()
        example = torch.randn(1, *ZOO[spec["model"]][1])
        layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear,
                                                                 torch.nn.Conv2d))]
        ignored = layers[-1:]  # the output layer keeps the model's interface
        t = time.perf_counter()
        pruner = tp.pruner.MagnitudePruner(module, example,
                                           importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, ignored_layers=ignored)
        pruner.step()
        seconds = time.perf_counter() - t
        export_onnx(module, out, ZOO[spec["model"]][1])
        return {"seconds": seconds}
    if tool == "torch-pruning autoencoder":
        return _tp_autoencoder(spec)
    raise ValueError(tool)


def _tp_autoencoder(spec: dict) -> dict:
    """Torch-Pruning on the trained autoencoder (the output layer kept), then its recovery:
    fine-tuning on the calibration images (Adam, MSE, ``steps`` mini-batches of 32)."""
    import torch
    import torch.nn.functional as F
    import torch_pruning as tp

    from onnxprune.zoo.torch_models import AutoEncoder
    from onnxprune.zoo.train import export

    torch.manual_seed(0)
    module = AutoEncoder()
    module.load_state_dict(torch.load(spec["state"]))
    module.eval()
    # the output layer kept, and the Linear before nn.Unflatten: Torch-Pruning does not resize
    # an Unflatten (pruning that Linear broke the forward pass: 'sizes [32, 7, 7] don't
    # multiply up to 147')
    kept = [module.decoder[-2], module.decoder[0]]
    t = time.perf_counter()
    tp.pruner.MagnitudePruner(module, torch.randn(1, 1, 28, 28),
                              importance=tp.importance.MagnitudeImportance(p=2),
                              pruning_ratio=spec["ratio"], ignored_layers=kept).step()
    seconds = time.perf_counter() - t
    export(module, spec["out"], (1, 28, 28))
    x = torch.from_numpy(np.load(spec["calib"])["input"])
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    module.train()
    t = time.perf_counter()
    for _ in range(spec["steps"]):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        opt.zero_grad()
        F.mse_loss(module(x[idx]), x[idx]).backward()
        opt.step()
    module.eval()
    export(module, spec["out"].replace(".onnx", ".tuned.onnx"), (1, 28, 28))
    return {"seconds": seconds, "finetune_seconds": time.perf_counter() - t}


def run_job(spec: dict, timeout: float) -> dict:
    """``job(spec)`` in a child process: its result, and its peak resident memory read from
    outside (the child's VmHWM in /proc, read after it finished its work and before it exits:
    a process's own high-water mark since its exec, unlike rusage's, which keeps the forked
    parent's)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    proc = subprocess.Popen([sys.executable, __file__, "--job", json.dumps(spec), str(result)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        proc.wait()
        return {"error": f"no result in {timeout:.0f} s"}
    proc.stdout.readline()  # the child's work is done; it waits for us to close its stdin
    peak = _hwm_mb(proc.pid)
    proc.stdin.close()
    proc.wait()
    out = json.loads(result.read_text()) if result.stat().st_size else {}
    result.unlink()
    if proc.returncode and "error" not in out:
        out["error"] = (proc.stderr.read().decode(errors="replace").strip().splitlines()
                        or [f"exit {proc.returncode}"])[-1][:160]
    out["peak_mb"] = peak
    return out


def _hwm_mb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    return None if line is None else round(int(line.split()[1]) / 1024)


def child_main(spec_json: str, result: str) -> None:
    try:
        out = job(json.loads(spec_json))
    except Exception as err:  # noqa: BLE001 - what the tool does is the figure
        text = str(err).splitlines()[0][:160] if str(err) else ""
        out = {"error": f"{type(err).__name__}: {text}"}
    Path(result).write_text(json.dumps(out))
    print("done", flush=True)
    sys.stdin.read()  # the parent reads this process's peak memory, then lets it exit


# -- checks of a written model -----------------------------------------------------------------
def params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer
               if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))


def interface(model: onnx.ModelProto) -> list:
    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else "?" for d in
                vi.type.tensor_type.shape.dim]
    inits = {i.name for i in model.graph.initializer}
    return [[(v.name, dims(v)) for v in model.graph.input if v.name not in inits],
            [(v.name, dims(v)) for v in model.graph.output]]


def check(original: onnx.ModelProto, path: Path, feeds: list[dict]) -> dict:
    import onnxruntime as ort

    if not path.exists():
        return {"valid": False, "runs": False}
    model = onnx.load(str(path))
    out = {"params_removed": 1 - params(model) / params(original),
           "same_interface": interface(model) == interface(original)}
    try:
        onnx.checker.check_model(model, full_check=True)
        out["valid"] = True
    except Exception as err:  # noqa: BLE001
        out["valid"], out["invalid"] = False, str(err).splitlines()[0][:120]
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        outs = [sess.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]
        out["runs"] = all(np.all(np.isfinite(o)) for r in outs for o in r if o.dtype.kind == "f")
    except Exception as err:  # noqa: BLE001
        out["runs"], out["fails"] = False, str(err).splitlines()[0][:120]
    return out


def feeds_of(path: Path) -> list[dict]:
    from onnxprune.ir.runtime import session
    from onnxprune.ir.shapes import choose_shapes, feeds_at, input_specs

    model = onnx.load(str(path))
    sess = session(model)
    sets = choose_shapes(model, runs=lambda f: bool(sess.run(None, f)) or True)
    return [feeds_at(input_specs(model), s, {}, seed=i) for i, s in enumerate(sets)]


def compare(name: str, src: Path, tools: list[tuple[str, dict]], ratio: float, work: Path,
            timeout: float) -> dict:
    original, feeds = onnx.load(str(src)), feeds_of(src)
    row = {}
    for tool, extra in tools:
        out = work / f"{name}.{tool.replace(' ', '_')}.onnx"
        res = run_job({"tool": tool, "src": str(src), "out": str(out), "ratio": ratio,
                       "model": name, **extra}, timeout)
        if "error" not in res:
            res.update(check(original, out, feeds))
        row[tool] = res
        print(f"[{name}] {tool}: {json.dumps(res)}", flush=True)
    return row


# -- the suites --------------------------------------------------------------------------------
def cnns(ratio: float, work: Path, timeout: float) -> dict:
    from onnxprune.zoo.torch_zoo import export_zoo_model

    rows = {}
    for entry in CNNS:
        name, _, exporter = entry.partition(":")
        src = work / f"{name}.{exporter or 'torchscript'}.onnx"
        export_zoo_model(name, src, dynamo=exporter == "dynamo")
        rows[entry] = compare(name, src, [("onnxprune", {}), ("onnxsim structured", {}),
                                          ("onnxsim wanda", {}), ("torch-pruning", {})],
                              ratio, work, timeout)
    return rows


def transformers(ratio: float, work: Path, timeout: float) -> dict:
    from onnxprune.api import analyze
    from onnxprune.zoo import transformers_zoo as tz

    rows = {}
    for arch in ARCHS:
        src = work / f"{arch}.onnx"
        tz.export(arch, src, head=True)
        blocks = max(1, round(0.25 * sum(b.removable for b in analyze(str(src)).blocks)))
        rows[arch] = compare(arch, src, [
            ("onnxprune", {}), ("onnxsim structured", {}), ("onnxsim heads", {}),
            ("onnxprune blocks", {"options": {"remove_blocks": blocks}}),
            ("onnxsim blocks", {})], ratio, work, timeout)
    return rows


def autoencoder(ratio: float, work: Path, timeout: float) -> dict:
    """Each peer's cut on the trained autoencoder; onnxprune at the same parameters removed."""
    import onnxruntime as ort

    from onnxprune.zoo.digits import digits28
    from onnxprune.zoo.train import export, psnr, train_autoencoder

    x_train, _ = digits28("train")
    x_test, _ = digits28("test")
    np.savez(work / "calib.npz", input=x_train[:256])
    import torch

    trained = train_autoencoder(epochs=10).model
    torch.save(trained.state_dict(), work / "ae.pt")
    src = Path(export(trained, work / "autoencoder.onnx", (1, 28, 28)))

    def test(p: Path) -> float:
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return psnr(s.run(None, {"input": x_test})[0], x_test)

    row = {"unpruned": test(src)}
    for tool in ("onnxsim structured", "onnxsim wanda", "torch-pruning autoencoder"):
        out = work / f"ae.{tool.replace(' ', '_')}.onnx"
        res = run_job({"tool": tool, "src": str(src), "out": str(out), "ratio": ratio,
                       "state": str(work / "ae.pt"), "calib": str(work / "calib.npz"),
                       "steps": 1500}, timeout)
        if "error" in res:
            row[tool] = res
            continue
        removed = 1 - params(onnx.load(str(out))) / params(onnx.load(str(src)))
        row[tool] = {"params_removed": removed, "test_psnr": test(out), **res}
        tuned = Path(str(out).replace(".onnx", ".tuned.onnx"))
        if tuned.exists():  # Torch-Pruning's recovery: fine-tuning
            row[f"{tool} + fine-tuning"] = {"params_removed": removed, "test_psnr": test(tuned)}
        for mine, options in (("onnxprune uniform", {"strategy": "uniform"}),
                              ("onnxprune recipe", {"strategy": "sensitivity", "compensate": True,
                                                    "recover": "distill",
                                                    "distill_steps": 1500})):
            mine_out = work / "ae.mine.onnx"
            got = run_job({"tool": "onnxprune", "src": str(src), "out": str(mine_out),
                           "ratio": ratio, "options": {
                               "target_params": round(removed, 4), "metric": "psnr",
                               "calib": str(work / "calib.npz"), **options}}, timeout)
            if "error" not in got:
                got["test_psnr"] = test(mine_out)
                got["params_removed"] = 1 - params(onnx.load(str(mine_out))) / params(
                    onnx.load(str(src)))
            row[f"{mine} at {tool}'s cut"] = got
        print(f"[autoencoder] {tool}: {json.dumps(row[tool])}", flush=True)
    return row


def markdown(results: dict) -> list[str]:
    lines = []
    for suite in ("cnn", "transformers"):
        rows = results.get(suite) or {}
        if not rows:
            continue
        tools = list(next(iter(rows.values())))
        lines += [f"\n### {suite}, {results['ratio']:.0%} of every group\n",
                  "| model | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
        for name, row in rows.items():
            cells = []
            for t in tools:
                r = row[t]
                if "error" in r:
                    cells.append(f"error: {r['error'][:60]}")
                    continue
                ok = "valid" if r.get("valid") else f"INVALID: {r.get('invalid', '')[:70]}"
                ok += ", runs" if r.get("runs") else ", does not run"
                ok += "" if r.get("same_interface") else ", interface changed"
                cells.append(f"{r.get('params_removed', 0):.0%} removed ({ok}); "
                             f"{r['seconds']:.2f} s, {r['peak_mb']} MB")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ae = results.get("autoencoder")
    if ae:
        lines += ["\n### digits autoencoder (test PSNR, unpruned "
                  f"{ae['unpruned']:.2f} dB)\n", "| cut | params removed | test PSNR |",
                  "|---|---|---|"]
        for k, v in ae.items():
            if isinstance(v, dict) and "test_psnr" in v:
                lines.append(f"| {k} | {v['params_removed']:.1%} | {v['test_psnr']:.2f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--only", default="cnn,transformers,autoencoder")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per tool run")
    args = ap.parse_args()
    import onnxsim
    import torch_pruning as tp

    results = {"ratio": args.ratio, "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs",
               "versions": {"onnxsim": onnxsim.__version__, "torch_pruning": tp.__version__}}
    suites = {"cnn": cnns, "transformers": transformers, "autoencoder": autoencoder}
    old = RESULTS / "peers.json"
    if old.exists() and json.loads(old.read_text()).get("ratio") == args.ratio:
        results = {**json.loads(old.read_text()), **results}  # the suites not run stay
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            results[name] = suites[name](args.ratio, Path(tmp), args.timeout)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "peers.md").write_text("\n".join(markdown(results)) + "\n")
    print("\n".join(markdown(results)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        child_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
