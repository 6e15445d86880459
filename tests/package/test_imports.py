"""The packages of onnxprune import downward only: each has a rank, and a module may import
from packages of lower rank (and its own), never higher. A new package gets a rank here; an
import that points upward fails with the file and the import."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "onnxprune"

# rank: what a package may import is everything of lower rank
RANKS = {
    # the leaves: errors, option parsing, progress, interrupts, number formatting
    "errors": 0, "__version__": 0, "interrupts": 0, "progress": 0, "figures": 0, "options": 1,
    "ir": 2,  # graphs, arrays, onnxruntime sessions, shapes
    "rules": 3,  # what each op does to channels (and its layer view, lowering)
    "analysis": 4,  # groups, components, blocks
    # what the analysis makes possible: normalization, rewrites, the oracle, readers, timing
    "normalize": 5, "rewrite": 5, "verify": 5, "quant": 5, "calib": 5, "bench": 5,
    "search": 6, "latency": 6, "report": 6,  # evaluating candidates; latency tables; reports
    "scoring": 7, "select": 7,  # scores and strategies
    "recover": 8,  # refits and distillation (soft coefficients by autograd use select)
    "zoo": 9,  # example models and their training
    "pipeline": 10,  # the passes: every stage above, in one run
    "api": 11,
    "testing": 12, "cli": 12,
    "__main__": 13,
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    here = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), here) \
                if node.level else (node.module or "")
            names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, n) for line, n in found if n == "onnxprune" or n.startswith("onnxprune.")]


def test_every_package_has_a_rank():
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert packages - set(RANKS) == set(), "give the new package a rank in RANKS"


def upward_imports(root: Path) -> list[str]:
    upward = []
    for path in sorted(root.rglob("*.py")):
        mine = _package(".".join(path.relative_to(root.parent).with_suffix("").parts))
        if mine == "__init__":
            continue  # the package's front door re-exports the API
        for line, name in _imports(path, root):
            theirs = _package(name)
            if theirs in (mine, "__init__"):
                continue
            if RANKS[theirs] >= RANKS[mine]:
                upward.append(f"{path.relative_to(root.parent)}:{line}: {mine} (rank "
                              f"{RANKS[mine]}) imports {name} (rank {RANKS[theirs]})")
    return upward


def test_no_module_imports_upward():
    upward = upward_imports(ROOT)
    assert not upward, "imports pointing upward:\n" + "\n".join(upward)


def test_the_check_sees_upward_imports_relative_or_absolute(tmp_path):
    """The walker resolves relative imports as Python does, inside functions too."""
    inner = tmp_path / "onnxprune" / "select" / "inner"
    inner.mkdir(parents=True)
    (inner / "x.py").write_text("from ...analysis.model import ChannelAnalysis\n"
                                "def f():\n    from ...pipeline.base import Context\n"
                                "import onnxprune.cli.main\nfrom .. import common\n")
    found = upward_imports(tmp_path / "onnxprune")
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "select (rank 7) imports onnxprune.cli.main (rank 12)",
        "select (rank 7) imports onnxprune.pipeline.base (rank 10)"]
