"""Draw the graph coloured by component: DOT text, or SVG/PNG (Graphviz's ``dot`` when it is
installed, else a layered layout drawn with matplotlib)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import onnx_graphsurgeon as gs

from ..analysis.components import Components
from ..errors import UsageError

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]


def _colours(components: Components) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(components.names)}


def to_dot(graph: gs.Graph, components: Components) -> str:
    colour = _colours(components)
    ids = {n.name: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["digraph onnxprune {", "  rankdir=TB; node [shape=box, style=filled, fontsize=10];"]
    for comp in components.names:
        lines.append(f'  subgraph "cluster_{comp}" {{ label="{comp}"; color="{colour[comp]}";')
        for n in graph.nodes:
            if components.of_node.get(n.name) == comp:
                lines.append(f'    {ids[n.name]} [label="{n.op}\\n{_short(n.name)}", '
                             f'fillcolor="{colour[comp]}80"];')
        lines.append("  }")
    for n in graph.nodes:
        for t in n.outputs:
            for c in t.outputs:
                if c.name not in ids:
                    continue
                cross = components.of_node.get(n.name) != components.of_node.get(c.name)
                style = ' [color="#d62728", penwidth=2.5]' if cross else ""
                lines.append(f"  {ids[n.name]} -> {ids[c.name]}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _short(name: str, limit: int = 28) -> str:
    name = name.replace('"', "'")
    return name if len(name) <= limit else "…" + name[-limit + 1:]


def draw(graph: gs.Graph, components: Components, path: str | Path) -> Path:
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    dot = to_dot(graph, components)
    if kind == "dot":
        path.write_text(dot)
    elif kind not in ("svg", "png"):
        raise UsageError(f"--graph {path}: use a .dot, .svg or .png file name")
    elif shutil.which("dot"):
        subprocess.run(["dot", f"-T{kind}", "-o", str(path)], input=dot.encode(), check=True)
    else:
        _draw_matplotlib(graph, components, path)
    return path


def _draw_matplotlib(graph: gs.Graph, components: Components, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"--graph {path}: install matplotlib (or Graphviz's dot), or write "
                         ".dot") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    depth: dict[str, int] = {}
    for n in graph.nodes:  # nodes are in topological order
        preds = [t.inputs[0].name for t in n.inputs if t.inputs and t.inputs[0].name in depth]
        depth[n.name] = 1 + max((depth[p] for p in preds), default=-1)
    rows: dict[int, list[str]] = {}
    for name, d in depth.items():
        rows.setdefault(d, []).append(name)
    pos = {name: (i - (len(row) - 1) / 2, -d) for d, row in rows.items()
           for i, name in enumerate(row)}
    colour = _colours(components)
    width = max(len(r) for r in rows.values())
    fig, ax = plt.subplots(figsize=(min(4 + 1.6 * width, 40), min(2 + 0.55 * len(rows), 120)))
    for n in graph.nodes:
        for t in n.outputs:
            for c in t.outputs:
                if c.name in pos:
                    cross = components.of_node.get(n.name) != components.of_node.get(c.name)
                    (x0, y0), (x1, y1) = pos[n.name], pos[c.name]
                    ax.plot([x0, x1], [y0, y1], color="#d62728" if cross else "#999999",
                            lw=2.0 if cross else 0.7, zorder=1)
    for n in graph.nodes:
        x, y = pos[n.name]
        ax.text(x, y, n.op, ha="center", va="center", fontsize=7, zorder=2,
                bbox={"boxstyle": "round,pad=0.3",
                      "fc": colour.get(components.of_node.get(n.name, ""), "#dddddd"),
                      "ec": "none", "alpha": 0.85})
    ax.legend(handles=[Patch(color=colour[c], label=c) for c in components.names],
              loc="upper right", fontsize=8)
    ax.set_axis_off()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
