"""Turning results into JSON objects and rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..analysis.model import Group
from ..analysis.size import types_text
from ..api import Analysis, PruneResult
from ..figures import distinct
from ..pipeline.passes.depth import block_json
from ..pipeline.result import prune_json  # noqa: F401 - the --json object, also here


def group_json(g: Group) -> dict[str, Any]:
    return {
        "id": g.id,
        "channels": g.channels,
        "prunable": 0 if g.frozen else g.prunable,
        "members": [
            {"tensor": m.tensor, "axis": m.axis, "positions": m.positions, "size": m.size}
            for m in g.members
        ],
        "layers": list(g.layers),
        "param_slices": [
            {"param": p.param, "axis": p.axis, "count": p.count, "size": p.size} for p in g.params
        ],
        "params": g.n_params,
        "macs": g.macs,
        "frozen": g.frozen,
        "reason": g.reason,
        "component": g.component,
    }


def analysis_json(result: Analysis, model: str) -> dict[str, Any]:
    groups = result.channels.groups
    prunable = [g for g in groups if not g.frozen]
    return {
        "model": model,
        "nodes": result.nodes,
        "params": result.params,
        "params_by_type": result.params_by_type,
        "macs": result.macs,
        "groups": [group_json(g) for g in groups],
        "totals": {
            "groups": len(groups),
            "prunable_groups": len(prunable),
            "frozen_groups": len(groups) - len(prunable),
            "channels": sum(g.channels for g in groups),
            "prunable_channels": sum(g.prunable for g in prunable),
        },
        "subgraph_params": result.subgraph_params,
        "branch_inputs": result.branch_inputs,
        "opened_branches": result.opened,
        "class_heads": list(result.class_heads),
        "token_inputs": list(result.token_inputs),
        "blocks": [{**block_json(b), **({"influence": result.influence[b.name]}
                                         if b.name in result.influence else {})}
                   for b in result.blocks],
        "timings": result.timings,
        **_components_json(result),
    }


def _stats_json(stats) -> dict[str, Any]:
    return {"groups": stats.groups, "prunable": stats.prunable,
            "largest_layers": stats.largest_layers, "mean_layers": round(stats.mean_layers, 3),
            "largest_params": stats.largest_params, "mean_params": round(stats.mean_params, 1)}


def _flow_channels(result: Analysis, tensor: str) -> int | None:
    sizes = [len(u) for (t, _), u in result.channels.slots.items() if t == tensor]
    return max(sizes) if sizes else None


def _components_json(result: Analysis) -> dict[str, Any]:
    if result.components is None:
        return {}
    return {
        "components": [
            {"name": name, **result.component_stats[name]} for name in result.components.names
        ],
        "component_source": result.components.source,
        "scope_depth": result.components.depth,
        "flows": [
            {"tensor": f.tensor, "from": f.src, "to": list(f.dst),
             "channels": _flow_channels(result, f.tensor), "policy": f.policy}
            for f in result.flows
        ],
        "group_sizes": {"component_aware": _stats_json(result.stats),
                        "plain": _stats_json(result.plain)},
    }


def _types(by_type: dict[str, int] | None) -> str:
    """`` (int8 42,000, float32 1,210)``; nothing when there are none."""
    return f" ({types_text(by_type)})" if by_type else ""


def _short(names: list[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _print_blocks(console: Console, result: Analysis, limit: int = 40) -> None:
    table = Table(title="residual blocks (--remove-blocks N: the N least influential go)",
                  title_justify="left")
    cols = [("block", "left"), ("kind", "left"), ("nodes", "right"), ("params", "right"),
            ("MACs", "right"), ("status", "left")]
    if result.influence:  # measured on calibration data
        cols.insert(5, ("influence", "right"))
    for col, just in cols:
        table.add_column(col, justify=just)
    for b in result.blocks[:limit]:
        row = [b.name, b.kind, str(len(b.nodes)), f"{b.params:,}", f"{b.macs:,}",
               "removable" if b.removable else f"kept: {b.reason}"]
        if result.influence:
            score = result.influence.get(b.name)
            row.insert(5, "-" if score is None else f"{score:.3g}")
        table.add_row(*row)
    console.print(table)
    if len(result.blocks) > limit:
        console.print(f"... {len(result.blocks) - limit} more blocks (use --json for all)")


def print_analysis(console: Console, result: Analysis, model: str, limit: int = 60) -> None:
    data = analysis_json(result, model)
    table = Table(title=f"channel groups of {model}", title_justify="left")
    comp = result.components is not None
    cols = [("id", "right"), ("channels", "right"), ("layers", "left"), ("params", "right"),
            ("MACs", "right"), ("status", "left")]
    if comp:
        cols.insert(1, ("component", "left"))
    for col, just in cols:
        table.add_column(col, justify=just)
    for g in result.channels.groups[:limit]:
        status = f"frozen: {g.reason}" if g.frozen else (
            f"{g.frozen_units} frozen" if g.frozen_units else "prunable")
        row = [str(g.id), str(g.channels), _short(list(g.layers) or [m.tensor for m in g.members]),
               f"{g.n_params:,}", f"{g.macs:,}", status]
        if comp:
            row.insert(1, g.component or "-")
        table.add_row(*row)
    console.print(table)
    if comp:
        _print_components(console, data)
    if len(result.channels.groups) > limit:
        console.print(f"... {len(result.channels.groups) - limit} more groups (use --json for all)")
    t = data["totals"]
    console.print(
        f"{t['groups']} groups ({t['prunable_groups']} prunable, {t['frozen_groups']} frozen), "
        f"{t['prunable_channels']:,} of {t['channels']:,} channels prunable; model: "
        f"{result.params:,} params{_types(result.params_by_type)}, {result.macs:,} MACs per sample"
    )
    if result.blocks:
        _print_blocks(console, result)
    for h in result.class_heads:
        share = h["params"] / max(result.params, 1)
        if share >= 0.1:  # worth saying: the rows of classes a task never needs
            console.print(f"output {h['output']}: its {h['classes']:,} classes come from "
                          f"{h['layer']} ({h['params']:,} parameters, {share:.0%} of the model); "
                          "--keep-classes keeps only those a task needs", markup=False,
                          highlight=False, soft_wrap=True)
    for t in result.token_inputs:
        share = t["params"] / max(result.params, 1)
        if share >= 0.1:  # worth saying: the rows of tokens a task never reads
            console.print(f"input {t['input']}: its {t['vocabulary']:,}-token embedding "
                          f"({', '.join(t['tables'])}) holds {t['params']:,} parameters, "
                          f"{share:.0%} of the model; --keep-tokens keeps only those a task "
                          "reads", markup=False, highlight=False, soft_wrap=True)
    for name, decided in result.opened.items():
        pin = (f"; --input-value {decided[0]}=VALUE prunes only the branch that value takes "
               "(inlined)" if decided else "")
        console.print(f"If node {name}"
                      + (f" (its branch chosen by input {', '.join(decided)})" if decided else "")
                      + ": both branches are analyzed and pruned, and the written model keeps "
                      "the If" + pin, markup=False, soft_wrap=True)
    if result.subgraph_params:
        decided = sorted({i for names in result.branch_inputs.values() for i in names})
        how = (f"; If node {', '.join(result.branch_inputs)} chooses its branch by input "
               f"{', '.join(decided)}: pin it to the value your application feeds "
               f"(--input-value {decided[0]}=VALUE) and the branch it takes is inlined and "
               "analyzed" if decided else "; an If whose condition a pinned input decides is "
               "inlined (--input-value)")
        console.print(f"{result.subgraph_params:,} of the parameters sit inside If/Loop/Scan "
                      "bodies, which the analysis does not enter (their channels stay)" + how,
                      markup=False, soft_wrap=True)


def _print_components(console: Console, data: dict[str, Any]) -> None:
    t = Table(title="components", title_justify="left")
    for col in ("component", "nodes", "params", "MACs", "groups"):
        t.add_column(col, justify="left" if col == "component" else "right")
    for c in data["components"]:
        t.add_row(c["name"], str(c["nodes"]), f"{c['params']:,}", f"{c['macs']:,}", str(c["groups"]))
    console.print(t)
    if data["flows"]:
        f = Table(title="inter-component flows", title_justify="left")
        for col in ("tensor", "from", "to", "channels", "policy"):
            f.add_column(col)
        for row in data["flows"]:
            f.add_row(row["tensor"], row["from"], ", ".join(row["to"]),
                      str(row["channels"] or "-"), row["policy"])
        console.print(f)
    s = Table(title="prunable group sizes", title_justify="left")
    for col in ("coupling", "groups", "largest (layers)", "mean (layers)", "largest (params)",
                "mean (params)"):
        s.add_column(col, justify="left" if col == "coupling" else "right")
    for label, key in (("component-aware", "component_aware"), ("plain", "plain")):
        st = data["group_sizes"][key]
        s.add_row(label, str(st["prunable"]), str(st["largest_layers"]), f"{st['mean_layers']:.2f}",
                  f"{st['largest_params']:,}", f"{st['mean_params']:,.0f}")
    console.print(s)


def _ratio(before: int, after: int) -> str:
    return f"{after / before:.1%}" if before else "-"


def _print_widths(console: Console, r: PruneResult, limit: int = 40, more: str = "--json"
                  ) -> None:
    """The chosen width of every group that changed (the layers it slices, before -> after)."""
    groups = {g.id: g for g in r.analysis.groups}
    changed = [(gid, b, a) for gid, (b, a) in sorted(r.plan.widths.items()) if a != b]
    if not changed:
        console.print("no group changed width")
        return
    t = Table(title=f"group widths ({len(changed)} of {len(groups)} groups changed)",
              title_justify="left")
    for col, just in (("group", "right"), ("component", "left"), ("layers", "left"),
                      ("channels", "right")):
        t.add_column(col, justify=just)
    for gid, b, a in changed[:limit]:
        g = groups[gid]
        t.add_row(str(gid), g.component or "-", _short(list(g.layers) or ["-"]), f"{b} -> {a}")
    console.print(t)
    if len(changed) > limit:
        console.print(f"... {len(changed) - limit} more (use {more} for all)")


def quality_line(q: dict) -> str:
    """The metric at every stage the run measured: unpruned, selected cut, after recovery."""
    stages = [(label, q[key]) for key, label in (("before", "unpruned"), ("after", "pruned"),
                                                  ("after_recovery", "after recovery"))
              if q.get(key) is not None]
    shown = distinct([value for _, value in stages])
    return f"{q['metric']} on the calibration data: " + " -> ".join(
        f"{text} ({label})" for text, (label, _) in zip(shown, stages, strict=True))


STAGE_SETS = {"calib": "calibration", "heldout": "held-out"}  # runs saved before "sets"


def stage_lines(s: dict) -> list[str]:
    """One line per data set: the metric after every stage (a stage undone is marked)."""
    lines = []
    for key, label in (s.get("sets") or STAGE_SETS).items():
        if key not in s["samples"]:
            continue
        rows = [row for row in s["stages"] if key in row]
        shown = distinct([float(row[key]) for row in rows])
        steps = " -> ".join(
            f"{text} ({row['stage']}{', undone' if row.get('kept') is False else ''})"
            for text, row in zip(shown, rows, strict=True))
        note = (" (too few to hold any out)" if key == "calib" and "heldout" not in s["samples"]
                else "")
        lines.append(f"{s['metric']} on {s['samples'][key]} {label} samples{note}: {steps}")
    return lines


def _fill_text(fill: float | None) -> str:
    from ..rewrite.classes import MARGIN

    return f"{fill:g}" if fill is not None else f"the lowest kept score - {MARGIN:g}"


def _token_fallback(fallback: str) -> str:
    return ("the row of their nearest kept token" if fallback == "nearest"
            else f"the row of token {fallback}")


QUIET_WIDTHS = 3  # width changes a plain run names (-v: a table of up to 40)


def widths_line(r: PruneResult) -> str:
    """One line for the group widths: how many changed, the largest cuts."""
    changed = [(b - a, gid, b, a) for gid, (b, a) in sorted(r.plan.widths.items()) if a != b]
    if not changed:
        return "group widths: none changed"
    top = sorted(changed, key=lambda c: (-c[0], c[1]))[:QUIET_WIDTHS]
    named = ", ".join(f"group {gid} {b} -> {a}" for _, gid, b, a in top)
    return (f"group widths: {len(changed)} of {len(r.plan.widths)} groups changed, "
            f"{'the largest ' if len(changed) > len(top) else ''}{named} (-v: each)")


def print_prune(console: Console, r: PruneResult, model: str, verbose: bool = False,
                wall: float | None = None) -> None:
    """What a run did. Plain: the sizes, the largest width changes, the quality per stage,
    the verification, one line of time and memory; ``verbose`` adds every group, the
    tolerance that decided, and the time and peak memory of every pass."""
    table = Table(title=f"pruned {model}", title_justify="left")
    for col in ("", "before", "after", "kept"):
        table.add_column(col, justify="right")
    table.add_row("parameters", f"{r.params_before:,}", f"{r.params_after:,}",
                  _ratio(r.params_before, r.params_after))
    before, after = r.params_by_type_before or {}, r.params_by_type_after or {}
    if set(before) | set(after) != {"float32"}:  # by element type, when not all float32
        for name in dict.fromkeys([*before, *after]):
            b, a = before.get(name, 0), after.get(name, 0)
            table.add_row(f"  {name}", f"{b:,}", f"{a:,}", _ratio(b, a))
    table.add_row("MACs / sample", f"{r.macs_before:,}", f"{r.macs_after:,}",
                  _ratio(r.macs_before, r.macs_after))
    widths = r.plan.widths
    ch_b = sum(b for b, _ in widths.values())
    ch_a = sum(a for _, a in widths.values())
    table.add_row("channels (all groups)", f"{ch_b:,}", f"{ch_a:,}", _ratio(ch_b, ch_a))
    console.print(table)
    if r.classes:
        c = r.classes
        console.print(f"classes: {c['output']} computes {c['kept']:,} of its {c['classes']:,} "
                      f"classes ({c['params_removed']:,} parameters of {c['layer']} removed; "
                      f"the others read {_fill_text(c['fill'])})", markup=False, highlight=False,
                      soft_wrap=True)
    lat = (r.selection or {}).get("latency")
    if lat and lat.get("achieved") is not None:
        console.print(f"latency: {lat['achieved']:.3g} of the original's ({lat['target']:.3g} "
                      f"asked): {lat['original_ms']:.3g} -> {lat['pruned_ms']:.3g} ms at batch "
                      f"{lat['batch']} on {lat['provider']}; {len(lat['attempts'])} cut(s) "
                      f"measured, latency table {lat['table']['measured']} layer widths measured "
                      f"and {lat['table']['reused']} reused", markup=False, highlight=False,
                      soft_wrap=True)
    if r.depth and r.depth["in_plan"] and not r.depth["removed"]:
        console.print(f"blocks: none of {r.depth['removable']} removable chosen (channels cost "
                      "the metric less)", markup=False, highlight=False, soft_wrap=True)
    if r.depth and r.depth["removed"]:
        gone = r.depth["removed"]
        how = ("chosen by the search with the channels" if r.depth["in_plan"] else
               f"by {r.depth['scored_by']} on {r.depth['scored_on']} data")
        console.print(f"blocks: {len(gone)} of {r.depth['removable']} removable removed, "
                      f"{how}: " + ", ".join(
                          f"{b['name']} ({b['kind']}" + (f", {b['score']:.3g})" if "score" in b
                                                        else ")") for b in gone),
                      markup=False, highlight=False, soft_wrap=True)
    if r.tokens:
        t = r.tokens
        console.print(f"tokens: {t['input']} reads {t['kept']:,} of its {t['vocabulary']:,} "
                      f"tokens ({t['params_removed']:,} parameters of {', '.join(t['tables'])} "
                      f"removed; the others read {_token_fallback(t['fallback'])})",
                      markup=False, highlight=False, soft_wrap=True)
    for f in r.factors or ():
        how = ("stored as two factors" if f["factorized"] else
               "multiplied back: fewer parameters as one matrix")
        console.print(f"factorized: {f['matrix']} {'x'.join(map(str, f['shape']))} keeps rank "
                      f"{f['rank']} of {f['full_rank']} ({how})", markup=False,
                      highlight=False, soft_wrap=True)
    if r.rotated:
        console.print(f"rotated: {len(r.rotated)} linear bottleneck(s) to the principal basis of "
                      "their channels on the calibration data: " + ", ".join(
                          f"{b['tensor']} ({b['width']})" for b in r.rotated), markup=False,
                      highlight=False, soft_wrap=True)
    if verbose:
        _print_widths(console, r)
    else:
        console.print(widths_line(r), markup=False, highlight=False, soft_wrap=True)
    if r.calibration:
        console.print(f"calibration: {r.calibration}", markup=False, highlight=False,
                      soft_wrap=True)
    if r.stages:
        for line in stage_lines(r.stages):
            console.print(line, soft_wrap=True)
    elif r.quality:
        console.print(quality_line(r.quality), soft_wrap=True)
    v = r.verification
    if v is not None and v.oracle:
        at = "; ".join(", ".join(f"{k} {'x'.join(map(str, d)) or 'scalar'}" for k, d in s.items())
                       for s in v.shapes)
        console.print(
            f"verified: checker ok, onnxruntime {', '.join(v.providers)}, mask oracle max abs "
            f"diff {v.max_abs_diff:.3g} (relative {v.max_rel_diff:.3g})"
            + (f" at {len(v.shapes)} input shape(s): {at}" if v.shapes else ""),
            soft_wrap=True)
        if v.deciding and verbose:
            console.print(f"closest to its tolerance: {v.deciding}", soft_wrap=True)
    elif v is not None:
        console.print("verified by onnx.checker only: " + "; ".join(v.messages))
    if r.quantization:
        from ..pipeline.passes.quantization import summary_line

        q = r.quantization
        console.print(summary_line(q) + f"; weights {q['weight_bytes_float']:,} -> "
                      f"{q['weight_bytes']:,} bytes", soft_wrap=True)
    if verbose:
        _print_passes(console, r)
    else:
        seconds = wall if wall is not None else sum(r.timings.values())
        peak = f", peak memory {r.memory['peak_rss'] / 1e6:,.0f} MB" if r.memory else ""
        console.print(f"took {seconds:.1f} s{peak} (-v: per pass)", markup=False,
                      highlight=False)
    _print_tail(console, r)


def _print_passes(console: Console, r: PruneResult) -> None:
    per_pass = (r.memory or {}).get("per_pass", {})
    times = Table(title="time and peak memory per pass", title_justify="left")
    times.add_column("pass")
    times.add_column("seconds", justify="right")
    times.add_column("peak RSS MB", justify="right")
    for name, secs in r.timings.items():
        peak = per_pass.get(name)
        times.add_row(name, f"{secs:.3f}", "-" if peak is None else f"{peak / 1e6:,.0f}")
    console.print(times)
    if r.memory:
        m = r.memory
        ratio = (f" ({m['start_rss'] / 1e6:,.0f} MB before the first pass; "
                 f"{m['peak_over_weights']:.1f}x the input model's "
                 f"{m['model_weight_bytes'] / 1e6:,.1f} MB of weights)"
                 if m.get("peak_over_weights") and m.get("start_rss") else "")
        console.print(f"peak memory {m['peak_rss'] / 1e6:,.0f} MB{ratio}")


def _print_tail(console: Console, r: PruneResult) -> None:
    refit = (r.selection or {}).get("refit")
    if refit:
        console.print(f"sensitivity measured after the refit compensation makes: "
                      f"{refit['layers']} layers (Gram matrices in {refit['seconds']:.1f} s"
                      + (f"; {refit['skipped']} other layers without one" if refit["skipped"]
                         else "") + ")", markup=False, highlight=False, soft_wrap=True)
    if r.selection and r.selection.get("saved_plan"):
        console.print(f"wrote plan {r.selection['saved_plan']} (reuse it with --plan)",
                      markup=False, highlight=False, soft_wrap=True)
    if r.output:
        console.print(f"wrote {r.output}", markup=False, highlight=False, soft_wrap=True)
    if r.report:
        console.print(f"wrote report {r.report}", markup=False, highlight=False, soft_wrap=True)
