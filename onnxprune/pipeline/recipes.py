"""Pipeline recipes: TOML files listing passes and their options, and the pass catalogue.

    description = "Magnitude pruning, the same ratio in every group"
    [[pass]]
    name = "normalize"
    [[pass]]
    name = "select"
    strategy = "uniform"
    ratio = 0.5

A recipe names every pass between loading the model and writing it; ``onnxprune run`` adds
load (the MODEL argument), calibration (``--calib``/``--calib-random``) and write (``-o``).
Unknown passes and options are rejected, by name, before anything runs.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .core import Pass
from .passes import CATALOGUE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES = Path(__file__).resolve().parent.parent.parent / "passes"


def options(cls: type[Pass]) -> dict[str, Any]:
    """A pass's options and their defaults (inspect.Parameter.empty: required)."""
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@dataclass(frozen=True)
class Recipe:
    path: Path
    description: str
    steps: tuple[tuple[str, dict[str, Any]], ...]

    def build(self, overrides: dict[str, dict[str, Any]] | None = None) -> list[Pass]:
        overrides = overrides or {}
        names = [n for n, _ in self.steps]
        for name in overrides:
            if name not in names:
                raise UsageError(f"--set {name}.*: the recipe has no pass {name!r} "
                                 f"(it has {', '.join(names)})")
        passes = []
        for name, opts in self.steps:
            merged = {**opts, **overrides.get(name, {})}
            _check_options(name, merged, self.path)
            passes.append(CATALOGUE[name](**merged))
        return passes


def _check_options(name: str, opts: dict[str, Any], where: Path | str) -> None:
    known = options(CATALOGUE[name])
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise UsageError(f"{where}: pass {name!r} has no option {', '.join(unknown)} "
                         f"(options: {', '.join(known) or 'none'})")


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.exists():
        return p
    for candidate in (RECIPES / name_or_path, RECIPES / f"{name_or_path}.toml"):
        if candidate.exists():
            return candidate
    have = ", ".join(sorted(x.stem for x in RECIPES.glob("*.toml"))) if RECIPES.is_dir() else ""
    raise UsageError(f"recipe {name_or_path!r} not found (built-in recipes: {have or 'none'})")


def load_recipe(name_or_path: str) -> Recipe:
    path = find_recipe(name_or_path)
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML ({err})") from None
    steps = []
    for i, entry in enumerate(spec.get("pass", [])):
        entry = dict(entry)
        name = entry.pop("name", None)
        if name not in CATALOGUE:
            raise UsageError(f"{path}: pass #{i + 1} {name!r} is not a known pass "
                             f"(see 'onnxprune passes')")
        if name in ("write",):
            raise UsageError(f"{path}: 'write' comes from -o, not from the recipe")
        _check_options(name, entry, path)
        steps.append((name, entry))
    if not steps:
        raise UsageError(f"{path}: the recipe lists no [[pass]]")
    return Recipe(path, str(spec.get("description", "")), tuple(steps))


def parse_sets(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--set select.ratio=0.3`` -> {"select": {"ratio": 0.3}} (values read as TOML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name or not option:
            raise UsageError(f"--set {item!r}: expected PASS.OPTION=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(name, {})[option] = value
    return out
