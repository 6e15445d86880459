"""The rich tables benchmarks/task_quality.py prints from its results: the metric per stage
of every configuration, the OCR pipeline's reading and MiniLM's held-out sentences."""

from __future__ import annotations

import math


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _stages(row: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in ((row.get("stages") or {}).get("stages") or [])}


def tables(results: dict) -> list:
    from rich.table import Table

    out = []
    t = Table(title="Pruning at target_params=0.3: the metric per stage, calibration / held-out "
                    "share of the calibration data")
    for col in ("model", "config", "params", "removed", "seconds", "unpruned", "pruned",
                "compensate", "distill", "note"):
        t.add_column(col)
    for model, rows in _all_rows(results):
        for row in rows.values():
            st = _stages(row)
            cell = {k: (f"{_fmt(st[k].get('calib'))} / {_fmt(st[k].get('heldout'))}"
                        + ("" if st[k].get("kept", True) else " (undone)")) if k in st else "-"
                    for k in ("unpruned", "pruned", "compensate", "distill")}
            note = row.get("error", "")[:80]
            t.add_row(model, row["config"],
                      f"{row['params_before']:,} -> {row['params_after']:,}" if "params_after"
                      in row else "-", _fmt(row.get("params_removed"), ".1%"),
                      _fmt(row["seconds"], ".1f"), cell["unpruned"], cell["pruned"],
                      cell["compensate"], cell["distill"], note)
    out.append(t)
    if "ocr" in results and "pipeline" in results["ocr"]:
        t = Table(title="OCR through the whole rapidocr pipeline (char accuracy / exact lines)")
        for col in ("models", "held-out char acc", "held-out exact", "calib char acc",
                    "calib exact"):
            t.add_column(col)
        for name, v in results["ocr"]["pipeline"].items():
            c = v.get("calib") or {}
            t.add_row(name, _fmt(v["heldout"]["char_accuracy"]), _fmt(v["heldout"]["exact_lines"]),
                      _fmt(c.get("char_accuracy")), _fmt(c.get("exact_lines")))
        out.append(t)
    if "minilm" in results:
        t = Table(title="MiniLM held-out sentences")
        for col in ("config", "mean cosine", "min cosine", "top-5 overlap", "calib cosine"):
            t.add_column(col)
        for row in results["minilm"]["rows"].values():
            task = row.get("task") or {}
            t.add_row(row["config"], _fmt(task.get("heldout_mean_cosine")),
                      _fmt(task.get("heldout_min_cosine")),
                      _fmt(task.get("heldout_top5_overlap")), _fmt(task.get("calib_mean_cosine")))
        out.append(t)
    return out


def _all_rows(results: dict):
    for kind, m in (results.get("ocr") or {}).get("models", {}).items():
        yield f"ppocr-{kind}", m["rows"]
    if "minilm" in results:
        yield "minilm", results["minilm"]["rows"]


