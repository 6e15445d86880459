"""Command-line flags derived from the option schema, and errors translated back to them.

The one place where options meet flags: ``select.round_to`` is ``--round-to`` on the command
line, and an error about it names the flag there (and the option everywhere else)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ..options import REQUIRED, Option, OptionError

Owned = tuple[str, Option]  # (pass name, "run" or "prune"; the option)

# The titled groups of ``--help``, in order, and where each pass's options go.
IO, TARGET, SELECTION, DATA, RECOVERY = ("input and output", "target", "selection",
                                         "calibration data", "recovery")
QUANT, BENCH, RUN = "quantization", "benchmark and report", "run"
GROUPS = (IO, TARGET, SELECTION, DATA, RECOVERY, QUANT, BENCH, RUN)
_OWNER_GROUP = {"write": IO, "run": RUN, "calibrate": DATA, "compensate": RECOVERY,
                "distill": RECOVERY, "quantize": QUANT, "report": BENCH}
_OPTION_GROUP = {"input_shapes": IO, "input_values": IO, "ratio": TARGET, "target": TARGET,
                 "target_params": TARGET, "target_macs": TARGET, "constraint": TARGET,
                 "remove_blocks": TARGET, "depth": SELECTION,
                 "recover": RECOVERY, "compensate": RECOVERY, "quantize": QUANT}

# The options ``prune --help`` (and ``run --help``) shows: with the flags the command line adds
# itself (--bench, --bench-batch, --json, --set, -q, -v, --debug) at most 30. Every other option
# keeps its flag, hidden from --help and listed in docs/cli.md, and is also
# ``--set PASS.OPTION=VALUE`` (``--set select.tolerance=0.02``).
SHOWN = frozenset({
    "output", "force", "input_shapes", "ratio", "target", "remove_blocks", "constraint",
    "strategy", "criterion", "metric", "components", "exclude", "keep_classes",
    "keep_tokens", "calib", "holdout", "recover", "quantize", "report", "providers", "memory",
    "executor", "depth"})
_FIRST = {"output": 0, "ratio": 0, "strategy": 0, "calib": 0}  # first in their groups


def group(parser: argparse.ArgumentParser, title: str):
    """The parser's argument group of that title (made once, in ``GROUPS`` order)."""
    groups = {g.title: g for g in parser._action_groups}  # noqa: SLF001 - argparse's list
    if title not in groups:
        for t in GROUPS:
            if t not in groups:
                groups[t] = parser.add_argument_group(t)
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
    return groups[title]


def group_of(owner: str, o: Option) -> str:
    return _OPTION_GROUP.get(o.public or "", _OWNER_GROUP.get(owner, SELECTION))


def _help(o: Option) -> str:
    text = o.help
    if o.kind == "switch" or o.required:
        return text
    if o.default is None:
        return text
    shown = o.default if not isinstance(o.default, (list, tuple)) else ",".join(
        map(str, o.default)) or "none"
    return f"{text} (default {shown})"


def hide(parser: argparse.ArgumentParser, flag: str, meta: str, help: str) -> str:
    """A flag the command line adds itself, left out of ``--help`` (listed in docs/cli.md):
    returns the help to give argparse."""
    hidden = list(parser.get_default("_hidden") or [])
    parser.set_defaults(_hidden=[*hidden, ([flag], meta, "", help)])
    return argparse.SUPPRESS


def add_flags(parser: argparse.ArgumentParser, options: Iterable[Owned], *,
              grouped: bool = False) -> None:
    """One flag per option with a public name; values stay strings (the schema converts them)
    and only given flags reach the namespace. The parser remembers which flag is which option,
    for ``flag_message``. ``grouped``: in titled groups, only ``SHOWN`` options in ``--help``
    (the others work as before and are listed, with their help, for docs/cli.md)."""
    mapping = dict(parser.get_default("_flags") or {})
    hidden = list(parser.get_default("_hidden") or [])
    if grouped:  # the usage line in the groups' order, the shown flags first
        options = sorted(options, key=lambda item: (
            GROUPS.index(group_of(*item)), item[1].public not in SHOWN,
            _FIRST.get(item[1].public or "", 1)))
    for owner, o in options:
        flag = o.cli_flag()
        if not flag:
            continue
        names = [n for n in (o.short, flag) if n] + o.alias_flags()
        kw: dict[str, Any] = {"dest": o.public, "help": _help(o)}
        where: Any = parser
        if grouped:
            where = group(parser, group_of(owner, o))
            if o.public not in SHOWN:
                meta = "" if o.kind == "switch" else (o.metavar or "|".join(
                    map(str, o.choices or ())) or o.public.upper())
                hidden.append((names, meta, f"{owner}.{o.name}", kw["help"]))
                kw["help"] = argparse.SUPPRESS
        if o.required:
            kw["required"] = True
        else:
            kw["default"] = argparse.SUPPRESS
        if o.kind == "switch":
            kw["action"] = "store_true"
        else:
            if o.kind == "append":
                kw["action"] = "append"
            if o.choices is not None:
                kw["choices"] = o.choices
            if o.metavar:
                kw["metavar"] = o.metavar
            if o.bare is not None:
                kw.update(nargs="?", const=o.bare)
        where.add_argument(*names, **kw)
        mapping[(owner, o.name)] = flag
    parser.set_defaults(_flags=mapping, _hidden=hidden)


def from_sets(items: Iterable[str] | None, options: Iterable[Owned],
              values: dict[str, Any]) -> dict[str, Any]:
    """``--set select.tolerance=0.02`` as the public value it sets (``tolerance``), added to
    ``values`` (the flags given); an option given both ways, or unknown, is an error."""
    from ..pipeline.recipes import parse_sets

    by_name = {(owner, o.name): o for owner, o in options if o.cli_flag()}
    for owner, opts in parse_sets(list(items or [])).items():
        for name, value in opts.items():
            o = by_name.get((owner, name))
            if o is None:
                mine = sorted(n for w, n in by_name if w == owner)
                known = (f"{owner}'s options: {', '.join(mine)}" if mine else
                         f"passes: {', '.join(sorted({w for w, _ in by_name}))}")
                raise OptionError(owner, name, f"no such option here ({known})")
            if o.public in values:
                raise OptionError(owner, name, f"given twice (--set and {o.cli_flag()})")
            values[o.public] = [value] if o.kind == "append" and not isinstance(
                value, list) else value
    return values


def given(args: argparse.Namespace, options: Iterable[Owned]) -> dict[str, Any]:
    """The public values the user gave (flags not given keep the schema's defaults)."""
    out = {}
    for _, o in options:
        if o.public and hasattr(args, o.public):
            value = getattr(args, o.public)
            out[o.public] = value
    return out


def flag_message(err: OptionError, args: argparse.Namespace) -> str:
    """``select.round_to: ...`` as ``--round-to: ...`` when the command has that flag."""
    flag = (getattr(args, "_flags", None) or {}).get((err.owner, err.option))
    return f"{flag}: {err.message}" if flag else str(err)


__all__ = ["REQUIRED", "add_flags", "debug_everywhere", "flag_message", "from_sets", "given",
           "group", "output_flags"]


def quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (errors and warnings still print); without it, "
                        "progress shows as bars on a terminal and as a line every 10 s otherwise")


def verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every changed group, the tolerance that decided verification, and "
                        "the time and peak memory of every pass (default: a summary line)")


MORE_FLAGS = ("more options: every pass option is --set PASS.OPTION=VALUE (onnxprune passes "
              "lists them); docs/cli.md lists the flags --help leaves out")


def output_flags(p: argparse.ArgumentParser, recipe: bool = False) -> None:
    """--json, --set, -q, -v: in the last groups of prune and run."""
    group(p, BENCH).add_argument("--json", action="store_true",
                                 help="print one JSON object instead of tables")
    run = group(p, RUN)
    run.add_argument("--set", action="append", metavar="PASS.OPTION=VALUE",
                     help=("override a recipe option, e.g. --set select.ratio=0.3" if recipe else
                           "any pass option, e.g. --set select.tolerance=0.02 (onnxprune "
                           "passes lists them)") + " (repeatable)")
    quiet_flag(run)
    verbose_flag(run)


def debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a subcommand too (``onnxprune prune m.onnx --debug``)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in action.choices.values():
                if "--debug" not in child._option_string_actions:  # noqa: SLF001
                    child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show tracebacks on errors")
                debug_everywhere(child)
