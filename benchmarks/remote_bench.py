"""A bench over SSH equals a local bench of the same models (issue 31): ResNet-50 and
MobileNetV2 with their 50% cuts, measured here and on this machine through a loopback OpenSSH
server (the test suite's, ``tests/bench/sshd.py``: installed with apt-get if missing),
local and remote runs alternating, ``--rounds`` times each; medians of the p50 per model and
the remote/local ratio, and the speedup of each cut as measured each way.

    python benchmarks/remote_bench.py [--models resnet50,mobilenetv2] [--rounds 3]

Results: benchmarks/results/remote_bench.json. Needs the dev extra and root (for sshd).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from onnxprune.api import prune
from onnxprune.bench.runner import run_bench
from onnxprune.zoo.catalog import export_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "bench"))
RESULTS = ROOT / "benchmarks" / "results" / "remote_bench.json"


def main() -> int:
    import sshd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        server = sshd.start(work / "sshd")
        os.environ.update(ONNXPRUNE_SSH_CONFIG=str(server.config),
                          ONNXPRUNE_REMOTE_PYTHON=sys.executable)
        try:
            for name in args.models.split(","):
                original = work / f"{name}.onnx"
                export_model(name, original)
                cut = prune(original, work / f"{name}.cut.onnx", ratio=0.5).output
                p50 = {"local": [[], []], "remote": [[], []]}
                for _ in range(args.rounds):
                    for where, host in (("local", None), ("remote", server.spec)):
                        r = run_bench([original, cut], seconds=args.seconds, host=host)
                        for i, row in enumerate(r.rows):
                            p50[where][i].append(row.p50)
                med = {w: [statistics.median(v) for v in p50[w]] for w in p50}
                rows[name] = {
                    "local_ms": med["local"], "remote_ms": med["remote"],
                    "remote_over_local": [r / lo for r, lo in zip(med["remote"], med["local"],
                                                                   strict=True)],
                    "speedup_local": med["local"][0] / med["local"][1],
                    "speedup_remote": med["remote"][0] / med["remote"][1], "p50": p50}
                row = rows[name]
                print(f"{name}: original {med['local'][0]:.2f} ms here, {med['remote'][0]:.2f} "
                      f"there ({row['remote_over_local'][0]:.3f}x); cut "
                      f"{med['local'][1]:.2f} / {med['remote'][1]:.2f} "
                      f"({row['remote_over_local'][1]:.3f}x); speedup "
                      f"{row['speedup_local']:.2f}x here, {row['speedup_remote']:.2f}x there",
                      flush=True)
        finally:
            server.stop()
    RESULTS.write_text(json.dumps({"machine": f"{os.cpu_count()} CPUs", "rounds": args.rounds,
                                   "seconds": args.seconds, "rows": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
