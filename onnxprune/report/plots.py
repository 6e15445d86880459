"""The report's figures, drawn with matplotlib's Agg canvas (no display, no global state) from
the report's JSON object alone, each written as a PNG.

Every function takes the report object and returns the figure (or None when the run has
nothing to show); ``render`` writes all of them into a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DPI = 120
WIDE = 5.8  # inches: the full-width figures (about 700 px: legible scaled down to a phone)
STYLE = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 10.5, "xtick.labelsize": 10,
         "ytick.labelsize": 10, "legend.fontsize": 9.5}
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
           "#9d755d", "#ff9da6", "#79706e")
BEFORE = "#d5d9e0"
FROZEN = "#9aa1ad"
MAX_BARS = 150  # groups drawn in one bar chart (the others are in the tables and report.json)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def component_colors(data: dict[str, Any]) -> dict[str | None, str]:
    """One colour per component, in the order the groups name them."""
    names: list[str | None] = []
    for g in data["report"]["groups"]:
        if g["component"] not in names:
            names.append(g["component"])
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _details(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {g["id"]: g for g in data["report"]["groups"]}


def _legend(fig, colors: dict[str | None, str], extra: list[tuple[str, dict]]) -> None:
    """Above the plot, one row where it fits: components first, then the other keys."""
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=name or "after") for name, c in colors.items()]
    handles += [Patch(label=label, **style) for label, style in extra]
    fig.legend(handles=handles, loc="outside upper left", ncols=min(len(handles), 5),
               frameon=False, handlelength=1.4, columnspacing=1.2)


def drawn_groups(data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The groups the width chart shows, and a note when some are left out."""
    groups = data["groups"]
    if len(groups) <= MAX_BARS:
        return groups, ""
    changed = [g for g in groups if g["after"] != g["before"]]
    shown = changed[:MAX_BARS]
    return shown, (f"the {len(shown)} of {len(changed)} changed groups with the lowest ids "
                   f"(of {len(groups)} groups)")


def widths(data: dict[str, Any]):
    """Every group's width before (grey) and after, coloured by component (frozen groups,
    which keep every channel, hatched)."""
    groups, note = drawn_groups(data)
    if not groups:
        return None
    details, colors = _details(data), component_colors(data)
    rows = len(colors) + 2
    fig = _figure(WIDE, 1.3 + 0.27 * len(groups) + 0.25 * (rows // 5))
    ax = fig.subplots()
    y = np.arange(len(groups))[::-1]
    before = [g["before"] for g in groups]
    after = [g["after"] for g in groups]
    frozen = [details.get(g["id"], {}).get("frozen", False) for g in groups]
    color = [colors[details.get(g["id"], {}).get("component")] for g in groups]
    ax.barh(y, before, color=BEFORE, height=0.8)
    bars = ax.barh(y, after, color=color, height=0.55)
    for bar, f in zip(bars, frozen, strict=True):
        if f:
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    top = max(before) if before else 1
    for yi, b, a in zip(y, before, after, strict=True):
        ax.text(b + top * 0.015, yi, f"{b} → {a}" if a != b else f"{b}", va="center",
                fontsize="small", color="#333")
    ax.set_yticks(y, [f"g{g['id']}" for g in groups])
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel("channels")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    _legend(fig, colors, [("before", {"color": BEFORE}),
                         *([("frozen", {"facecolor": FROZEN, "hatch": "///",
                                        "edgecolor": "white"})] if any(frozen) else [])])
    return fig


def metric_name(data: dict[str, Any]) -> str:
    for key in ("stages", "quality"):
        if data.get(key) and data[key].get("metric"):
            return data[key]["metric"]
    return "metric"


def curve(data: dict[str, Any], c: dict[str, Any]):
    """One searched group: the metric with only this group cut, against the fraction of its
    prunable channels cut, and the fraction the search chose."""
    details = _details(data)
    component = details.get(c["group"], {}).get("component")
    color = component_colors(data).get(component, PALETTE[0])
    fig = _figure(4.4, 3.2)
    ax = fig.subplots()
    x, y = np.asarray(c["fractions"]), np.asarray(c["metric"])
    ax.plot(x, y, marker="o", markersize=3.5, color=color, linewidth=1.6)
    chosen = float(c["chosen"])
    at = float(np.interp(chosen, x, y)) if len(x) else float("nan")
    ax.scatter([chosen], [at], s=110, marker="*", color="#c62828", zorder=4,
               label=f"chosen: {chosen:.0%} cut")
    ax.axvline(chosen, color="#c62828", linewidth=0.8, linestyle=":")
    ax.set_xlim(-0.03, 1.0)
    ax.set_xlabel("fraction of the group's channels cut")
    ax.set_ylabel(metric_name(data))
    where = f" · {component}" if component else ""
    ax.set_title(f"group {c['group']}{where} · {c['channels']} channels", loc="left")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def coefficients(data: dict[str, Any]):
    """Soft selection: each group's coefficient (the fraction of its channels cut)."""
    sel = data.get("selection") or {}
    coef, ids = sel.get("coefficients"), sel.get("coefficient_groups")
    if not coef or not ids:
        return None
    details, colors = _details(data), component_colors(data)
    fig = _figure(WIDE, 1.2 + 0.27 * len(coef))
    ax = fig.subplots()
    y = np.arange(len(coef))[::-1]
    ax.barh(y, coef, color=[colors[details.get(i, {}).get("component")] for i in ids],
            height=0.6)
    for yi, v in zip(y, coef, strict=True):
        ax.text(v + 0.012, yi, f"{v:.3f}", va="center", fontsize="small")
    ax.set_yticks(y, [f"g{i}" for i in ids])
    ax.set_xlim(0, 1.1)
    ax.set_ylim(-0.7, len(coef) - 0.3)
    ax.set_xlabel("coefficient: fraction of the group's channels cut")
    ax.grid(True, axis="x", alpha=0.3)
    if len(colors) > 1 or None not in colors:
        _legend(fig, colors, [])
    return fig


SET_STYLE = {"calib": ("calibration", "#4c78a8", "o"), "heldout": ("held-out", "#e45756", "s"),
             "probe": ("random-token probe", "#54a24b", "^")}


def stages(data: dict[str, Any]):
    """The metric after every stage, on the calibration and the held-out samples."""
    s = data.get("stages")
    if not s or not s.get("stages"):
        return None
    rows = s["stages"]
    fig = _figure(WIDE, 3.6)
    ax = fig.subplots()
    x = np.arange(len(rows))
    for key, (label, color, marker) in SET_STYLE.items():
        if key not in s["samples"]:
            continue
        pts = [(i, r[key]) for i, r in enumerate(rows) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                label=f"{label} ({s['samples'][key]} samples)")
        for i, v in pts:
            ax.annotate(f"{v:.4g}", (i, v), xytext=(5, 5 if key == "calib" else -13),
                        textcoords="offset points", fontsize="small", color=color)
    names = [r["stage"] + (" (undone)" if r.get("kept") is False else "") for r in rows]
    ax.set_xticks(x, names)
    ax.set_xlim(-0.3, len(rows) - 0.4)
    ax.margins(y=0.18)
    ax.set_ylabel(s["metric"])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def _duration(v: float) -> str:
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 0.001:
        return f"{v * 1e3:.3g} ms"
    return "<1 ms"


def passes(data: dict[str, Any]):
    """Seconds and peak resident memory of every pass, in run order."""
    timings = data.get("timings") or {}
    if not timings:
        return None
    per_pass = (data.get("memory") or {}).get("per_pass") or {}
    names = list(timings)
    fig = _figure(WIDE, 1.3 + 0.25 * len(names))
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    y = np.arange(len(names))[::-1]
    secs = [timings[n] for n in names]
    left.barh(y, secs, color="#4c78a8", height=0.6)
    top = max(secs) if secs else 1.0
    for yi, v in zip(y, secs, strict=True):
        left.text(v + top * 0.015, yi, _duration(v), va="center", fontsize="small")
    left.set_xlim(0, (top or 1.0) * 1.3)
    left.set_yticks(y, names)
    left.set_xlabel("seconds")
    left.set_title("time per pass", loc="left")
    left.grid(True, axis="x", alpha=0.3)
    mb = [(per_pass.get(n) or 0) / 1e6 for n in names]
    right.barh(y, mb, color="#72b7b2", height=0.6)
    right.set_xlabel("peak RSS, MB")
    right.set_title("peak memory", loc="left")
    right.grid(True, axis="x", alpha=0.3)
    right.set_ylim(-0.7, len(names) - 0.3)
    return fig


def bench(data: dict[str, Any], path: Path) -> Path | None:
    """The benchmark's own figure (latency vs batch, speedup vs MAC reduction)."""
    b = data.get("bench")
    if not b or not b.get("results"):
        return None
    from ..bench.render import plot
    from ..bench.report import BenchReport, BenchRow

    report = BenchReport([BenchRow(**r) for r in b["results"]], list(b["models"]),
                         dict(b.get("settings") or {}), dict(b.get("environment") or {}),
                         list(b.get("notices") or []))
    return plot(report, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def render(data: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write every figure the run has into ``folder``; returns file name -> what it shows."""
    out: dict[str, str] = {}
    figures: list[tuple[str, str, Callable[[], Any]]] = [
        ("widths.png", "group widths before and after", lambda: widths(data)),
        ("coefficients.png", "soft coefficients", lambda: coefficients(data)),
        ("stages.png", "quality per stage", lambda: stages(data)),
        ("passes.png", "time and peak memory per pass", lambda: passes(data)),
    ]
    for c in (data.get("selection") or {}).get("curves") or []:
        figures.append((f"curve-{c['group']}.png", f"group {c['group']} sensitivity curve",
                        lambda c=c: curve(data, c)))
    from matplotlib import rc_context

    with rc_context(STYLE):
        for name, what, make in figures:
            fig = make()
            if fig is not None:
                _save(fig, folder / name)
                out[name] = what
    if bench(data, folder / "bench.png") is not None:
        out["bench.png"] = "benchmark"
    return out
