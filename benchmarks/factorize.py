"""A negative control for ``--factorize auto``: a token table without low-rank structure.

The zoo's text encoder (``onnxprune.zoo.builder.demo_text``: random weights, a 4000 x 64 table,
two layers, a mean over the tokens) pruned by the sensitivity search with compensation, the
table factorized or not; cosine to the original's output on 400 held-out sequences of other
token ids than the 96 calibration ones. all-MiniLM-L6-v2 (a trained table, whose spectrum
falls) is measured by ``benchmarks/task_quality.py --only minilm``.

    python benchmarks/factorize.py

Results: benchmarks/results/factorize.json.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from onnxprune.api import prune
from onnxprune.ir.runtime import session
from onnxprune.zoo.builder import demo_text

RESULTS = Path(__file__).parent / "results" / "factorize.json"


def _ids(n: int, seed: int, vocab: int = 4000, length: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, length))
    ids[:, rng.integers(8, length + 1):] = 0  # padding after a length drawn per batch
    return {"input_ids": ids}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text.onnx"
        onnx.save(demo_text(), path)
        calib, held = _ids(96, 1), _ids(400, 2)
        ref = session(onnx.load(path)).run(None, held)[0]
        for target in (0.3, 0.5):
            for mode in ("off", "auto"):
                out = Path(tmp) / f"{mode}.onnx"
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = prune(path, out, calib=calib, metric="cosine", strategy="sensitivity",
                              target_params=target, compensate=True, factorize=mode)
                got = session(onnx.load(out)).run(None, held)[0]
                rows.append({"target": target, "factorize": mode,
                             "removed": 1 - r.params_after / r.params_before,
                             "rank": [f["rank"] for f in r.factors or ()],
                             "heldout_cosine": _cosine(ref, got),
                             "seconds": time.perf_counter() - start})
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in rows[-1].items()}), flush=True)
    RESULTS.write_text(json.dumps({"model": "zoo demo_text (random weights)", "rows": rows},
                                  indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
