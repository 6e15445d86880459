"""Every field of the context is an artifact (passes exchange it) or the run's bookkeeping, and
every artifact a pass's code touches is declared: ``requires`` (checked before the run),
``provides`` (checked after the pass), or ``uses`` (read when present, set only sometimes)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

from onnxprune.pipeline.base import ARTIFACTS, BOOKKEEPING, Context, Pass
from onnxprune.pipeline.entry import LoadModel, UseModel
from onnxprune.pipeline.passes import CATALOGUE

PASSES = [LoadModel, UseModel, *CATALOGUE.values()]


def test_every_context_field_is_an_artifact_or_bookkeeping():
    fields = {f.name for f in dataclasses.fields(Context)}
    assert fields - set(ARTIFACTS) - BOOKKEEPING == set()
    assert not BOOKKEEPING & set(ARTIFACTS)
    assert set(ARTIFACTS) - fields == {"eval_data"}  # (calibration data or a model metric)


def test_declared_names_are_artifacts():
    for cls in PASSES:
        for name in (*cls.requires, *cls.provides, *cls.uses):
            assert name in ARTIFACTS, f"{cls.name}: {name!r} is not an artifact"


def touched(cls: type[Pass]) -> set[str]:
    """Artifacts the class's own code reads or writes: ``ctx.NAME`` and ``ctx.require("NAME")``
    (module helpers it calls are not followed)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id == "ctx" and node.attr in ARTIFACTS:
            out.add(node.attr)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "require" and \
                node.args and isinstance(node.args[0], ast.Constant):
            out.add(node.args[0].value)
    return out


def test_every_artifact_a_pass_touches_is_declared():
    undeclared = {}
    for cls in PASSES:
        missing = touched(cls) - set(cls.requires) - set(cls.provides) - set(cls.uses)
        if missing:
            undeclared[cls.name] = sorted(missing)
    assert undeclared == {}


def test_the_scan_sees_an_undeclared_read():
    class Sneaky(Pass):
        name = "sneaky"
        requires = ("graph",)

        def run(self, ctx):
            return ctx.probe, ctx.require("plan")

    assert touched(Sneaky) == {"probe", "plan"}


def test_every_pass_of_the_package_is_in_the_catalogue():
    """A recipe may name every pass (the catalogue was typed by hand and missed the front end's
    steps and the removal of blocks)."""
    import importlib
    import pkgutil

    import onnxprune.pipeline.passes as package

    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found |= {c.name for c in vars(module).values() if isinstance(c, type)
                  and issubclass(c, Pass) and c.__module__ == module.__name__}
    assert found - set(CATALOGUE) == set() and {"depth", "pin-inputs"} <= found
