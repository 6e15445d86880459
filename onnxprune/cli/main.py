"""Command line: ``onnxprune analyze | prune | demo``. A thin layer over ``onnxprune.api``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .. import __version__, interrupts
from ..errors import (
    EXIT_OK,
    UsageError,
)
from ..ir import io
from ..ir.runtime import resolve_providers
from .flags import (
    BENCH,
    MORE_FLAGS,
    add_flags,
    debug_everywhere,
    from_sets,
    given,
    group,
    hide,
    output_flags,
)
from .flags import quiet_flag as _quiet_flag
from .flags import verbose_flag as _verbose_flag
from .outcome import failed as _failed
from .outcome import interrupted as _interrupted
from .status import WARNINGS, status, warnings_to


def cmd_analyze(args, console: Console) -> int:
    from ..api import analyze
    from .report import analysis_json, print_analysis

    values = given(args, ANALYZE_FLAGS)
    with status("analyzing", args.quiet) as named:
        result = analyze(args.model, exclude=values.get("exclude", ()),
                         components=values.get("components", "none"),
                         scope_depth=values.get("scope_depth"),
                         flow_policy=values.get("flow_policy", "own"),
                         input_values=values.get("input_values"),
                         input_shapes=values.get("input_shapes"),
                         prune_kv_cache=values.get("prune_kv_cache", False),
                         calib=_calib_options(values), progress=named)
    if args.graph:
        from ..analysis.components import single
        from .draw import draw

        draw(result.graph, result.components or single(result.graph), args.graph)
    if args.json:
        print(json.dumps({**analysis_json(result, str(args.model)), "warnings": list(WARNINGS)},
                         indent=2))
    else:
        print_analysis(console, result, str(args.model))
    return EXIT_OK


def cmd_prune(args, console: Console) -> int:
    from ..api import prune
    from ..options import shapes
    from .report import print_prune, prune_json

    started = time.perf_counter()
    values = from_sets(args.set, prune_flags(), given(args, prune_flags()))
    bench_providers = values.get("providers", "cpu")
    values["providers"] = resolve_providers(bench_providers)  # before any work
    later = None  # a report that waits for the benchmark
    if "report" in values:
        values["report_command"] = _command(args)
        if args.bench:
            from ..pipeline.passes import Report

            later = Report(values.pop("report"), command=values.pop("report_command"))
            later.preflight(None)
            later.check_model(values["output"])
    with status("pruning", args.quiet) as named:
        result = prune(args.model, progress=named, **values)
    report = None
    if args.bench:
        from ..bench.render import print_table
        from ..bench.runner import run_bench

        models, names = [args.model, result.output], None
        if result.float_model is not None:  # original, pruned float, pruned int8
            models.insert(1, result.float_model)
            names = [None, f"{Path(result.output).stem} (float)", None]
        report = run_bench(models, names=names, providers=bench_providers.split(","),
                           batches=_batches(args.bench_batch),
                           seconds=args.bench_seconds,
                           input_shapes=shapes(values["input_shapes"])
                           if values.get("input_shapes") else None,
                           input_values=values.get("input_values"),
                           host=values.get("target_host"))
    if later is not None:
        from ..pipeline.result import report_data
        from ..report import write_report

        data = report_data(result, str(args.model), warnings=WARNINGS, command=later.command,
                           bench=report.to_json())
        data["wall_seconds"] = time.perf_counter() - started
        result = dataclasses.replace(result, report=write_report(later.folder, data))
    if args.json:
        data = prune_json(result, str(args.model))
        if report is not None:
            data["bench"] = report.to_json()
        print(json.dumps({**data, "warnings": list(WARNINGS)}, indent=2))
    else:
        print_prune(console, result, str(args.model), args.verbose,
                    time.perf_counter() - started)
        if report is not None:
            print_table(report, console)
            line = latency_check(result, report)
            if line:
                console.print(line, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def latency_check(result, report) -> str | None:
    """With a latency target and --bench at its batch: what the bench measures beside what
    the selection measured (the same ratio, measured again)."""
    lat = (result.selection or {}).get("latency")
    if not lat or not lat.get("achieved"):
        return None
    rows = {r.model: r for r in report.rows if r.batch == lat["batch"]}
    original, pruned = rows.get(report.models[0]), rows.get(report.models[-1])
    if original is None or pruned is None:
        return None
    return (f"latency target {lat['asked']}: the bench measures {pruned.p50 / original.p50:.3g} "
            f"of the original's p50 at batch {lat['batch']} (the selection measured "
            f"{lat['achieved']:.3g})")


def _calib_options(values: dict) -> dict | None:
    """The calibration options given to analyze, by their pass option names."""
    from ..pipeline.passes import Calibrate

    out = {o.name: values[o.public] for o in Calibrate.options if o.public in values}
    return out or None


def _batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise UsageError(f"--bench-batch: {text!r}: expected batch sizes such as 1,32")
    return batches


def _command(args) -> str:
    """The command line that reproduces this run, as typed."""
    return shlex.join(["onnxprune", *args.argv])


def cmd_passes(args, console: Console) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..options import describe
    from ..pipeline import RUN_OPTIONS
    from ..pipeline.passes import CATALOGUE

    table = Table(title=escape("passes (in recipes: [[pass]] name = ..., options beside it)"),
                  title_justify="left")
    for col in ("pass", "options (default, type or choices)", "what it does"):
        table.add_column(col)
    for name, cls in CATALOGUE.items():
        opts = "\n".join(describe(o) for o in cls.options)
        table.add_row(name, opts or "-", cls.description)
    console.print(table)
    run = Table(title="run settings (onnxprune prune/run flags, prune() keywords)",
                title_justify="left")
    for col in ("setting", "flag", "what it does"):
        run.add_column(col)
    for o in RUN_OPTIONS:
        run.add_row(describe(o), o.cli_flag() or "-", o.help)
    console.print(run)
    return EXIT_OK


def cmd_run(args, console: Console) -> int:
    from ..api import result_of
    from ..pipeline import Context, RunConfig
    from ..pipeline.build import recipe_pipeline
    from ..pipeline.recipes import load_recipe, parse_sets
    from .report import print_prune, prune_json

    values = given(args, RUN_FLAGS)
    config = RunConfig.of(**{k: values.pop(k) for k in list(values) if k in _RUN_NAMES})
    recipe = load_recipe(args.recipe)
    pipeline = recipe_pipeline(args.model, recipe.build(parse_sets(args.set)), values,
                               _command(args) if "report" in values else None)
    ctx = Context(config=config)
    with status(f"running {recipe.path.stem}", args.quiet) as named:
        ctx.progress = named
        pipeline(ctx)
    result = result_of(ctx)
    if args.json:
        print(json.dumps({**prune_json(result, str(args.model)), "warnings": list(WARNINGS)},
                         indent=2))
    else:
        print_prune(console, result, str(args.model), args.verbose)
    return EXIT_OK


def cmd_demo(args, console: Console) -> int:
    import onnx

    from ..api import prune
    from ..zoo.builder import demo_cnn
    from .report import print_prune

    if not 0.0 <= args.ratio < 1.0:
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio:g}")
    with contextlib.ExitStack() as stack:
        if args.out_dir:
            out_dir = Path(args.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            where = str(out_dir)
        else:  # removed afterwards: --out-dir keeps the files
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="onnxprune-demo-")))
            where = "a temporary folder, removed afterwards (--out-dir DIR keeps the files)"
        src = out_dir / "demo_cnn.onnx"
        onnx.save(demo_cnn(), str(src))
        console.print(f"built demo_cnn.onnx in {where}: a small CNN (BN, residual add, concat, "
                      "depthwise conv, flatten)", markup=False, highlight=False, soft_wrap=True)
        result = prune(src, out_dir / "demo_cnn.pruned.onnx", ratio=args.ratio)
        print_prune(console, result, "demo_cnn.onnx", args.verbose)
    return EXIT_OK


def cmd_zoo(args, console: Console) -> int:
    from rich.table import Table

    from ..zoo.catalog import ENTRIES, export_model

    if args.zoo_command == "list":
        table = Table(title="zoo models (onnxprune zoo export NAME -o FILE)", title_justify="left")
        for col in ("name", "what it is", "needs", "--train"):
            table.add_column(col)
        for e in ENTRIES.values():
            table.add_row(e.name, e.description, e.needs, e.trainable or "-")
        console.print(table)
        return EXIT_OK
    with status(f"exporting {args.name}", args.quiet):
        out = export_model(args.name, args.output, seed=args.seed, train=args.train,
                           epochs=args.epochs)
    console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_data(args, console: Console) -> int:
    from ..zoo.catalog import write_digits

    out, n = write_digits(args.output, split=args.split, count=args.count,
                          input_name=args.input_name, seed=args.seed, fmt=args.format)
    what = ("one folder per class (--calib reads them back, labels included)"
            if args.format == "png" else f"under {args.input_name!r}, labels under 'labels'")
    console.print(f"wrote {out}: {n} samples {what}", markup=False, highlight=False,
                  soft_wrap=True)
    return EXIT_OK


def _add_example_parsers(sub) -> None:
    z = sub.add_parser("zoo", help="write example models (built in code) to .onnx files")
    zsub = z.add_subparsers(dest="zoo_command", required=True, metavar="list|export")
    zl = zsub.add_parser("list", help="the models 'zoo export' can write")
    zl.set_defaults(func=cmd_zoo)
    ze = zsub.add_parser("export", help="write one zoo model")
    ze.add_argument("name", help="a model from 'onnxprune zoo list' (e.g. demo, autoencoder)")
    ze.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    ze.add_argument("--train", action="store_true",
                    help="train it first where the zoo can (autoencoder, classifier, agent)")
    ze.add_argument("--epochs", type=int, metavar="N",
                    help="training length: epochs (seconds for the agent); default 10 (120)")
    ze.add_argument("--seed", type=int, default=0, help="weights and training seed (default 0)")
    _quiet_flag(ze)
    ze.set_defaults(func=cmd_zoo)

    d = sub.add_parser("data", help="write example calibration data (.npz or PNG images)")
    d.add_argument("dataset", choices=("digits",),
                   help="digits: scikit-learn's digits as 1x28x28 images with labels")
    d.add_argument("-o", "--output", type=Path, required=True,
                   help="the .npz file to write (--format png: a new folder)")
    d.add_argument("--format", choices=("npz", "png"), default="npz",
                   help="npz: one array file; png: 8-bit grey images, a sub-folder per class "
                        "(default npz)")
    d.add_argument("--split", choices=("train", "test"), default="train",
                   help="the stratified split (default train; test for held-out checks)")
    d.add_argument("--count", type=int, metavar="N", help="the first N samples (default all)")
    d.add_argument("--input-name", default="input",
                   help="the array's key: the model input it feeds (default 'input', as the "
                        "zoo's digit models name it)")
    d.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    d.set_defaults(func=cmd_data)


def prune_flags():
    from ..pipeline.build import public_options

    return [(owner, o) for owner, o in public_options().values()]


def _flag_sets():
    from ..pipeline import RUN_OPTIONS
    from ..pipeline.build import SWITCHES
    from ..pipeline.passes import AnalyzeChannels, Calibrate, FindComponents, Report, WriteModel

    components = next(o for o in SWITCHES if o.name == "components")
    analyze = [("prune", components), *[(FindComponents.name, o) for o in FindComponents.options],
               *[(AnalyzeChannels.name, o) for o in AnalyzeChannels.options],
               *[("run", o) for o in RUN_OPTIONS if o.name in ("input_values", "input_shapes")],
               *[(Calibrate.name, o) for o in Calibrate.options
                 if o.name not in ("holdout", "probe")]]  # with data: each block's influence
    run = [*[("run", o) for o in RUN_OPTIONS], *[(Calibrate.name, o) for o in Calibrate.options],
           *[(WriteModel.name, o) for o in WriteModel.options],
           *[(Report.name, o) for o in Report.options]]
    return analyze, run, {o.public for o in RUN_OPTIONS}


ANALYZE_FLAGS, RUN_FLAGS, _RUN_NAMES = _flag_sets()


from .bench import add_parser as add_bench_parser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxprune",
        description="Structured pruning of ONNX models, verified against a mask oracle.",
    )
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("analyze", help="show the coupled channel groups of a model")
    a.add_argument("model", type=Path, help="input .onnx file")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _quiet_flag(a)
    add_flags(a, ANALYZE_FLAGS)
    a.add_argument("--graph", type=Path, metavar="FILE",
                   help="draw the graph coloured by component (.dot, .svg or .png)")
    a.set_defaults(func=cmd_analyze)

    r = sub.add_parser("prune", help="remove channels, verify, and write the smaller model",
                       epilog=MORE_FLAGS)
    r.add_argument("model", type=Path, help="input .onnx file (never modified)")
    add_flags(r, prune_flags(), grouped=True)
    bench = group(r, BENCH)
    bench.add_argument("--bench", action="store_true",
                       help="measure the original and the pruned model side by side afterwards "
                            "(with --quantize: original, pruned float and pruned int8)")
    bench.add_argument("--bench-batch", default="1", metavar="B,...",
                       help="batch sizes for --bench (default 1)")
    bench.add_argument("--bench-seconds", type=float, default=3.0, metavar="S", help=hide(
        r, "--bench-seconds", "S", "seconds per model and batch for --bench (default 3)"))
    output_flags(r)
    r.set_defaults(func=cmd_prune)

    n = sub.add_parser("run", help="run a pipeline recipe (TOML) on a model",
                       epilog=MORE_FLAGS)
    n.add_argument("recipe", help="a recipe file, or the name of one in passes/ "
                                  "(magnitude-uniform, component-aware, application-soft, ...)")
    n.add_argument("model", type=Path, help="input .onnx file (never modified)")
    add_flags(n, RUN_FLAGS, grouped=True)
    output_flags(n, recipe=True)
    n.set_defaults(func=cmd_run)

    add_bench_parser(sub)
    _add_example_parsers(sub)

    ps = sub.add_parser("passes", help="list every pass with its options")
    ps.set_defaults(func=cmd_passes)

    d = sub.add_parser("demo", help="build a small CNN in code, prune it and show before/after")
    d.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed (default 0.5)")
    d.add_argument("--out-dir", type=Path, help="folder for the demo models (default: a temp folder)")
    _verbose_flag(d)
    d.set_defaults(func=cmd_demo)
    debug_everywhere(p)
    return p


PIPED_WIDTH = 10_000


def main(argv: list[str] | None = None, *, keep_handlers: bool = False) -> int:
    """Run one command; returns its exit code. ``keep_handlers``: see ``interrupts.guarded``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # piped or redirected: tables at their natural width (names whole), not cut to 80 columns
    console = Console(stderr=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
    err = Console(stderr=True)
    io.written.clear()
    with interrupts.guarded(keep=keep_handlers), warnings_to(err):
        try:
            code = args.func(args, console)
            interrupts.check()
            return code
        except KeyboardInterrupt as e:
            return _interrupted(err, e)
        except Exception as e:
            if interrupts.pending() is not None:  # the interrupt surfaced as another error
                return _interrupted(err, e)
            return _failed(err, e, args)
