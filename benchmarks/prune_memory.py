"""Peak memory of a prune against the model's size: a generated MLP, inline and external data.

    python benchmarks/prune_memory.py [--width 4096] [--layers 5]

The MLP (``layers`` Gemm+Relu of ``width`` x ``width``, a 10-way head; 336 MB of float weights
at the defaults) is saved twice, with its weights inside the .onnx file and as external data.
Each is pruned by half (``onnxprune.prune(src, out, ratio=0.5)``, verification included) in a
fresh process, which reports its own high-water mark (VmHWM) and what it held before the first
pass. Prints peak / model size and (peak - start) / model size; writes
benchmarks/results/prune_memory.json. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.ir import io
from onnxprune.zoo.builder import GraphBuilder

RESULTS = Path(__file__).parent / "results"
CHILD = """import json, sys, onnxprune
r = onnxprune.prune(sys.argv[1], sys.argv[2], ratio=0.5)
hwm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(json.dumps({'peak': max(hwm, r.memory['peak_rss']), 'start': r.memory['start_rss'],
                  'ok': r.verification.passed, 'per_pass': r.memory['per_pass']}))"""


def _model(width: int, layers: int):
    b = GraphBuilder(seed=0)
    h = b.input("x", ["batch", width])
    for i in range(layers):
        h = b.relu(b.gemm(h, width, width, name=f"fc{i}"))
    return b.build([b.gemm(h, width, 10, name="head")], "mlp")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=5)
    args = ap.parse_args()
    console = Console(width=110)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(args.width, args.layers)
        for kind, external in (("inline", False), ("external data", True)):
            folder = Path(tmp) / kind.replace(" ", "_")
            folder.mkdir()
            src = io.save_model(model, folder / "big.onnx", external_data=external)
            size = sum(p.stat().st_size for p in folder.iterdir())
            done = subprocess.run([sys.executable, "-c", CHILD, str(src), str(folder / "o.onnx")],
                                  capture_output=True, text=True, check=True)
            stats = json.loads(done.stdout.strip().splitlines()[-1])
            rows[kind] = {"model_bytes": size, **stats, "peak_over_model": stats["peak"] / size,
                          "added_over_model": (stats["peak"] - stats["start"]) / size}
            (folder / "o.onnx").unlink()
    table = Table(title=f"prune by half, a {args.layers}-layer MLP of width {args.width}")
    for col in ("weights", "model MB", "start MB", "peak MB", "peak / model", "added / model",
                "verified"):
        table.add_column(col, justify="right")
    for kind, r in rows.items():
        table.add_row(kind, f"{r['model_bytes'] / 1e6:,.0f}", f"{r['start'] / 1e6:,.0f}",
                      f"{r['peak'] / 1e6:,.0f}", f"{r['peak_over_model']:.2f}",
                      f"{r['added_over_model']:.2f}", str(r["ok"]))
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "prune_memory.json"
    out.write_text(json.dumps({"machine": {"cpu": platform.machine(),
                                           "python": platform.python_version()},
                               "width": args.width, "layers": args.layers, "runs": rows},
                              indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
