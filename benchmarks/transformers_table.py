"""What width pruning reaches on Hugging Face transformers, beside Torch-Pruning.

    python benchmarks/transformers_table.py [--ratio 0.5] [--tp-timeout 120]

Each architecture of ``onnxprune.zoo.transformers_zoo`` (random small configs; dynamic batch and
sequence; a partly zero attention mask) is exported twice: the base model (hidden states out:
its width is the interface) and with its LM head (logits out: the hidden width may go). onnxprune
prunes ``ratio`` of every group (uniform L2) and verifies against the mask oracle at two
sequence lengths; Torch-Pruning (MetaPruner, L2, the same ratio, heads given as HF's configs
name them) prunes the torch module, in a subprocess with a time limit. Columns: heads (or
key/value groups), FFN and hidden widths before -> after, parameters removed. Writes
benchmarks/results/transformers.json and .md. Needs the `transformers` and `bench` extras.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo import transformers_zoo as tz

RESULTS = Path(__file__).parent / "results"


def _kind(group, arch: str) -> str | None:
    layers = " ".join(group.layers)
    if group.channels == tz.FFN:
        return "ffn"
    if group.channels == (2 if arch in ("llama", "qwen2") else tz.HEADS) and (
            "attn" in layers or "attention" in layers):
        return "heads"
    if "Gather" in layers:
        return "hidden"
    return None


def ours(arch: str, head: bool, ratio: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = tz.export(arch, Path(tmp) / "m.onnx", head=head)
        t = time.perf_counter()
        r = prune(path, ratio=ratio)
        seconds = time.perf_counter() - t
    widths: dict[str, list[int]] = {}
    for g in r.analysis.groups:
        kind = _kind(g, arch)
        if kind is None:
            continue
        before, after = r.plan.widths.get(g.id, (g.channels, g.channels))
        w = widths.setdefault(kind, [0, 0])
        w[0], w[1] = w[0] + before, w[1] + after
    return {"widths": widths, "params": [r.params_before, r.params_after],
            "verified": bool(r.verification and r.verification.passed),
            "shapes": len(r.verification.shapes) if r.verification else 0, "seconds": seconds}


def _tp_worker(arch: str, head: bool, ratio: float, queue) -> None:
    try:
        import torch
        import torch_pruning as tp

        model = tz.build(arch, head=head)
        model.config.use_cache = False  # outputs without a cache object for the graph trace
        ids, mask = tz.sample_inputs(2, 12)
        before = sum(p.numel() for p in model.parameters())
        cfg = model.config
        n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
        heads = {}
        for name, m in model.named_modules():  # the q/k/v projections, as TP's HF examples do
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in (
                    "query", "key", "value", "q_proj", "k_proj", "v_proj"):
                heads[m] = n_heads
        ignored = [m for n, m in model.named_modules() if n.endswith(("lm_head", "decoder",
                                                                       "predictions"))]
        t = time.perf_counter()
        pruner = tp.pruner.MetaPruner(
            model, {"input_ids": ids, "attention_mask": mask},
            importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            num_heads=heads, prune_head_dims=False, prune_num_heads=True, head_pruning_ratio=ratio,
            ignored_layers=ignored)
        pruner.step()
        seconds = time.perf_counter() - t
        after = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        width = (out.logits if head else out.last_hidden_state).shape[-1]
        queue.put({"params": [before, after], "seconds": seconds, "output_width": int(width)})
    except Exception as err:  # noqa: BLE001 - what Torch-Pruning does is the figure
        queue.put({"error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"})


def theirs(arch: str, head: bool, ratio: float, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_tp_worker, args=(arch, head, ratio, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return {"error": f"no result in {timeout:.0f} s"}
    return queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}


def _w(widths: dict, kind: str) -> str:
    w = widths.get(kind)
    return "frozen" if w is None else f"{w[0]} -> {w[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--tp-timeout", type=float, default=120.0)
    ap.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    args = ap.parse_args()
    rows = []
    for arch in tz.ARCHS:
        for head in (False, True):
            row = {"arch": arch, "output": "logits" if head else "hidden states",
                   "onnxprune": ours(arch, head, args.ratio)}
            if not args.no_tp:
                row["torch_pruning"] = theirs(arch, head, args.ratio, args.tp_timeout)
            rows.append(row)
            print(json.dumps(row))
    table = Table(title=f"transformers, {args.ratio:.0%} of every group (uniform L2)")
    for col in ("model", "out", "heads", "FFN", "hidden", "params removed", "verified",
                "Torch-Pruning"):
        table.add_column(col)
    md = ["| model | output | heads (kv groups) | FFN | hidden | params removed | verified "
          "(2 lengths) | Torch-Pruning |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        o = row["onnxprune"]
        b, a = o["params"]
        tp_row = row.get("torch_pruning")
        if tp_row is None:
            tp_text = "-"
        elif "error" in tp_row:
            tp_text = tp_row["error"]
        else:
            tb, ta = tp_row["params"]
            tp_text = f"{1 - ta / tb:.0%} removed, output width {tp_row['output_width']}"
        cells = [row["arch"], row["output"], _w(o["widths"], "heads"), _w(o["widths"], "ffn"),
                 _w(o["widths"], "hidden"), f"{1 - a / b:.0%}",
                 "yes" if o["verified"] and o["shapes"] == 2 else "no", tp_text]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transformers.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "transformers.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
