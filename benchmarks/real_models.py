"""The real-model corpus (tests/real/corpus.py) pruned at ratio 0.3 with no shape flags:
parameters and MACs removed, verification, the shapes it ran at, seconds per model.

    pip install -e ".[real]" && python benchmarks/real_models.py [--ratio 0.3]

Results: benchmarks/results/real_models.json and a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "real"))

from corpus import CORPUS, available  # noqa: E402

from onnxprune.api import prune  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    args = ap.parse_args()
    rows = []
    for model in CORPUS:
        if not available(model):
            print(f"{model.name}: {model.package} not installed, skipped", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = model.locate(Path(tmp))
            start = time.perf_counter()
            try:
                r = prune(path, Path(tmp) / "o.onnx", ratio=args.ratio,
                          input_values=model.pins or None)
                v = r.verification
                row = {"model": model.name, "exporter": model.exporter, "task": model.task,
                       "params_before": r.params_before, "params_after": r.params_after,
                       "macs_before": r.macs_before, "macs_after": r.macs_after,
                       "verified": v.passed, "shapes": list(v.shapes),
                       "max_abs_diff": v.max_abs_diff, "pins": model.pins}
            except Exception as err:  # noqa: BLE001 - one row per model, whatever happens
                row = {"model": model.name, "exporter": model.exporter, "verified": False,
                       "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "real_models.json").write_text(json.dumps({"ratio": args.ratio, "rows": rows},
                                                         indent=2))
    print("\n| model | exporter | task | params removed | MACs removed | verified (shapes) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['exporter']} | - | - | - | fails: {r['error']} | - |")
            continue
        pr = 1 - r["params_after"] / r["params_before"]
        mr = 1 - r["macs_after"] / r["macs_before"] if r["macs_before"] else 0.0
        shapes = "; ".join(", ".join(f"{k} {'x'.join(map(str, d)) or '()'}"
                                     for k, d in s.items()) for s in r["shapes"])
        print(f"| {r['model']} | {r['exporter']} | {r['task']} | {pr:.1%} of "
              f"{r['params_before'] / 1e6:.2f}M | {mr:.1%} | {'yes' if r['verified'] else 'no'} "
              f"({shapes}) | {r['seconds']:.1f} |")
    return 0 if all(r.get("verified") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
