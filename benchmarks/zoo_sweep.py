"""Every torchvision classification model, exported to ONNX and pruned at 50% of its channels,
next to Torch-Pruning on the same model in the same run.

torchvision needs its own environment (it does not import beside torch 2.13):

    python -m venv .venv-tv && .venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-tv/bin/pip install -e . torch-pruning onnxscript psutil
    .venv-tv/bin/python benchmarks/zoo_sweep.py [--workers 1] [--max-params 150e6] \
        [--timeout 300] [--resume rows.jsonl] [--executor process|ray [--address ADDR]]

Each model runs in its own process (a crash or a memory blow-up costs one row), `--workers N`
of them at a time, as local subprocesses or as Ray tasks (`--executor ray`, with `ray`
installed in that environment). Per model: onnxprune (uniform L2, verified against the mask
oracle) — valid, the fraction of channels frozen, parameter and MAC reduction, seconds;
Torch-Pruning (MagnitudePruner, the same ratio, the classifier ignored) — whether the pruned
model still runs, and its parameter and MAC reduction. Both tools' results are counted by
onnxprune's counter on the exported ONNX graphs (BN folded, statistics included), so the
columns compare like with like; Torch-Pruning's own counts are kept in the JSON (`tp_own_*`).
Results: benchmarks/results/zoo_sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
UNFINISHED = "did not finish"  # Torch-Pruning's state in the row printed before it starts
SIZES = {"inception_v3": 299}


def _classifier_layers(model):
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    last = linears[-1:] or convs[-1:]  # squeezenet ends in a 1x1 conv classifier
    return last


def _export(model, example, path: Path) -> float:
    import torch

    t0 = time.time()
    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    return time.time() - t0


def one(name: str, ratio: float, tp: bool = True) -> dict:
    import copy

    import numpy as np
    import torch
    import torchvision

    from onnxprune.api import analyze, prune

    torch.manual_seed(0)
    row: dict = {"model": name}
    model = torchvision.models.get_model(name, weights=None).eval()
    row["params"] = sum(p.numel() for p in model.parameters())
    size = SIZES.get(name, 224)
    example = torch.randn(1, 3, size, size)
    tmp = Path(tempfile.mkdtemp(prefix="zoo_"))
    path = tmp / f"{name}.onnx"
    row["export_s"] = _export(model, example, path)
    base = analyze(path)  # one counter (ours, on the normalized graph) for both tools
    try:
        t0 = time.time()
        r = prune(path, ratio=ratio)
        a = r.analysis
        frozen = int(np.sum([g.frozen_units if not g.frozen else g.channels
                             for g in a.groups]))
        total = int(np.sum([g.channels for g in a.groups])) or 1
        row.update(valid=bool(r.verification.passed), seconds=time.time() - t0,
                   groups=len(a.groups), frozen_fraction=frozen / total,
                   params_reduction=1 - r.params_after / base.params,
                   macs_reduction=1 - r.macs_after / max(base.macs, 1),
                   oracle_rel_diff=r.verification.max_rel_diff)
    except Exception as err:  # noqa: BLE001 - a row per model, whatever happens
        row.update(valid=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
    print(json.dumps({**row, "tp_ok": False, "tp_error": UNFINISHED}), flush=True)  # partial
    if not tp:
        return {**row, "tp_ok": False, "tp_error": "not run (--no-tp)"}
    try:
        import torch_pruning as tp

        m = copy.deepcopy(model)
        macs0, params0 = tp.utils.count_ops_and_params(m, example)
        pruner = tp.pruner.MagnitudePruner(m, example, tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, ignored_layers=_classifier_layers(m))
        pruner.step()
        with torch.no_grad():
            out = m(example)
        assert out.shape[-1] == 1000, out.shape
        macs1, params1 = tp.utils.count_ops_and_params(m, example)
        row.update(tp_ok=True, tp_own_params_reduction=1 - params1 / params0,
                   tp_own_macs_reduction=1 - macs1 / macs0)
        _export(m, example, tmp / "tp.onnx")  # counted like ours: BN stats, folding and all
        theirs = analyze(tmp / "tp.onnx")
        row.update(tp_params_reduction=1 - theirs.params / base.params,
                   tp_macs_reduction=1 - theirs.macs / max(base.macs, 1))
    except Exception as err:  # noqa: BLE001
        row.update(tp_ok=False, tp_error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return row


def run_one(name: str, ratio: float, timeout: float, tp: bool = True) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--ratio", str(ratio),
                               *([] if tp else ["--no-tp"])],
                              capture_output=True, text=True, timeout=timeout)
        stdout, stderr = done.stdout, done.stderr
        why = f"process ended with code {done.returncode}"
    except subprocess.TimeoutExpired as err:  # keep what finished (onnxprune's part)
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = why = f"timeout after {timeout:.0f} s"
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    tail = ((stderr or "").strip().splitlines()[-1:] or ["no output"])[0][:160]
    if not lines:
        return {"model": name, "valid": False, "error": f"crashed: {tail}"}
    row = json.loads(lines[-1])
    if row.get("tp_error") == UNFINISHED:  # Torch-Pruning's part never reported
        row["tp_error"] = f"{why}: {tail}" if why != tail else why
    return row


def _ratio(v: float | None) -> str:
    """A reduction as the factor it divides by: 0.75 fewer -> 4.00."""
    return f"{1 / (1 - v):.2f}" if v is not None and v < 1 else "-"


def at_least_tp(r: dict) -> bool | None:
    """Whether onnxprune removes at least as much as Torch-Pruning (None: not comparable).
    Both count parameters and MACs of the same network; 0.1% is rounding between counters."""
    if not (r.get("valid") and r.get("tp_ok")):
        return None
    return (r["params_reduction"] >= r["tp_params_reduction"] - 1e-3
            and r["macs_reduction"] >= r["tp_macs_reduction"] - 1e-3)


def markdown(rows: list[dict]) -> str:
    out = ["| model | params | onnxprune | frozen | params ÷ | MACs ÷ | Torch-Pruning | params ÷ "
           "| MACs ÷ | ≥ TP |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "valid" if r.get("valid") else f"fails: {r.get('error', '?')[:60]}"
        tp = "runs" if r.get("tp_ok") else f"fails: {r.get('tp_error', '?')[:60]}"
        frozen = f"{r['frozen_fraction']:.0%}" if "frozen_fraction" in r else "-"
        cmp = {True: "yes", False: "**no**", None: "-"}[at_least_tp(r)]
        out.append(f"| {r['model']} | {r.get('params', 0) / 1e6:.1f}M | {ours} | {frozen} | "
                   f"{_ratio(r.get('params_reduction'))} | {_ratio(r.get('macs_reduction'))} | "
                   f"{tp} | {_ratio(r.get('tp_params_reduction'))} | "
                   f"{_ratio(r.get('tp_macs_reduction'))} | {cmp} |")
    return "\n".join(out) + "\n"


def summary(rows: list[dict]) -> str:
    ok = sum(bool(r.get("valid")) for r in rows)
    tp_ok = sum(bool(r.get("tp_ok")) for r in rows)
    both = [r for r in rows if at_least_tp(r) is not None]
    ge = sum(bool(at_least_tp(r)) for r in both)
    return (f"onnxprune: {ok}/{len(rows)} valid and verified; Torch-Pruning: {tp_ok}/{len(rows)} "
            f"run; where both succeed, onnxprune removes at least as much on {ge}/{len(both)}")


def measured(names: list[str], args) -> Iterator[dict]:
    """Rows as models finish, each measured in its own subprocess."""
    if args.executor == "ray":
        import ray

        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.workers, log_to_driver=False)
        task = ray.remote(num_cpus=1)(run_one)
        pending = [task.remote(n, args.ratio, args.timeout, not args.no_tp) for n in names]
        while pending:
            done, pending = ray.wait(pending)
            yield ray.get(done[0])
        return
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, n, args.ratio, args.timeout, not args.no_tp)
                   for n in names]
        for future in as_completed(futures):
            yield future.result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--no-tp", action="store_true",
                    help="onnxprune only (e.g. to compare two versions of it)")
    ap.add_argument("--models", default="all", help="comma-separated names, or all")
    ap.add_argument("--max-params", type=float, default=150e6,
                    help="skip models with more parameters (default 150M)")
    ap.add_argument("--workers", type=int, default=1, help="models measured at a time")
    ap.add_argument("--executor", choices=("process", "ray"), default="process",
                    help="process: local subprocesses; ray: the same per-model subprocesses "
                         "as Ray tasks (one CPU each) on a local Ray or the cluster --address "
                         "names (every node needs this checkout and environment)")
    ap.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where zoo_sweep.{json,md} go")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--resume", type=Path, help="a JSON-lines file: rows in it are skipped, new rows are appended")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.ratio, not args.no_tp)))
        return 0
    import torch
    import torchvision

    names = (torchvision.models.list_models(module=torchvision.models) if args.models == "all"
             else args.models.split(","))
    keep = []
    for n in names:
        try:
            with torch.device("meta"):
                model = torchvision.models.get_model(n, weights=None)
        except NotImplementedError:  # initialisers that need real data
            model = torchvision.models.get_model(n, weights=None)
        params = sum(p.numel() for p in model.parameters())
        (keep if params <= args.max_params else []).append(n)
    skipped = sorted(set(names) - set(keep))
    print(f"{len(keep)} models, skipping {len(skipped)} above {args.max_params / 1e6:.0f}M "
          f"parameters: {', '.join(skipped)}", flush=True)
    rows = []
    if args.resume and args.resume.exists():
        rows = [json.loads(line) for line in args.resume.read_text().splitlines() if line.strip()]
        done = {r["model"] for r in rows}
        keep = [n for n in keep if n not in done]
    for row in measured(keep, args):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.resume:  # every finished row survives an interrupted sweep
            with args.resume.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo_sweep.json").write_text(json.dumps({"ratio": args.ratio, "skipped": skipped,
                                                        "rows": rows}, indent=2))
    rows.sort(key=lambda r: r["model"])
    (args.out / "zoo_sweep.md").write_text(markdown(rows) + "\n" + summary(rows) + "\n")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
