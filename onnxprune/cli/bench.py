"""``onnxprune bench``: measure models on onnxruntime execution providers.

``add_parser(subparsers)`` registers the command, its flags made from the option schema
(``bench/options.py``) as prune's are from its passes'; ``cmd_bench(args, console)`` runs it
and returns the exit code. Like the other commands it raises ``OnnxPruneError`` for the user's
errors, which ``onnxprune.cli.main`` turns into one line and the documented exit code (an
option's error names its flag).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from rich.console import Console

from ..bench.options import OPTIONS, OWNER, bench_values
from ..bench.render import markdown, plot, print_table
from ..bench.runner import Progress, run_bench
from ..errors import EXIT_OK, OutputError, UsageError
from .flags import add_flags, given

OWNED = [(OWNER, o) for o in OPTIONS]


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
    add_flags(b, OWNED)
    b.set_defaults(func=cmd_bench)
    return b


def _check_outputs(models: list[Path], values: dict) -> None:
    """Fail before measuring, not after, when an output cannot be written."""
    inputs = {p.resolve() for p in models}
    for flag in ("json", "plot", "markdown"):
        path = values[flag]
        if path is None or str(path) == "-":
            continue
        if not path.parent.is_dir():
            raise OutputError(f"--{flag} {path}: folder {path.parent} does not exist")
        if path.resolve() in inputs:
            raise OutputError(f"--{flag} {path}: would overwrite an input model")
    if values["plot"] is not None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'onnxprune[bench]'") from None
        kinds = FigureCanvasAgg.get_supported_filetypes()
        if values["plot"].suffix.lstrip(".").lower() not in kinds:
            raise UsageError(f"--plot {values['plot']}: unknown image type; use one of "
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
    v = bench_values(given(args, OWNED))
    _check_outputs(args.models, v)
    err = Console(stderr=True)

    def notice(message: str) -> None:
        err.print(f"onnxprune: {message}", markup=False, highlight=False, soft_wrap=True)

    with _progress(err, [p.name for p in args.models]) as progress:
        report = run_bench(
            args.models, providers=v["providers"], batches=v["batches"], threads=v["threads"],
            warmup=v["warmup"], repeat=v["repeat"], seconds=v["seconds"],
            input_shapes=v["input_shapes"] or {}, input_values=v["input_values"],
            progress=progress, notice=notice, host=v["host"],
        )
    data = json.dumps(report.to_json(), indent=2)
    printed = v["json"] is not None and str(v["json"]) == "-"
    if printed:
        print(data)
    else:
        print_table(report, console)
    if v["json"] is not None and not printed:
        _write(v["json"], data + "\n")
    if v["markdown"] is not None:
        _write(v["markdown"], markdown(report))
    if v["plot"] is not None:
        try:
            plot(report, Path(v["plot"]))
        except OSError as e:
            raise OutputError(f"{v['plot']}: cannot write ({e.strerror or e})") from e
    for flag in ("json", "markdown", "plot"):
        path = v[flag]
        if path is not None and str(path) != "-":
            err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK
