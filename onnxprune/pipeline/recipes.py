"""Pipeline recipes: TOML files listing passes and their options, and the pass catalogue.

    description = "Magnitude pruning, the same ratio in every group"
    [[pass]]
    name = "normalize"
    [[pass]]
    name = "select"
    strategy = "uniform"
    ratio = 0.5

A recipe names every pass between loading the model and writing it; ``onnxprune run`` adds
load (the MODEL argument), calibration (``--calib``/``--calib-random``), write (``-o``) and
the report (``--report``).
Unknown passes and options are rejected, by name, before anything runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import OptionError
from .core import Pass, Pipeline
from .entry import LoadModel
from .passes import CATALOGUE
from .passes.output import WriteModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # shipped in the package


def options(cls: type[Pass]) -> dict[str, Any]:
    """A pass's options and their defaults (``REQUIRED``: must be given), from its schema."""
    return {o.name: o.default for o in cls.options}


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
        return [_make(name, {**opts, **overrides.get(name, {})}, self.path)
                for name, opts in self.steps]


def _make(name: str, opts: dict[str, Any], where: Path | str) -> Pass:
    """The pass, its option values checked by the schema; errors name the file."""
    try:
        return CATALOGUE[name](**opts)
    except OptionError as err:
        raise OptionError(err.owner, err.option, f"{err.message} (in {where})") from None


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
        if name in ("write", "report"):
            flag = "-o" if name == "write" else "--report"
            raise UsageError(f"{path}: '{name}' comes from {flag}, not from the recipe")
        _make(name, entry, path)  # every value checked before anything runs
        steps.append((name, entry))
    if not steps:
        raise UsageError(f"{path}: the recipe lists no [[pass]]")
    recipe = Recipe(path, str(spec.get("description", "")), tuple(steps))
    with_io = [LoadModel(path), *recipe.build(), WriteModel(path)]
    try:  # what each pass needs, the file's load and write around it
        Pipeline(with_io).check_contracts({"calib", "eval_data"})
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    return recipe


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
