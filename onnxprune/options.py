"""The option schema: every pass option and run setting declared once.

An ``Option`` has a name, a default, a help text, a parser that checks and converts a value,
optional choices, and optionally a *public* name: the keyword of ``onnxprune.prune()`` and
the stem of the command-line flag (``--public-name``, or ``flag`` when it differs). From these
declarations come the API's keywords, the CLI's flags with their help and choices, recipe
validation and ``onnxprune passes``. Errors name the option (``select.round_to: ...``); only
the command line turns that into its flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

REQUIRED = object()  # the default of an option that must be given


class OptionError(UsageError):
    """A bad option value: ``owner`` is the pass (or "run"), ``option`` its option."""

    def __init__(self, owner: str, option: str, message: str):
        super().__init__(f"{owner}.{option}: {message}")
        self.owner, self.option, self.message = owner, option, message


@dataclass(frozen=True)
class Option:
    name: str
    default: Any = REQUIRED
    help: str = ""
    parse: Callable[[Any], Any] | None = None  # check + convert; raises ValueError(message)
    choices: tuple | None = None
    public: str | None = None  # the prune() keyword and CLI flag stem
    flag: str | None = None  # the CLI flag when it is not --public-with-dashes ("": none)
    short: str | None = None  # a one-letter CLI alias ("-o")
    metavar: str | None = None
    kind: str = "value"  # "value", "switch" (a CLI flag without a value), "append" (repeatable)
    type_name: str = ""  # what `onnxprune passes` shows as the type
    bare: str | None = None  # the value of the CLI flag given without one (None: it needs one)
    aliases: tuple[str, ...] = ()  # earlier public names, still accepted (keywords and flags)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def alias_flags(self) -> list[str]:
        return ["--" + a.replace("_", "-") for a in self.aliases]

    def cli_flag(self) -> str | None:
        if self.flag is not None:
            return self.flag or None
        return None if self.public is None else "--" + self.public.replace("_", "-")

    def convert(self, owner: str, value: Any) -> Any:
        if self.choices is not None and value not in self.choices and not (
                value is None and self.default is None):
            raise OptionError(owner, self.name, f"must be one of {', '.join(map(str, self.choices))}"
                                                f" (got {value!r})")
        if self.parse is None or value is None:
            return value
        try:
            return self.parse(value)
        except OptionError:
            raise
        except (ValueError, TypeError, UsageError) as err:
            raise OptionError(owner, self.name, str(err)) from None


def resolve(owner: str, options: Sequence[Option], args: Sequence[Any],
            kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Values for every option: positional ``args`` in declaration order, then keywords,
    then defaults; each checked and converted. Unknown or missing options are errors."""
    names = [o.name for o in options]
    if len(args) > len(options):
        raise UsageError(f"{owner}: takes at most {len(options)} option value(s), got {len(args)}")
    given = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names:
            raise OptionError(owner, key, f"no such option (options: {', '.join(names) or 'none'})")
        if key in given:
            raise OptionError(owner, key, "given twice")
        given[key] = value
    out = {}
    for o in options:
        if o.name in given:
            out[o.name] = o.convert(owner, given[o.name])
        elif o.required:
            raise OptionError(owner, o.name, "is required")
        else:
            out[o.name] = o.convert(owner, o.default)
    return out


def describe(o: Option) -> str:
    """``name=default`` (or ``name`` when required), with the type or choices."""
    what = "|".join(map(str, o.choices)) if o.choices else o.type_name
    head = o.name if o.required else f"{o.name}={o.default!r}"
    return f"{head} ({what})" if what else head


# -- parsers --------------------------------------------------------------------------------


def number(lo: float | None = None, hi: float | None = None, *, integer: bool = False,
           lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], float | int]:
    """A number within bounds; ``integer`` rejects fractions (and booleans)."""

    def parse(value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if integer:
            if x != int(x):
                raise ValueError(f"expected a whole number, got {value!r}")
            x = int(x)
        low_bad = lo is not None and (x <= lo if lo_open else x < lo)
        high_bad = hi is not None and (x >= hi if hi_open else x > hi)
        if low_bad or high_bad:
            if hi is None:
                span = f"{'>' if lo_open else '>='} {lo:g}"
            elif lo is None:
                span = f"{'<' if hi_open else '<='} {hi:g}"
            else:
                span = (f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
            raise ValueError(f"must be {span}, got {value}")
        return x

    return parse


def auto_or_count(lo: int) -> Callable[[Any], int | str]:
    """'auto' or a whole number >= ``lo``."""
    def parse(value: Any) -> int | str:
        if value == "auto":
            return value
        bad = ValueError(f"must be 'auto' or a whole number >= {lo}, got {value!r}")
        if isinstance(value, bool):
            raise bad
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise bad from None
        if n < lo or n != float(value):
            raise bad
        return n
    return parse


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"expected true or false, got {value!r}")


def text(value: Any) -> str:
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def path(value: Any) -> Path:
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a file path, got {value!r}")
    return Path(value)


def texts(value: Any) -> list[str]:
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path)) for v in value):
        return [str(v) for v in value]
    raise ValueError(f"expected a list of strings, got {value!r}")


def shapes(value: Any) -> dict[str, list[int]]:
    """``{"input": [1, 3, 224, 224]}`` or ``["input=1x3x224x224", ...]``."""
    if isinstance(value, Mapping):
        try:
            return {str(k): [int(d) for d in v] for k, v in value.items()}
        except (TypeError, ValueError):
            raise ValueError(f"expected NAME: [dims], got {value!r}") from None
    out = {}
    for item in texts(value):
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise ValueError(f"{item!r}: expected NAME=DxDx..., e.g. input=1x3x224x224") from None
    return out
