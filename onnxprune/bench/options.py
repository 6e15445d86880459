"""``onnxprune bench``'s options in the option schema (``onnxprune.options``): the flags, their
help, types and checks are these, as prune's are its passes' options; ``run_bench``'s keywords
take the same values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..options import Option, OptionError, number, path, resolve, shapes, texts
from .providers import PROVIDERS
from .remote import parse as parse_host
from .runner import DEFAULT_SECONDS

OWNER = "bench"
DEFAULT_WARMUP = 10


def providers(value: Any) -> list[str]:
    names = [s.strip().lower() for s in (value.split(",") if isinstance(value, str)
                                         else texts(value)) if s.strip()]
    bad = [n for n in names if n not in PROVIDERS]
    if not names or bad:
        raise ValueError(f"unknown provider {(bad or [value])[0]!r}; choose from "
                         f"{', '.join(PROVIDERS)}")
    return names


def batches(value: Any) -> list[int]:
    items = ([s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str)
             else list(value) if isinstance(value, (list, tuple)) else [value])
    if not items:
        raise ValueError(f"expected batch sizes such as 1,8,32, got {value!r}")
    return [number(1, integer=True)(s) for s in items]


def host(value: Any) -> str:
    parse_host(str(value))  # USER@HOST[:PORT], or ValueError
    return str(value).strip()


def output(value: Any) -> Path | str:
    """A file to write, or '-' (print)."""
    return "-" if str(value) == "-" else path(value)


OPTIONS: tuple[Option, ...] = (
    Option("providers", ["cpu"], "execution providers, comma separated: cpu,cuda,tensorrt; an "
           "unavailable one is skipped when several are given", parse=providers,
           public="providers", flag="--provider", metavar="PROVIDER", type_name="list"),
    Option("batches", [1], "batch sizes, comma separated, e.g. 1,8,32", parse=batches,
           public="batches", flag="--batch", metavar="B[,B...]", type_name="list"),
    Option("threads", None, "intra-op threads per session (default: onnxruntime's choice)",
           parse=number(1, integer=True), public="threads", metavar="N", type_name="int"),
    Option("warmup", DEFAULT_WARMUP, "untimed rounds before measuring",
           parse=number(0, integer=True), public="warmup", metavar="N", type_name="int"),
    Option("repeat", None, "timed runs per model/provider/batch (instead of --seconds)",
           parse=number(1, integer=True), public="repeat", metavar="N", type_name="int"),
    Option("seconds", None, f"time per model/provider/batch, in seconds (default "
           f"{DEFAULT_SECONDS:g}; instead of --repeat)", parse=number(0, lo_open=True),
           public="seconds", metavar="S", type_name="float"),
    Option("input_shapes", None, "shape of an input with dynamic non-batch dimensions; its "
           "first dimension is replaced by the batch when that is dynamic (repeatable; "
           "without it, sizes are chosen as prune's verification chooses them)", parse=shapes,
           public="input_shapes", flag="--input-shape", metavar="NAME=DxD...", kind="append",
           type_name="shapes"),
    Option("input_values", None, "pin an input to a value, e.g. sr=16000 (repeatable)",
           parse=texts, public="input_values", flag="--input-value", metavar="NAME=VALUE",
           kind="append", type_name="values"),
    Option("host", None, "measure on that device over SSH (it needs Python with numpy and "
           "onnxruntime; a script and the models are copied into a temporary folder there, "
           "removed after; host memory is not measured there)", parse=host, public="host",
           metavar="USER@HOST[:PORT]", type_name="str"),
    Option("json", None, "write the results as JSON to FILE; given alone (or '-'): print them "
           "instead of the table, as prune --json does", parse=output, public="json",
           metavar="FILE", bare="-", type_name="path"),
    Option("plot", None, "write latency vs batch and speedup vs MAC reduction (PNG, SVG, PDF)",
           parse=path, public="plot", metavar="FILE", type_name="path"),
    Option("markdown", None, "write the results as a Markdown table", parse=path,
           public="markdown", metavar="FILE", type_name="path"),
)


def bench_values(given: dict[str, Any]) -> dict[str, Any]:
    """Every option's value (the given ones checked and converted, the rest defaults);
    ``--repeat`` and ``--seconds`` exclude each other."""
    values = resolve(OWNER, OPTIONS, (), {o.name: given[o.public] for o in OPTIONS
                                          if o.public in given})
    if values["repeat"] is not None and values["seconds"] is not None:
        raise OptionError(OWNER, "seconds", "give --repeat or --seconds, not both")
    return values
