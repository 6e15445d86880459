"""The CLI reference (docs/cli.md), generated from the parsers, which are built from the option
schema: every command and flag with its value, default and help. ``python -m
onnxprune.cli.reference > docs/cli.md`` writes it; a test fails when the file drifts."""

from __future__ import annotations

import argparse
import os

from .main import build_parser

HEADER = """# CLI reference

Generated from the option schema by `python -m onnxprune.cli.reference > docs/cli.md`
(a test fails when this file and the parsers disagree). The same options are the keywords of
the Python API's `onnxprune.prune(...)`.
"""


def _flag(action: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.nargs == 0:
        return names
    meta = action.metavar or (action.dest.upper() if not action.choices else
                              "|".join(map(str, action.choices)))
    return f"{names} `{str(meta).replace('|', chr(92) + '|')}`"  # a table's pipes escaped


def _help(action: argparse.Action) -> str:
    text = (action.help or "").replace("%%", "%").replace("|", "\\|").replace("\n", " ")
    default = action.default
    if (action.option_strings and default not in (None, False, argparse.SUPPRESS)
            and action.nargs != 0 and "default" not in text):
        text += f" (default: `{default}`)"
    return text


def _command(name: str, parser: argparse.ArgumentParser) -> list[str]:
    usage = parser.format_usage().replace("usage: ", "").strip()
    lines = [f"## `onnxprune {name}`", ""]
    if parser.description:
        lines += [parser.description.strip(), ""]
    lines += ["```", usage, "```", ""]
    rows = [a for a in parser._actions  # noqa: SLF001 - argparse keeps its actions here
            if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                     argparse._SubParsersAction))]
    if rows:
        lines += ["| flag | meaning |", "|---|---|"]
        lines += [f"| {_flag(a)} | {_help(a)} |" for a in rows]
        lines.append("")
    hidden = parser.get_default("_hidden") or []
    if hidden:
        lines += ["More flags, left out of `--help` (the long tail, and earlier spellings kept "
                  "for scripts); each pass option is also `--set PASS.OPTION=VALUE`:", "",
                  "| flag | as --set | meaning |", "|---|---|---|"]
        bar = "|", "\\|"  # a table's pipes escaped
        lines += [f"| {', '.join(f'`{n}`' for n in names)}"
                  f"{f' `{meta}`'.replace(*bar) if meta else ''} | "
                  f"{f'`{where}`' if where else '-'} | "
                  f"{text.replace('%%', '%').replace(*bar)} |"
                  for names, meta, where, text in sorted(hidden, key=lambda h: h[0][-1])]
        lines.append("")
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub, child in action.choices.items():
                lines += _command(f"{name} {sub}", child)
    return lines


def render() -> str:
    """docs/cli.md's text (usage lines wrapped at 100 columns, whatever the terminal)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        return _render(parser)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _render(parser: argparse.ArgumentParser) -> str:
    out = [HEADER]
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, child in action.choices.items():
                out += _command(name, child)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
