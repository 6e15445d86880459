"""A benchmark report as a rich table, a Markdown table, or a matplotlib figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

if TYPE_CHECKING:
    from .report import BenchReport, BenchRow

COLUMNS = ("model", "provider", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s",
           "MACs", "params", "weights", "peak mem", "speedup", "MACs ÷", "efficiency")


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def _mem(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**20:.1f} MiB"


def _size(v: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v} B"


def _ratio(v: float | None, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.2f}{suffix}"


def _weights(r: BenchRow) -> str:
    """The parameters' bytes and their element types, largest first: ``2.3 MiB int8+float32``
    (types holding under 1% of the parameters left out)."""
    if r.weight_bytes is None:
        return "-"
    types = r.params_by_type or {}
    total = sum(types.values())
    main = [name for name, n in types.items() if total and n >= 0.01 * total]
    return f"{_size(r.weight_bytes)} {'+'.join(main)}".rstrip()


def cells(r: BenchRow) -> list[str]:
    return [r.model, r.provider, str(r.batch), _ms(r.p50), _ms(r.p90), _ms(r.p99), _ms(r.mean),
            f"{r.throughput:,.0f}", _si(r.macs), _si(r.params), _weights(r), _mem(r.peak_mem),
            _ratio(r.speedup, "x"), _ratio(r.mac_reduction, "x"), _ratio(r.efficiency)]


def _caption(report: BenchReport) -> str:
    s = report.settings
    budget = f"{s['repeat']} runs" if s.get("repeat") else f"{s['seconds']:g} s"
    threads = s.get("threads") or "default"
    return (f"latency per run of one batch; {budget} per model/provider/batch, "
            f"{s['warmup']} warmup, threads {threads}; speedup = p50 of {report.original} / p50; "
            "efficiency = speedup / MAC reduction")


# Left out, in this order, when the table is wider than the console (JSON/Markdown keep all).
OPTIONAL = ("mean ms", "MACs ÷", "params", "p90 ms")


def rich_table(report: BenchReport, columns: Sequence[str] = COLUMNS) -> Table:
    table = Table(title="benchmark", title_justify="left", caption=_caption(report),
                  caption_justify="left")
    keep = [COLUMNS.index(c) for c in columns]
    for i in keep:
        table.add_column(COLUMNS[i], justify="left" if i < 2 else "right", no_wrap=True)
    for r in report.rows:
        row = cells(r)
        table.add_row(*(row[i] for i in keep), style="bold" if r.model == report.original else None)
    return table


def print_table(report: BenchReport, console: Console) -> None:
    """The results as a rich table, never cut: on a terminal optional columns are left out
    while it is wider than the console; off a terminal (logs, files) all are shown."""
    columns = list(COLUMNS)
    table = rich_table(report, columns)
    for col in OPTIONAL if console.is_terminal else ():
        if _width(console, table) <= console.width:
            break
        columns.remove(col)
        table = rich_table(report, columns)
    width, saved = _width(console, table), console.width
    console.width = max(width, saved)  # print(width=...) would be clamped to the console's
    try:
        console.print(table)
    finally:
        console.width = saved
    if len(columns) < len(COLUMNS):
        hidden = ", ".join(c for c in COLUMNS if c not in columns)
        console.print(f"(narrow console: {hidden} not shown; see --json or --markdown)",
                      markup=False, highlight=False)


def _width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def markdown(report: BenchReport) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if c in ("model", "provider") else "---:" for c in COLUMNS)
             + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |"
              for r in report.rows]
    return "\n".join(lines) + f"\n\n{_caption(report)}.\n"


def plot(report: BenchReport, path: Path) -> Path:
    """Left: p50 latency vs batch (bars up to p90), the original in black. Right: speedup vs
    MAC reduction of the other models, with y = x (latency falling as fast as MACs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    providers = list(dict.fromkeys(r.provider for r in report.rows))
    styles = ["-", "--", ":", "-."]
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                   "tab:pink", "tab:olive", "tab:cyan"] * 8)
    color = {m: "black" if m == report.original else next(colors) for m in report.models}
    for pi, provider in enumerate(providers):
        for model in report.models:
            rows = sorted((r for r in report.rows if r.model == model and r.provider == provider),
                          key=lambda r: r.batch)
            if not rows:
                continue
            label = model if len(providers) == 1 else f"{model} ({provider})"
            left.errorbar([r.batch for r in rows], [r.p50 for r in rows],
                          yerr=[[0] * len(rows), [r.p90 - r.p50 for r in rows]], capsize=3,
                          marker="o", color=color[model], linestyle=styles[pi % len(styles)],
                          linewidth=2 if model == report.original else 1.3, label=label)
    left.set_xscale("log", base=2)
    batches = sorted({r.batch for r in report.rows})
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    left.set_yscale("log")
    left.set_xlabel("batch")
    left.set_ylabel("latency per run, ms (p50, bar to p90)")
    left.set_title("latency vs batch")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="small")

    points = [r for r in report.rows
              if r.model != report.original and r.speedup is not None and r.mac_reduction]
    top = max([1.0] + [max(r.speedup, r.mac_reduction) for r in points]) * 1.15
    right.plot([0, top], [0, top], color="gray", linestyle="--", label="y = x (speedup = MACs ÷)")
    right.axhline(1.0, color="black", linewidth=0.8)
    labelled: set[str] = set()
    for r in points:
        right.scatter(r.mac_reduction, r.speedup, color=color[r.model], zorder=3,
                      label=None if r.model in labelled else r.model)
        labelled.add(r.model)
        tag = f"b={r.batch}" if len(providers) == 1 else f"{r.provider} b={r.batch}"
        right.annotate(tag, (r.mac_reduction, r.speedup), fontsize="x-small", xytext=(5, -3),
                       textcoords="offset points")
    right.set_xlim(0, top)
    right.set_ylim(0, top)
    right.set_xlabel(f"MAC reduction (MACs of {report.original} / MACs)")
    right.set_ylabel(f"speedup (p50 of {report.original} / p50)")
    right.set_title("speedup vs MAC reduction")
    right.grid(True, alpha=0.3)
    right.legend(fontsize="small", loc="upper left")
    fig.savefig(path, dpi=120)
    return path
