"""The report folder: report.json (the run's JSON object), the figures (PNG files beside the
page) and report.html, one page with inline CSS that needs no network and no script.

The page is rendered from the JSON object alone, so every figure on it is one report.json
holds (a float is shown rounded, with its exact value as the element's title)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import string
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__, interrupts
from ..errors import OutputError, UsageError
from ..ir import io
from . import plots
from .html import arrow, card, esc, figure, names, nbytes, num, shapes_text, share, table

PAGE, DATA = "report.html", "report.json"
# The figures a report may write (and so remove again when a new report leaves them out).
IMAGE = re.compile(r"^(widths|coefficients|stages|passes|bench|curve-\d+)\.png$")


def is_report_file(name: str) -> bool:
    return name in (PAGE, DATA) or IMAGE.match(name) is not None


def check_matplotlib() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
    except ImportError:
        raise UsageError("a report needs matplotlib: pip install 'onnxprune[bench]'") from None


def check_target(folder: str | os.PathLike) -> Path:
    """Where a report goes, checked before any work: a folder (existing, or new in an existing
    one) that accepts files; and matplotlib, to draw the figures."""
    out = io.folder_target(folder)
    check_matplotlib()
    return out


def check_apart(folder: str | os.PathLike, model: str | os.PathLike) -> None:
    """The model is not written in ``folder`` under a name the report writes."""
    p = Path(model)
    with contextlib.suppress(OSError):
        if p.resolve().parent == Path(folder).resolve() and is_report_file(p.name):
            raise OutputError(f"{model}: the report in {folder} writes a file of that name; "
                              "give the model another name or the report another folder")


# -- formatting ------------------------------------------------------------------------------


def _summary(d: dict[str, Any]) -> str:
    r, v = d["report"], d.get("verification")
    files = r.get("files") or {}
    cards = [
        card("parameters", arrow(num(d["params_before"]), num(d["params_after"])),
             f"{share(d['params_before'], d['params_after'])} kept"),
        card("MACs / sample", arrow(num(d["macs_before"]), num(d["macs_after"])),
             f"{share(d['macs_before'], d['macs_after'])} kept"),
        card("file size", arrow(nbytes((files.get("input") or {}).get("bytes")),
                                nbytes((files.get("output") or {}).get("bytes")))),
    ]
    if v is not None:
        state = '<span class="ok">passed</span>' if v["passed"] else '<span class="bad">failed</span>'
        detail = (f"oracle max abs diff {num(v['oracle_max_abs_diff'], '.3g')}"
                  if v.get("oracle") else "onnx.checker only")
        cards.append(card("verification", state, detail))
    s = d.get("stages")
    if s and s.get("stages"):
        key = "heldout" if "heldout" in s["samples"] else "calib"
        rows = [row for row in s["stages"] if key in row]
        label = "held-out" if key == "heldout" else "calibration"
        cards.append(card(f"{s['metric']} ({label})", arrow(num(rows[0][key]), num(rows[-1][key])),
                          arrow(esc(rows[0]["stage"]), esc(rows[-1]["stage"]))))
    total = sum((d.get("timings") or {}).values())
    peak = (d.get("memory") or {}).get("peak_rss")
    cards.append(card("time", f"{total:.2f} s", f"peak RSS {nbytes(peak)}" if peak else ""))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _model(d: dict[str, Any]) -> str:
    r = d["report"]
    files = r.get("files") or {}
    v = d.get("verification") or {}
    at = v.get("shapes") or []
    macs_at = f" at {esc(shapes_text(at[0]))} (batch 1)" if at else ""
    widths = d["groups"]
    ch_b, ch_a = sum(g["before"] for g in widths), sum(g["after"] for g in widths)
    rows = [
        ["parameters", num(d["params_before"]), num(d["params_after"]),
         share(d["params_before"], d["params_after"])],
        [f"MACs per sample{macs_at}", num(d["macs_before"]), num(d["macs_after"]),
         share(d["macs_before"], d["macs_after"])],
        ["channels (all groups)", num(ch_b), num(ch_a), share(ch_b, ch_a)],
        ["file size", nbytes((files.get("input") or {}).get("bytes")),
         nbytes((files.get("output") or {}).get("bytes")),
         share((files.get("input") or {}).get("bytes"), (files.get("output") or {}).get("bytes"))],
    ]
    out = [table(["", "before", "after", "kept"], rows, numeric={1, 2, 3}, wrap={0},
                 compact=True)]
    notes = [f"{num(d['removed_channels'])} channels removed"]
    if d.get("params_input") is not None and d["params_input"] != d["params_before"]:
        notes.append(f"the input file holds {num(d['params_input'])} parameters (before "
                     "normalization folded what it could)")
    out.append(f"<p class=\"muted\">{'; '.join(notes)}.</p>")
    by_op = r.get("params_by_op")
    if by_op:
        out.append("<h3>Parameters by op type</h3>")
        out.append(table(["op", "before", "after", "kept"],
                         [[esc(op), num(b), num(a), share(b, a)] for op, (b, a) in by_op.items()],
                         numeric={1, 2, 3}, compact=True))
    return "".join(out)


def _groups(d: dict[str, Any], images: dict) -> str:
    details = {g["id"]: g for g in d["report"]["groups"]}
    changed = sum(1 for g in d["groups"] if g["after"] != g["before"])
    _, note = plots.drawn_groups(d)
    out = [f"<p>{changed} of {len(d['groups'])} groups changed width; each bar is one group of "
           "coupled channels (removed together from every layer that shares them)"
           + (f"; the chart shows {esc(note)}" if note else "") + ".</p>",
           figure("widths.png", "Channels of every group before (grey) and after, coloured by "
                  "component; frozen groups hatched.", images)]
    components = any(g.get("component") for g in details.values())
    rows = []
    for g in d["groups"]:
        info = details.get(g["id"], {})
        layers = info.get("layers") or []
        shown = ", ".join(map(names, layers[:4])) + (
            f" (+{len(layers) - 4})" if len(layers) > 4 else "")
        status = (f"frozen: {info.get('reason')}" if info.get("frozen") else
                  "kept whole" if g["after"] == g["before"] else "pruned")
        rows.append([str(g["id"]), *([esc(info.get("component") or "–")] if components else []),
                     shown or "–", num(g["before"]), num(g["after"]),
                     share(g["before"], g["after"]), names(status)])
    head = ["group", *(["component"] if components else []), "layers", "before", "after",
            "kept", "status"]
    at = head.index("layers")
    open_ = " open" if len(rows) <= 24 else ""
    out.append(f"<details{open_}><summary>all {len(rows)} groups</summary>"
               + table(head, rows, numeric={0, at + 1, at + 2, at + 3}, wrap={at, at + 4})
               + "</details>")
    return "".join(out)


def _selection(d: dict[str, Any], images: dict) -> str:
    sel = d.get("selection") or {}
    if not sel:
        return ""
    facts = [["strategy", esc(sel.get("strategy", "–"))]]
    target = sel.get("target")
    if target:
        what = {"params": "parameters", "macs": "MACs"}.get(target[0], target[0])
        facts.append(["target", f"remove {num(target[1], '.1%')} of the {esc(what)}"])
    for key, label, fmt in (("params_reduction", "parameters removed", ".1%"),
                            ("macs_reduction", "MACs removed", ".1%"),
                            ("steps", "search steps", ""), ("evaluations", "evaluations", ""),
                            ("round_to", "channels rounded to a multiple of", ""),
                            ("satisfied", "constraint satisfied", ""), ("plan", "plan file", ""),
                            ("saved_plan", "plan written to", "")):
        if sel.get(key) is not None:
            facts.append([label, num(sel[key], fmt or ".4g")])
    classes = d.get("classes")
    if classes:
        facts.append(["classes kept", f"{num(classes['kept'])} of the {num(classes['classes'])} "
                      f"of {esc(classes['output'])} ({num(classes['params_removed'])} parameters "
                      "removed with the others)"])
        if sel.get("target_after_classes") is not None:
            facts.append(["channels then remove", num(sel["target_after_classes"], ".1%")
                          + " of the rest"])
    refit = sel.get("refit")
    if refit:
        facts.append(["candidates measured", f"after the refit of {num(refit['layers'])} "
                      f"layers (ridge {num(refit['ridge'], '.3g')})"])
    out = [table(None, facts, wrap={1})]
    curves = sel.get("curves") or []
    if curves:
        cut = "cut and its layers refit" if refit else "cut"
        out.append(f"<h3>Sensitivity: one curve per searched group ({len(curves)})</h3>"
                   f"<p>{esc(plots.metric_name(d))} on the calibration data with only that "
                   f"group {cut}, against the fraction of its channels cut; the star is the "
                   "fraction the search chose.</p><div class=\"grid\">")
        for c in curves:
            cut = round(c["chosen"] * c["channels"])
            out.append(figure(f"curve-{c['group']}.png",
                              f"group {c['group']}: {cut} of {c['channels']} channels cut "
                              f"({num(c['chosen'], '.1%')})", images))
        out.append("</div>")
        rows = [[str(c["group"]), num(c["channels"]), num(c["chosen"], ".3g"),
                 ", ".join(num(m) for m in c["metric"])] for c in curves]
        out.append("<details><summary>the curves' figures</summary>"
                   + table(["group", "channels", "fraction cut", f"{plots.metric_name(d)} at "
                            "each fraction"], rows, numeric={0, 1, 2}, wrap={3}) + "</details>")
    coef, ids = sel.get("coefficients"), sel.get("coefficient_groups")
    if coef:
        out.append("<h3>Soft coefficients</h3>")
        out.append(figure("coefficients.png", "The fraction of each group's channels the "
                          "optimised coefficients cut.", images))
        rows = [[str(i), num(c)] for i, c in zip(ids or range(len(coef)), coef, strict=False)]
        out.append("<details><summary>coefficients</summary>"
                   + table(["group", "coefficient"], rows, numeric={0, 1}) + "</details>")
    return "".join(out)


def _stages(d: dict[str, Any], images: dict) -> str:
    s = d.get("stages")
    if not s:
        q = d.get("quality")
        if not q:
            return ""
        rows = [[esc(label), num(q[key])] for key, label in
                (("before", "unpruned"), ("after", "pruned"), ("after_recovery", "recovered"))
                if q.get(key) is not None]
        return (f"<p>{esc(q.get('metric', 'metric'))} as the search measured it.</p>"
                + table(["stage", esc(q.get("metric", "metric"))], rows, numeric={1}))
    named = s.get("sets") or {"calib": "calibration", "heldout": "held-out"}
    sets = [(k, label) for k, label in named.items() if k in s["samples"]]
    head = ["stage", *(f"{label} ({s['samples'][k]} samples)" for k, label in sets)]
    rows = []
    for row in s["stages"]:
        name = esc(row["stage"]) + (' <span class="bad">undone</span>'
                                    if row.get("kept") is False else "")
        rows.append([name, *(num(row.get(k)) for k, _ in sets)])
    out = [f"<p>{esc(s['metric'])} of the model as it stands after each stage, run on the "
           "samples the search and refits used and on the held-out share they never saw "
           "(the one to trust)"
           + (", and on the calibration samples with random tokens (text of another style)"
              if "probe" in s["samples"] else "") + ".</p>",
           table(head, rows, numeric=set(range(1, len(head))), compact=True),
           figure("stages.png", f"{esc(s['metric'])} after each stage.", images)]
    return "".join(out)


def _recovery(d: dict[str, Any]) -> str:
    rec = d.get("recovery")
    if not rec:
        return ""
    out = []
    fits = rec.get("compensate")
    if fits:
        out.append(f"<h3>Compensation: {len(fits)} layers refit</h3>")
        out.append(table(["layer", "rows", "error before", "error after"],
                         [[names(f["layer"]), num(f["rows"]), num(f["error_before"]),
                           num(f["error_after"])] for f in fits], numeric={1, 2, 3}, wrap={0}))
    dist = rec.get("distill")
    if dist:
        out.append("<h3>Distillation</h3>")
        out.append(table(None, [[esc(k), num(v) if not isinstance(v, (dict, list))
                                 else esc(json.dumps(v))] for k, v in dist.items()], wrap={1}))
    return "".join(out)


def _verification(d: dict[str, Any]) -> str:
    v = d.get("verification")
    if v is None:
        return "<p>The model was not verified.</p>"
    rows = [["result", '<span class="ok">passed</span>' if v["passed"]
             else '<span class="bad">failed</span>'],
            ["onnx.checker", "ok" if v["checker"] else '<span class="bad">failed</span>'],
            ["onnxruntime providers", esc(", ".join(v["providers"]))]]
    if v.get("oracle"):
        rows += [["mask oracle: max abs diff", num(v["oracle_max_abs_diff"], ".3g")],
                 ["mask oracle: max relative diff", num(v["oracle_max_rel_diff"], ".3g")]]
    if v.get("normalize_rel_diff") is not None:
        rows.append(["normalized vs input model (relative)", num(v["normalize_rel_diff"], ".3g")])
    for i, s in enumerate(v.get("shapes") or []):
        rows.append([f"input shapes, set {i + 1}", esc(shapes_text(s))])
    if v.get("deciding"):
        rows.append(["closest to its tolerance", names(v["deciding"])])
    for m in v.get("messages") or []:
        rows.append(["note", esc(m)])
    intro = ("<p>The pruned model against the mask oracle (the unpruned model with the removed "
             "channels gated to zero), at every set of input shapes.")
    if d.get("recovery"):
        intro += (" The oracle checks the removal; recovery then changed weights only, and the "
                  "recovered model was checked again (onnx.checker, onnxruntime, finite outputs, "
                  "the metric against the original).")
    return intro + "</p>" + table(None, rows, wrap={1})


def _passes(d: dict[str, Any], images: dict) -> str:
    timings = d.get("timings") or {}
    mem = d.get("memory") or {}
    per_pass = mem.get("per_pass") or {}
    out = [figure("passes.png", "Seconds and peak resident memory of every pass.", images)]
    if mem.get("peak_rss"):
        ratio = (f", {num(mem['peak_over_weights'], '.3g')} times the input model's weights"
                 if mem.get("peak_over_weights") else "")
        out.append(f"<p>Peak resident memory {nbytes(mem['peak_rss'])}{ratio}; "
                   f"{nbytes(mem.get('start_rss'))} before the first pass.</p>")
    rows = [[esc(name), num(secs, ".3g"), nbytes(per_pass.get(name))]
            for name, secs in timings.items()]
    out.append("<details><summary>every pass</summary>"
               + table(["pass", "seconds", "peak RSS"], rows, numeric={1, 2}) + "</details>")
    return "".join(out)


def _bench(d: dict[str, Any], images: dict) -> str:
    b = d.get("bench")
    if not b:
        return ""
    rows = []
    for r in b.get("results", []):
        rows.append([esc(r["model"]), esc(r["provider"]), num(r["batch"]), num(r["p50"]),
                     num(r["p90"]), num(r["p99"]), num(r["throughput"], ".4g"),
                     num(r.get("speedup"), ".3g"), num(r.get("efficiency"), ".3g")])
    s = b.get("settings") or {}
    budget = f"{s['repeat']} runs" if s.get("repeat") else f"{s.get('seconds', '?')} s"
    out = [f"<p>Latency per run of one batch (ms), {esc(budget)} per model, provider and batch, "
           f"the models alternating; speedup against {esc(b.get('original'))}.</p>",
           table(["model", "provider", "batch", "p50 ms", "p90 ms", "p99 ms", "samples/s",
                  "speedup", "efficiency"], rows, numeric=set(range(2, 9)), wrap={0}),
           figure("bench.png", "Latency against batch, and speedup against MAC reduction.",
                  images)]
    for n in b.get("notices") or []:
        out.append(f'<p class="muted">{esc(n)}</p>')
    return "".join(out)


def _warnings(d: dict[str, Any]) -> str:
    said = d.get("warnings") or []
    if not said:
        return ""
    return "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in said) + "</ul>"


def _reproduce(d: dict[str, Any]) -> str:
    r = d["report"]
    if d.get("command"):
        where = f" in <code>{esc(r['cwd'])}</code>" if r.get("cwd") else ""
        body = (f"<p>The run, as given{where}:</p><pre><code>{esc(d['command'])}</code></pre>")
    else:
        body = "<p>The run was built in code; its command was not recorded.</p>"
    return body


def render_html(d: dict[str, Any]) -> str:
    """The page, from the report object alone."""
    images = d["report"].get("images") or {}
    sections = [
        ("model", "Model before and after", _model(d)),
        ("groups", "Group widths", _groups(d, images)),
        ("selection", "Selection", _selection(d, images)),
        ("quality", "Quality per stage", _stages(d, images)),
        ("recovery", "Recovery", _recovery(d)),
        ("verification", "Verification", _verification(d)),
        ("passes", "Time and memory per pass", _passes(d, images)),
        ("bench", "Benchmark", _bench(d, images)),
        ("warnings", "Warnings", _warnings(d)),
        ("reproduce", "Reproduce", _reproduce(d)),
    ]
    sections = [s for s in sections if s[2]]
    src = d.get("input") or "a model in memory"
    dst = d.get("output") or "–"
    body = [f"<header><h1>Pruning report</h1><p class=\"sub\">{esc(src)} → {esc(dst)}</p>",
            "<nav>" + "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections) + "</nav>",
            _summary(d), "</header>"]
    for key, title, content in sections:
        body.append(f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>')
    body.append(f'<footer>Written by onnxprune {esc(d["report"].get("version", ""))}; every '
                f'figure on this page is in <a href="{DATA}">{DATA}</a>.</footer>')
    template = string.Template(resources.files(__package__).joinpath("template.html")
                               .read_text(encoding="utf-8"))
    return template.substitute(title=esc(f"Pruning report: {Path(src).name}"),
                               version=esc(d["report"].get("version", "")),
                               body="\n".join(body))


# -- writing ---------------------------------------------------------------------------------


def _image_sizes(folder: Path, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Pixel sizes from the PNG headers (for the page's layout before the images load)."""
    out = {}
    for name, what in names.items():
        with open(folder / name, "rb") as fh:
            head = fh.read(24)
        out[name] = {"alt": what, "width": int.from_bytes(head[16:20], "big"),
                     "height": int.from_bytes(head[20:24], "big")}
    return out


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _old_images(folder: Path) -> set[str]:
    """The figures the report already in ``folder`` lists (to remove the ones now gone)."""
    try:
        old = json.loads((folder / DATA).read_text())
        return {n for n in (old.get("report") or {}).get("images") or {} if IMAGE.match(n)}
    except (OSError, ValueError, AttributeError):
        return set()


def write_report(folder: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the report of ``data`` (the run's JSON object) into ``folder``; returns the page.

    Everything is drawn into a temporary folder first. A new folder is then moved into place
    in one rename; into an existing one the figures go first and the page last (the page is
    what readers open), and figures of an earlier report there that this one does not have
    are removed. Interrupts are held back during the renames."""
    out = io.folder_target(folder)
    data = {**data, "report": {**(data.get("report") or {}), "version": __version__}}
    data["report"].setdefault("cwd", os.getcwd())
    data["report"]["files"] = {
        side: {"path": data.get(side), "bytes": io.model_bytes(data[side])
               if data.get(side) else None} for side in ("input", "output")}
    fresh = not out.exists()
    parent = out.parent if fresh else out
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-report-", dir=parent))
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the report ({err.strerror or err})") from None
    try:
        names = plots.render(data, tmp)
        data["report"]["images"] = _image_sizes(tmp, names)
        _write(tmp / DATA, (json.dumps(data, indent=2) + "\n").encode())
        _write(tmp / PAGE, render_html(data).encode("utf-8"))
        interrupts.check()
        if fresh:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            with interrupts.deferred():
                os.rename(tmp, out)
            return out / PAGE
        stale = _old_images(out) - set(names)
        with interrupts.deferred():
            for name in [*names, DATA, PAGE]:
                os.replace(tmp / name, out / name)
        for name in stale:
            (out / name).unlink(missing_ok=True)
        return out / PAGE
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the report ({err.strerror or err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
