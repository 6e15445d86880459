"""The HTML pieces report pages are made of: escaped text, numbers with their exact values
as titles, tables, figures and summary cards."""

from __future__ import annotations

import html
import json
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(x: Any, fmt: str = ".4g") -> str:
    """An integer with separators; a float rounded, its exact value (as in report.json) as
    the title; None as a dash."""
    if x is None:
        return '<span class="muted">–</span>'
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f'<span title="{esc(json.dumps(x))}">{format(x, fmt)}</span>'
    return esc(x)


def nbytes(n: int | None) -> str:
    if n is None:
        return '<span class="muted">–</span>'
    value, unit = float(n), "B"
    for u, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value, unit = n / scale, u
            break
    shown = f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
    return f'<span title="{n:,} bytes">{shown}</span>'


def names(text: str) -> str:
    """A node or tensor name, escaped, that may break after each '/' (on a narrow screen)."""
    return esc(text).replace("/", "/<wbr>")


def share(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return "–"
    return f"{after / before:.1%}"


def shapes_text(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, d)) or 'scalar'}" for k, d in shapes.items())


def table(head: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset(),
          wrap: set[int] = frozenset(), compact: bool = False) -> str:
    """A table (``head`` None: a key-value list); ``compact`` ones are as wide as their text."""
    def cell(tag: str, i: int, text: str) -> str:
        cls = "n" if i in numeric else "w" if i in wrap else ""
        return f'<{tag}{f" class={cls!r}" if cls else ""}>{text}</{tag}>'

    kind = "kv" if head is None else "compact" if compact else ""
    out = [f'<div class="scroll"><table{f" class={kind!r}" if kind else ""}>']
    if head is not None:
        out += ["<thead><tr>", *(cell("th", i, esc(h)) for i, h in enumerate(head)),
                "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def figure(name: str, caption: str, images: dict[str, dict[str, Any]]) -> str:
    if name not in images:
        return ""
    im = images[name]
    return (f'<figure><img src="{esc(name)}" alt="{esc(im["alt"])}" width="{im["width"]}" '
            f'height="{im["height"]}"><figcaption>{caption}</figcaption></figure>')


def arrow(before: str, after: str) -> str:
    """before → after, breaking (if it must) before the arrow, never inside a figure."""
    return f'<span class="nw">{before}</span> <span class="nw">→ {after}</span>'


def card(key: str, value: str, detail: str = "") -> str:
    d = f'<div class="d">{detail}</div>' if detail else ""
    return f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{value}</div>{d}</div>'


# -- sections --------------------------------------------------------------------------------
