"""The package boundary: the wheel carries the recipes and the report's template, and a core
install (no torch) runs prune, run, bench and the demo model; the modules import without
cycles."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs the command line from the unpacked wheel with torch (and the other extras) unimportable.
RUNNER = """
import sys
for name in ("torch", "torchvision", "sklearn", "gymnasium", "matplotlib", "ray"):
    sys.modules[name] = None
sys.path.insert(0, {site!r})
import onnxprune
assert onnxprune.__file__.startswith({site!r}), onnxprune.__file__
from onnxprune.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True,
                   capture_output=True)
    wheel = next(out.glob("onnxprune-*.whl"))
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def _cli(site, *args, cwd):
    return subprocess.run([sys.executable, "-c", RUNNER.format(site=str(site)), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_the_wheel_ships_the_recipes(wheel_site):
    shipped = sorted(p.stem for p in (wheel_site / "onnxprune" / "recipes").glob("*.toml"))
    assert shipped == sorted(p.stem for p in (ROOT / "passes").glob("*.toml"))
    assert "magnitude-uniform" in shipped and "recover-distill" in shipped
    template = wheel_site / "onnxprune" / "report" / "template.html"
    assert template.read_text() == (ROOT / "onnxprune" / "report" / "template.html").read_text()


def test_a_core_install_prunes_runs_recipes_and_benches(wheel_site, tmp_path):
    steps = [
        ("zoo", "export", "demo", "-o", "m.onnx"),
        ("prune", "m.onnx", "-o", "p.onnx", "--ratio", "0.5", "--quiet"),
        ("run", "magnitude-uniform", "m.onnx", "-o", "r.onnx", "--quiet"),
        ("run", "recover-compensate", "m.onnx", "-o", "c.onnx", "--calib-random", "8", "-q"),
        ("bench", "m.onnx", "p.onnx", "--seconds", "0.2"),
        ("passes",),
    ]
    for args in steps:
        r = _cli(wheel_site, *args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr[-500:])
    assert {"m.onnx", "p.onnx", "r.onnx", "c.onnx"} <= {p.name for p in tmp_path.iterdir()}
    r = _cli(wheel_site, "zoo", "export", "autoencoder", "-o", "ae.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "pip install 'onnxprune[examples]'" in r.stderr
    # a report needs matplotlib: said before any work
    r = _cli(wheel_site, "prune", "m.onnx", "-o", "q.onnx", "--report", "rep", cwd=tmp_path)
    assert r.returncode == 2 and "--report: a report needs matplotlib" in r.stderr, r.stderr
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "rep").exists()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_torch_stays_in_the_modules_that_need_it():
    """Only the torch interpreter, distillation and the zoo's torch models import torch."""
    allowed = ("recover/", "zoo/")
    for path in (ROOT / "onnxprune").rglob("*.py"):
        rel = path.relative_to(ROOT / "onnxprune").as_posix()
        if "torch" in _imports(path):
            assert rel.startswith(allowed), rel


def test_no_import_cycles_between_stages():
    cycles = _stage_cycles(ROOT / "onnxprune")
    assert cycles == [], cycles


def _stage_cycles(pkg: Path) -> list[tuple[str, str]]:
    """Pairs of stages (top-level modules or subpackages) importing each other, any import."""
    def stage(mod: str) -> str:
        return mod.split(".")[1] if "." in mod else mod

    edges: dict[str, set[str]] = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg.parent).with_suffix("").parts
        mod = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""])
            else:
                target = node.module or ""
            if target.startswith("onnxprune.") and stage(target) != stage(mod):
                edges.setdefault(stage(mod), set()).add(stage(target))
    return sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
