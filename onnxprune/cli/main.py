"""Command line: ``onnxprune analyze | prune | demo``. A thin layer over ``onnxprune.api``."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from rich.console import Console

from .. import __version__, interrupts, progress
from ..ir import io
from ..errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    OnnxPruneError,
    OnnxPruneWarning,
    UsageError,
)
from ..ir.runtime import resolve_providers


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _shapes(items: list[str] | None) -> dict[str, list[int]] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            out[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise UsageError(f"--input-shape {item!r}: expected NAME=DxDx..., e.g. input=1x3x224x224") from None
    return out


_CURRENT: dict[str, str | None] = {"pass": None}  # the running pass, for interrupts
WARNINGS: list[str] = []  # the run's warnings, in order (also in --json output)


@contextlib.contextmanager
def _warnings_to(err: Console):
    """onnxprune's warnings as one line each on stderr, each said once; others as usual."""
    WARNINGS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", OnnxPruneWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, OnnxPruneWarning):
                return shown(message, category, filename, lineno, file, line)
            if str(message) not in WARNINGS:
                WARNINGS.append(str(message))
                err.print(f"onnxprune: warning: {message}", markup=False, highlight=False,
                          soft_wrap=True)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _status(what: str, quiet: bool = False):
    """Progress on stderr while ``what`` runs: a spinner naming the pass and rich bars on a
    terminal; a line every few seconds when stderr is a file or a pipe; nothing with
    ``--quiet``. Yields the callback passes report their names to."""
    mode = "off" if quiet else ("bars" if sys.stderr.isatty() else "lines")
    progress.enable(mode)

    def named(name: str) -> None:
        _CURRENT["pass"] = name
        progress.set_pass(name)

    try:
        if mode != "bars":
            with progress.heartbeat():
                yield named
            return
        with Console(stderr=True).status(f"{what}...") as status:
            def update(name: str) -> None:
                named(name)
                status.update(f"{what}: {name}...")

            yield update
    finally:
        progress.enable("off")


def cmd_analyze(args, console: Console) -> int:
    from ..api import analyze
    from .report import analysis_json, print_analysis

    with _status("analyzing", args.quiet) as named:
        result = analyze(args.model, exclude=args.exclude or (), components=args.components,
                         scope_depth=args.scope_depth, flow_policy=args.flow_policy,
                         progress=named)
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
    from .report import print_prune, prune_json

    providers, shapes = resolve_providers(args.provider), _shapes(args.input_shape)
    with _status("pruning", args.quiet) as named:
        result = prune(
            args.model, args.output, ratio=args.ratio, criterion=args.criterion,
            reduce=args.reduce, strategy=args.strategy, target_params=args.target_params,
            target_macs=args.target_macs, constraint=args.constraint, tolerance=args.tolerance,
            soft_method=args.soft_method, round_to=args.round_to, min_width=args.min_width,
            max_ratio=args.max_ratio, normalize=args.normalize, calib=args.calib,
            calib_random=args.calib_random, metric=args.metric, exclude=args.exclude or (),
            providers=providers, force=args.force, input_shapes=shapes, progress=named,
            components=args.components, scope_depth=args.scope_depth,
            flow_policy=args.flow_policy, compensate=args.compensate, ridge=args.ridge,
            executor=args.executor, workers=args.workers, ray_address=args.ray_address,
            recover=args.recover, distill={
                "steps": args.distill_steps, "lr": args.distill_lr,
                "batch_size": args.distill_batch, "val_fraction": args.distill_val,
                "patience": args.distill_patience, "boundaries": args.distill_boundaries},
        )
    report = None
    if args.bench:
        from ..bench.runner import run_bench

        report = run_bench([args.model, args.output], providers=args.provider.split(","),
                           batches=[int(b) for b in args.bench_batch.split(",")],
                           seconds=args.bench_seconds, input_shapes=shapes)
    if args.json:
        data = prune_json(result, str(args.model))
        if report is not None:
            data["bench"] = report.to_json()
        print(json.dumps({**data, "warnings": list(WARNINGS)}, indent=2))
    else:
        print_prune(console, result, str(args.model))
        if report is not None:
            report.print_table(console)
    return EXIT_OK


def cmd_passes(args, console: Console) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..pipeline.recipes import CATALOGUE, options

    table = Table(title=escape("passes (in recipes: [[pass]] name = ...)"), title_justify="left")
    for col in ("pass", "options (default)", "what it does"):
        table.add_column(col)
    for name, cls in CATALOGUE.items():
        opts = ", ".join(f"{k}" if v is inspect.Parameter.empty else f"{k}={v!r}"
                         for k, v in options(cls).items())
        table.add_row(name, opts or "-", cls.description)
    console.print(table)
    return EXIT_OK


def cmd_run(args, console: Console) -> int:
    from ..api import result_of
    from ..pipeline.core import Context, Pipeline
    from ..pipeline.passes import Calibrate, LoadModel, WriteModel
    from ..pipeline.recipes import load_recipe, parse_sets
    from .report import print_prune, prune_json

    recipe = load_recipe(args.recipe)
    steps = recipe.build(parse_sets(args.set))
    if args.calib or args.calib_random:
        at = next((i + 1 for i, p in enumerate(steps) if p.name == "normalize"), 0)
        steps.insert(at, Calibrate(args.calib, args.calib_random))
    ctx = Context()
    with _status(f"running {recipe.path.stem}", args.quiet) as named:
        ctx.progress = named
        Pipeline([LoadModel(args.model), *steps, WriteModel(args.output, force=args.force)])(ctx)
    result = result_of(ctx)
    if args.json:
        print(json.dumps({**prune_json(result, str(args.model)), "warnings": list(WARNINGS)},
                         indent=2))
    else:
        print_prune(console, result, str(args.model))
    return EXIT_OK


def cmd_demo(args, console: Console) -> int:
    import onnx

    from ..api import prune
    from ..zoo.builder import demo_cnn
    from .report import print_prune

    if not 0.0 <= args.ratio < 1.0:
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio:g}")
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="onnxprune-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "demo_cnn.onnx"
    onnx.save(demo_cnn(), str(src))
    console.print(f"built {src}: a small CNN (BN, residual add, concat, depthwise conv, flatten)")
    result = prune(src, out_dir / "demo_cnn.pruned.onnx", ratio=args.ratio)
    print_prune(console, result, str(src))
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
    with _status(f"exporting {args.name}", args.quiet):
        out = export_model(args.name, args.output, seed=args.seed, train=args.train,
                           epochs=args.epochs)
    console.print(f"wrote {out}")
    return EXIT_OK


def cmd_data(args, console: Console) -> int:
    from ..zoo.catalog import write_digits

    out, n = write_digits(args.output, split=args.split, count=args.count,
                          input_name=args.input_name, seed=args.seed)
    console.print(f"wrote {out}: {n} samples under {args.input_name!r}, labels under 'labels'")
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

    d = sub.add_parser("data", help="write example calibration data (.npz)")
    d.add_argument("dataset", choices=("digits",),
                   help="digits: scikit-learn's digits as 1x28x28 images with labels")
    d.add_argument("-o", "--output", type=Path, required=True, help="the .npz file to write")
    d.add_argument("--split", choices=("train", "test"), default="train",
                   help="the stratified split (default train; test for held-out checks)")
    d.add_argument("--count", type=int, metavar="N", help="the first N samples (default all)")
    d.add_argument("--input-name", default="input",
                   help="the array's key: the model input it feeds (default 'input', as the "
                        "zoo's digit models name it)")
    d.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    d.set_defaults(func=cmd_data)


def _quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (errors and warnings still print); without it, "
                        "progress shows as bars on a terminal and as a line every 10 s otherwise")


def _component_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--components", default="none", metavar="auto|none|FILE",
                   help="split the model into components: 'auto' from node name scopes, a TOML "
                        "map, or 'none' (default: one component)")
    p.add_argument("--scope-depth", type=int, metavar="N",
                   help="name-scope depth that defines components with --components auto "
                        "(default: the first depth giving two or more)")
    p.add_argument("--flow-policy", choices=("own", "freeze", "couple"), default="own",
                   help="tensors crossing components: 'own' gives each side its own channels, "
                        "cut only where both agree (default); 'freeze' keeps them; 'couple' "
                        "groups across components like a plain dependency graph")


from ..bench.cli import add_parser as add_bench_parser  # noqa: E402
from ..pipeline.passes import STRATEGIES  # noqa: E402
from ..scoring import CRITERIA  # noqa: E402


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
    a.add_argument("--exclude", action="append", metavar="GLOB",
                   help="freeze every channel touching nodes whose name matches (repeatable)")
    _component_flags(a)
    a.add_argument("--graph", type=Path, metavar="FILE",
                   help="draw the graph coloured by component (.dot, .svg or .png)")
    a.set_defaults(func=cmd_analyze)

    r = sub.add_parser("prune", help="remove channels, verify, and write the smaller model")
    r.add_argument("model", type=Path, help="input .onnx file (never modified)")
    r.add_argument("-o", "--output", type=Path, required=True, help="where to write the pruned model")
    r.add_argument("--ratio", default="0.5", metavar="R|NAME=R,...",
                   help="fraction of channels removed from every prunable group (default 0.5), "
                        "or per component: '*=0.5,pi=0' ('*' is every other component)")
    r.add_argument("--criterion", choices=CRITERIA, default="l2",
                   help="channel importance: l1/l2 weight magnitude, bn (BatchNorm scale), lamp, "
                        "fpgm, activation (mean |a|), apoz, taylor or metric (drop in --metric "
                        "when the channel is closed); the last four need calibration data "
                        "(default l2)")
    r.add_argument("--reduce", choices=("mean", "sum", "max"), default="mean",
                   help="how a channel's scores over the group's layers combine (default mean)")
    r.add_argument("--strategy", choices=STRATEGIES, default="uniform",
                   help="how many channels each group loses: uniform (--ratio everywhere), "
                        "global (one threshold over normalized scores), sensitivity (per-group "
                        "metric curves), soft (optimised per-group coefficients) (default uniform)")
    r.add_argument("--target-params", type=float, metavar="F",
                   help="remove fraction F of the parameters (strategies other than uniform "
                        "default to what uniform --ratio would remove)")
    r.add_argument("--target-macs", type=float, metavar="F", help="remove fraction F of the MACs")
    r.add_argument("--constraint", metavar="METRIC>=V",
                   help="with --strategy sensitivity: the largest cut that keeps e.g. 'psnr>=20' "
                        "on the calibration data")
    r.add_argument("--tolerance", type=float, default=0.02,
                   help="how close soft coefficients must bring the reduction to the target "
                        "(default 0.02)")
    r.add_argument("--soft-method", choices=("gradient", "grid"), default="gradient",
                   help="optimiser for --strategy soft (default gradient)")
    r.add_argument("--max-ratio", type=float, default=0.9,
                   help="the most any group may lose under global/sensitivity/soft (default 0.9)")
    r.add_argument("--normalize", choices=("mean", "max", "sum", "none"), default="mean",
                   help="per-group score normalization for --strategy global (default mean)")
    r.add_argument("--calib", metavar="FILE.npz",
                   help="calibration data: arrays keyed by model input name, batch first "
                        "(plus 'labels' for --metric accuracy)")
    r.add_argument("--calib-random", type=int, metavar="N",
                   help="N random calibration samples from the input shapes (no file needed)")
    r.add_argument("--metric", metavar="NAME",
                   help="application metric: psnr, mse, accuracy, cosine, kl or module:function "
                        "(default cosine: agreement with the original outputs)")
    r.add_argument("--executor", choices=("local", "process", "ray"), default="local",
                   help="where search candidates are scored: this process (default), a local "
                        "process pool, or Ray workers (pip install onnxprune[ray])")
    r.add_argument("--workers", type=int, metavar="N",
                   help="workers for --executor process/ray (default: the CPUs available)")
    r.add_argument("--ray-address", metavar="ADDR",
                   help="a Ray cluster to join (default: start a local Ray)")
    r.add_argument("--compensate", action="store_true",
                   help="after removal, refit every layer that lost inputs so it reproduces the "
                        "original on the calibration data (least squares, bias compensation)")
    r.add_argument("--ridge", type=float, default=1e-3,
                   help="ridge regularisation of --compensate, relative to the mean input "
                        "energy (default 1e-3)")
    r.add_argument("--recover", choices=("none", "distill"), default="none",
                   help="'distill': fine-tune the remaining weights on the original model's "
                        "outputs over the calibration data (needs torch)")
    r.add_argument("--distill-steps", type=int, default=300, metavar="N",
                   help="optimizer steps of --recover distill (default 300)")
    r.add_argument("--distill-lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    r.add_argument("--distill-batch", type=int, default=32, help="batch size (default 32)")
    r.add_argument("--distill-val", type=float, default=0.2, metavar="F",
                   help="fraction of the calibration data held out for validation and early "
                        "stopping (default 0.2)")
    r.add_argument("--distill-patience", type=int, default=5,
                   help="validations without improvement before stopping (default 5)")
    r.add_argument("--distill-boundaries", action="store_true",
                   help="also match the activations at component boundaries (with --components)")
    r.add_argument("--round-to", type=_round_to, default=1, metavar="N|auto",
                   help="keep a multiple of N channels in every group (default 1); 'auto' "
                        "measures how the main layer's latency steps with its width on the "
                        "first --provider and picks the largest multiple that costs no time")
    r.add_argument("--min-width", type=int, default=1, metavar="N",
                   help="never keep fewer than N channels in a group (default 1)")
    r.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave nodes whose name matches untouched (repeatable)")
    r.add_argument("--provider", default="cpu",
                   help="execution providers to verify on, comma separated: cpu,cuda,tensorrt (default cpu)")
    r.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="shape for an input with dynamic dimensions, used by verification")
    r.add_argument("--force", action="store_true", help="allow the output to replace the input file")
    r.add_argument("--bench", action="store_true",
                   help="measure the original and the pruned model side by side afterwards")
    r.add_argument("--bench-batch", default="1", metavar="B,...",
                   help="batch sizes for --bench (default 1)")
    r.add_argument("--bench-seconds", type=float, default=3.0, metavar="S",
                   help="seconds per model and batch for --bench (default 3)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _quiet_flag(r)
    _component_flags(r)
    r.set_defaults(func=cmd_prune)

    n = sub.add_parser("run", help="run a pipeline recipe (TOML) on a model")
    n.add_argument("recipe", help="a recipe file, or the name of one in passes/ "
                                  "(magnitude-uniform, component-aware, application-soft, ...)")
    n.add_argument("model", type=Path, help="input .onnx file (never modified)")
    n.add_argument("-o", "--output", type=Path, required=True, help="where to write the result")
    n.add_argument("--calib", metavar="FILE.npz", help="calibration data for recipes that need it")
    n.add_argument("--calib-random", type=int, metavar="N",
                   help="N random calibration samples from the model's input shapes")
    n.add_argument("--set", action="append", metavar="PASS.OPTION=VALUE",
                   help="override a recipe option, e.g. --set select.ratio=0.3 (repeatable)")
    n.add_argument("--force", action="store_true", help="allow the output to replace the input")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _quiet_flag(n)
    n.set_defaults(func=cmd_run)

    add_bench_parser(sub)
    _add_example_parsers(sub)

    ps = sub.add_parser("passes", help="list every pass with its options")
    ps.set_defaults(func=cmd_passes)

    d = sub.add_parser("demo", help="build a small CNN in code, prune it and show before/after")
    d.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed (default 0.5)")
    d.add_argument("--out-dir", type=Path, help="folder for the demo models (default: a temp folder)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None, *, keep_handlers: bool = False) -> int:
    """Run one command; returns its exit code. ``keep_handlers``: see ``interrupts.guarded``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False)
    err = Console(stderr=True)
    io.written.clear()
    with interrupts.guarded(keep=keep_handlers), _warnings_to(err):
        try:
            code = args.func(args, console)
            interrupts.check()
            return code
        except KeyboardInterrupt as e:
            return _interrupted(err, e)
        except Exception as e:
            if interrupts.pending() is not None:  # the interrupt surfaced as another error
                return _interrupted(err, e)
            return _failed(err, e, args.debug)


def _interrupted(err: Console, e: BaseException) -> int:
    where = f" during pass {_CURRENT['pass']}" if _CURRENT["pass"] else ""
    signum = interrupts.pending() or getattr(e, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    done = ("; " + ", ".join(map(str, io.written)) + " had been written before"
            if io.written else "; nothing was written")
    err.print(f"onnxprune: interrupted ({name}){where}{done}", markup=False, highlight=False,
              soft_wrap=True)
    return 128 + signum


def _failed(err: Console, e: Exception, debug: bool) -> int:
    """One line for the user (a traceback with --debug); the exit code of the error's kind."""
    if debug:
        traceback.print_exc()
    if isinstance(e, OnnxPruneError):
        err.print(f"onnxprune: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    err.print(f"onnxprune: internal error: {type(e).__name__}: {first} (rerun with --debug)",
              markup=False, highlight=False, soft_wrap=True)
    return EXIT_INTERNAL


if __name__ == "__main__":
    from ..__main__ import entry

    entry()
