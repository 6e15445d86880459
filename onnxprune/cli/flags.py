"""Command-line flags derived from the option schema, and errors translated back to them.

The one place where options meet flags: ``select.round_to`` is ``--round-to`` on the command
line, and an error about it names the flag there (and the option everywhere else)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ..options import REQUIRED, Option, OptionError

Owned = tuple[str, Option]  # (pass name, "run" or "prune"; the option)


def _help(o: Option) -> str:
    text = o.help
    if o.kind == "switch" or o.required:
        return text
    if o.default is None:
        return text
    shown = o.default if not isinstance(o.default, (list, tuple)) else ",".join(
        map(str, o.default)) or "none"
    return f"{text} (default {shown})"


def add_flags(parser: argparse.ArgumentParser, options: Iterable[Owned]) -> None:
    """One flag per option with a public name; values stay strings (the schema converts them)
    and only given flags reach the namespace. The parser remembers which flag is which option,
    for ``flag_message``."""
    mapping = dict(parser.get_default("_flags") or {})
    for owner, o in options:
        flag = o.cli_flag()
        if not flag:
            continue
        names = [n for n in (o.short, flag) if n]
        kw: dict[str, Any] = {"dest": o.public, "help": _help(o)}
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
        parser.add_argument(*names, **kw)
        mapping[(owner, o.name)] = flag
    parser.set_defaults(_flags=mapping)


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


__all__ = ["REQUIRED", "add_flags", "flag_message", "given"]


def quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (errors and warnings still print); without it, "
                        "progress shows as bars on a terminal and as a line every 10 s otherwise")


def verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every changed group, the tolerance that decided verification, and "
                        "the time and peak memory of every pass (default: a summary line)")
