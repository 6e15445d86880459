"""The report page, report.html: one page with inline CSS that needs no network and no script,
beside the figures (PNG files) and report.json (the run's JSON object; ``folder.py`` writes
them).

The page is rendered from the JSON object alone, so every figure on it is one report.json
holds (a float is shown rounded, with its exact value as the element's title)."""

from __future__ import annotations

import json
import string
from importlib import resources
from pathlib import Path
from typing import Any

from . import plots
from .html import arrow, card, esc, figure, names, nbytes, num, shapes_text, share, table

DATA = "report.json"


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
    passes = sum((d.get("timings") or {}).values())
    total = d.get("wall_seconds", passes)  # the wall time of the run (older reports: passes)
    peak = (d.get("memory") or {}).get("peak_rss")
    detail = [f"{passes:.2f} s in passes"] if total - passes >= 0.01 else []
    detail += [f"peak RSS {nbytes(peak)}"] if peak else []
    cards.append(card("time", f"{total:.2f} s", ", ".join(detail)))
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
    tokens = d.get("tokens")
    if tokens:
        facts.append(["tokens kept", f"{num(tokens['kept'])} of the {num(tokens['vocabulary'])} "
                      f"of {esc(tokens['input'])} ({num(tokens['params_removed'])} parameters "
                      "removed; a removed token reads "
                      + ("its nearest kept one" if tokens["fallback"] == "nearest"
                         else f"token {esc(tokens['fallback'])}") + ")"])
    for f in d.get("factors") or ():
        facts.append(["factorized", f"{esc(f['matrix'])} {'x'.join(map(str, f['shape']))}: "
                      f"rank {num(f['rank'])} of {num(f['full_rank'])} kept, "
                      + ("stored as two factors" if f["factorized"] else "multiplied back")])
    rotated = d.get("rotated")
    if rotated:
        facts.append(["rotated", "linear bottlenecks to the principal basis of their channels: "
                      + ", ".join(f"{esc(b['tensor'])} ({num(b['width'])})" for b in rotated)])
    lat = d.get("latency")
    if lat and lat.get("achieved") is not None:
        facts.append(["latency", f"{num(lat['achieved'], '.3g')} of the original's "
                      f"({num(lat['target'], '.3g')} asked): {num(lat['original_ms'], '.3g')} -> "
                      f"{num(lat['pruned_ms'], '.3g')} ms at batch {num(lat['batch'])} on "
                      f"{esc(lat['provider'])} ({esc(lat['device'] or '')}), "
                      f"{num(len(lat['attempts']))} cut(s) measured"])
    depth = d.get("depth")
    if depth and depth.get("removed"):
        how = ("chosen by the search with the channels" if depth.get("in_plan") else
               f"by {esc(depth['scored_by'])} on {esc(depth['scored_on'])} data")
        facts.append(["blocks removed", f"{num(len(depth['removed']))} of "
                      f"{num(depth['removable'])} removable, {how}: " + ", ".join(
                          f"{esc(b['name'])} ({esc(b['kind'])}, {num(b['params'])} parameters)"
                          for b in depth["removed"])])
    if classes or tokens:
        if sel.get("target_after_trim") is not None:
            facts.append(["channels then remove", num(sel["target_after_trim"], ".1%")
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
