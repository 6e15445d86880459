"""The example zoo ships in the package with its packages declared: every third-party module it
imports is a core dependency or in the `examples` (or `transformers`) extra, and a zoo command
whose package is missing names it and the extra in one line (exit 2)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import onnxprune.zoo

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = {"sklearn": "scikit-learn", "PIL": "pillow", "onnx_graphsurgeon":
                "onnx-graphsurgeon"}  # import name -> what pip installs, where they differ


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_every_package_the_zoo_imports_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = _names(project["dependencies"]) | _names(extras["examples"]) | _names(
        extras["transformers"])
    imported = set()
    for path in Path(onnxprune.zoo.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "__future__"}
    assert {"torch", "gymnasium", "sklearn"} <= third_party  # the scan sees what it should
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower() not in declared}
    assert missing == set()


@pytest.mark.parametrize(("argv", "module"), [
    (["zoo", "export", "agent"], "gymnasium"),
    (["zoo", "export", "autoencoder"], "torch"),
    (["data", "digits", "--count", "4"], "sklearn"),
])
def test_a_missing_package_is_named_with_the_extra(argv, module, tmp_path, monkeypatch, capsys):
    from onnxprune.cli.main import main
    from onnxprune.zoo import digits

    digits._digits28_all.cache_clear()
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")
                 or m.startswith("onnxprune.zoo.") and m != "onnxprune.zoo.catalog"]:
        monkeypatch.delitem(sys.modules, name)  # (zoo modules import their packages again)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / ("d.npz" if argv[0] == "data" else "m.onnx")
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'onnxprune[examples]'" in err[0], err
    assert DISTRIBUTION.get(module, module) in err[0] or module in err[0]
    assert not out.exists()
    digits._digits28_all.cache_clear()
