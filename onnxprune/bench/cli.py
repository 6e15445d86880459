"""``onnxprune bench``: measure models on onnxruntime execution providers.

``add_parser(subparsers)`` registers the command; ``cmd_bench(args, console)`` runs it and
returns the exit code. Like the other commands it raises ``OnnxPruneError`` for the user's
errors, which ``onnxprune.cli.main`` turns into one line and the documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ..errors import EXIT_OK, OutputError, UsageError
from .providers import PROVIDERS
from .remote import parse
from .render import markdown, plot, print_table
from .runner import DEFAULT_SECONDS, Progress, run_bench

DEFAULT_WARMUP = 10


def _provider_list(text: str) -> list[str]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in PROVIDERS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"unknown provider {(bad or [text])[0]!r}; choose from {', '.join(PROVIDERS)}")
    return names


def _positive(cast: Callable[[str], float], zero_ok: bool = False):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero_ok else '> 0'}: {text}")
        return value
    return parse


def _batch_list(text: str) -> list[int]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,8,32, got {text!r}")
    return [_positive(int)(s) for s in items]


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.lower().split("x")]
    except ValueError:
        shape = []
    if not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=DxDx..., e.g. input_ids=1x128")
    return name, shape


def _host(text: str) -> str:
    try:
        parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the subparsers of the ``onnxprune`` parser."""
    b = subparsers.add_parser(
        "bench", help="measure latency, throughput and memory on onnxruntime providers",
        description="Measure models side by side on onnxruntime execution providers. The "
                    "first model is the original; the others are compared with it (speedup, "
                    "MAC reduction, efficiency). Models are run alternately, round by round.",
    )
    b.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                   help=".onnx files; the first is the original the others are compared with")
    b.add_argument("--provider", type=_provider_list, default=["cpu"],
                   help="execution providers, comma separated: cpu,cuda,tensorrt (default cpu); "
                        "an unavailable one is skipped when several are given")
    b.add_argument("--batch", type=_batch_list, default=[1], metavar="B[,B...]",
                   help="batch sizes, comma separated, e.g. 1,8,32 (default 1)")
    b.add_argument("--threads", type=_positive(int), metavar="N",
                   help="intra-op threads per session (default: onnxruntime's choice)")
    b.add_argument("--warmup", type=_positive(int, zero_ok=True), default=DEFAULT_WARMUP,
                   metavar="N", help=f"untimed rounds before measuring (default {DEFAULT_WARMUP})")
    budget = b.add_mutually_exclusive_group()
    budget.add_argument("--repeat", type=_positive(int), metavar="N",
                        help="timed runs per model/provider/batch")
    budget.add_argument("--seconds", type=_positive(float), metavar="S",
                        help="time per model/provider/batch, in seconds "
                             f"(default {DEFAULT_SECONDS:g})")
    b.add_argument("--input-shape", type=_input_shape, action="append", metavar="NAME=DxD...",
                   help="shape of an input with dynamic non-batch dimensions; its first "
                        "dimension is replaced by the batch when that is dynamic (repeatable; "
                        "without it, sizes are chosen as prune's verification chooses them)")
    b.add_argument("--input-value", action="append", metavar="NAME=VALUE",
                   help="pin an input to a value, e.g. sr=16000 (repeatable)")
    b.add_argument("--host", type=_host, metavar="USER@HOST[:PORT]",
                   help="measure on that device over SSH (it needs Python with numpy and "
                        "onnxruntime; a script and the models are copied into a temporary "
                        "folder there, removed after; host memory is not measured there)")
    b.add_argument("--json", type=Path, metavar="FILE",
                   help="write the results as JSON ('-': print them instead of the table)")
    b.add_argument("--plot", type=Path, metavar="FILE",
                   help="write latency vs batch and speedup vs MAC reduction (PNG, SVG, PDF)")
    b.add_argument("--markdown", type=Path, metavar="FILE",
                   help="write the results as a Markdown table")
    b.set_defaults(func=cmd_bench)
    return b


def _check_outputs(args) -> None:
    """Fail before measuring, not after, when an output cannot be written."""
    inputs = {p.resolve() for p in args.models}
    for flag in ("json", "plot", "markdown"):
        path = getattr(args, flag)
        if path is None or str(path) == "-":
            continue
        if not path.parent.is_dir():
            raise OutputError(f"--{flag} {path}: folder {path.parent} does not exist")
        if path.resolve() in inputs:
            raise OutputError(f"--{flag} {path}: would overwrite an input model")
    if args.plot is not None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'onnxprune[bench]'") from None
        kinds = FigureCanvasAgg.get_supported_filetypes()
        if args.plot.suffix.lstrip(".").lower() not in kinds:
            raise UsageError(f"--plot {args.plot}: unknown image type; use one of "
                             f"{', '.join(sorted(kinds))}")


def _describe(p: Progress) -> str:
    head = f"bench {p.provider}, batch {p.batch}"
    if p.phase == "session":
        return f"{head}: creating session for {p.model}"
    of = f"/{p.rounds}" if p.rounds else ""
    return f"{head}: {p.phase} round {p.round}{of} (models alternate)"


@contextlib.contextmanager
def _progress(err: Console, models: list[str]):
    """A spinner naming provider, batch, phase and round; one line per provider/batch."""
    seen: set[tuple[str, int]] = set()
    with err.status("bench: loading models...") as status:
        def update(p: Progress) -> None:
            if (p.provider, p.batch) not in seen:
                seen.add((p.provider, p.batch))
                err.print(f"measuring {p.provider}, batch {p.batch}: {', '.join(models)}",
                          markup=False, highlight=False, soft_wrap=True)
            status.update(_describe(p))
        yield update


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e


def cmd_bench(args, console: Console) -> int:
    _check_outputs(args)
    err = Console(stderr=True)

    def notice(message: str) -> None:
        err.print(f"onnxprune: {message}", markup=False, highlight=False, soft_wrap=True)

    with _progress(err, [p.name for p in args.models]) as progress:
        report = run_bench(
            args.models, providers=args.provider, batches=args.batch, threads=args.threads,
            warmup=args.warmup, repeat=args.repeat, seconds=args.seconds,
            input_shapes=dict(args.input_shape or []), input_values=args.input_value,
            progress=progress, notice=notice, host=args.host,
        )
    data = json.dumps(report.to_json(), indent=2)
    if args.json is not None and str(args.json) == "-":
        print(data)
    else:
        print_table(report, console)
    if args.json is not None and str(args.json) != "-":
        _write(args.json, data + "\n")
    if args.markdown is not None:
        _write(args.markdown, markdown(report))
    if args.plot is not None:
        try:
            plot(report, Path(args.plot))
        except OSError as e:
            raise OutputError(f"{args.plot}: cannot write ({e.strerror or e})") from e
    for flag in ("json", "markdown", "plot"):
        path = getattr(args, flag)
        if path is not None and str(path) != "-":
            err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK
