"""Recipes in passes/: every one runs end to end; bad recipes are rejected before running."""

import json

import numpy as np
import onnx
import pytest

from onnxprune import Pipeline
from onnxprune.cli.main import main
from onnxprune.errors import EXIT_USAGE, UsageError
from onnxprune.pipeline import AnalyzeChannels, Normalize
from onnxprune.pipeline.recipes import CATALOGUE, RECIPES, load_recipe, parse_sets
from onnxprune.zoo.builder import demo_cnn


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), str(path))
    return path


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.toml")))
def test_every_recipe_runs(recipe, model_file, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(["run", recipe, str(model_file), "-o", str(out), "--calib-random", "8", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verification"]["passed"]
    assert data["params_after"] < data["params_before"]
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_set_overrides_an_option(model_file, tmp_path, capsys):
    widths = {}
    for ratio in ("0.25", "0.75"):
        assert main(["run", "magnitude-uniform", str(model_file), "-o", str(tmp_path / "o.onnx"),
                     "--set", f"select.ratio={ratio}", "--json"]) == 0
        widths[ratio] = json.loads(capsys.readouterr().out)["params_after"]
    assert widths["0.75"] < widths["0.25"]


def test_bad_recipes_are_rejected_before_running(model_file, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pass]]\nname = "normalize"\n[[pass]]\nname = "prune-everything"\n')
    out = tmp_path / "o.onnx"
    assert main(["run", str(bad), str(model_file), "-o", str(out)]) == EXIT_USAGE
    assert "'prune-everything' is not a known pass" in capsys.readouterr().err
    bad.write_text('[[pass]]\nname = "select"\nratoi = 0.5\n')
    assert main(["run", str(bad), str(model_file), "-o", str(out)]) == EXIT_USAGE
    assert "select.ratoi: no such option" in capsys.readouterr().err
    assert main(["run", "magnitude-uniform", str(model_file), "-o", str(out),
                 "--set", "verify.colour=1"]) == EXIT_USAGE
    assert main(["run", "magnitude-uniform", str(model_file), "-o", str(out),
                 "--set", "nosuch.x=1"]) == EXIT_USAGE
    assert not out.exists()


def test_parse_sets_reads_toml_values():
    assert parse_sets(["select.ratio=0.3", "metric.metric=psnr", "select.round_to=8",
                       'select.ratio2="*=0.5"']) == {
        "select": {"ratio": 0.3, "round_to": 8, "ratio2": "*=0.5"}, "metric": {"metric": "psnr"}}
    with pytest.raises(UsageError):
        parse_sets(["nodot=1"])


def test_passes_lists_the_catalogue(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in CATALOGUE:
        assert name in out


def test_recipe_files_parse():
    for path in RECIPES.glob("*.toml"):
        recipe = load_recipe(str(path))
        assert recipe.description and recipe.steps[0][0] == "normalize"


def test_pipeline_api_runs_from_a_model():
    ctx = Pipeline([Normalize(), AnalyzeChannels()]).run(demo_cnn())
    assert len(ctx.analysis.groups) == 7
    assert ctx.graph is not None and np.isfinite(ctx.timings[0][1])
