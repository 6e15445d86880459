"""The option schema: one declaration per option gives the API keywords, the CLI flags, recipe
validation and `onnxprune passes`; errors name options, the CLI names flags."""

import onnx
import pytest

from onnxprune.cli.main import build_parser, main
from onnxprune.errors import EXIT_USAGE
from onnxprune.options import OptionError
from onnxprune.pipeline import CATALOGUE, RUN_OPTIONS, RunConfig, SelectChannels
from onnxprune.pipeline.build import SWITCHES, prune_pipeline, public_options
from onnxprune.pipeline.recipes import load_recipe
from onnxprune.zoo.builder import demo_cnn


def _plain(values):
    """Option values comparable across builds (a metric by its name)."""
    return {k: getattr(v, "name", v) for k, v in values.items()}


def _spec(passes):
    return [(p.name, _plain(getattr(p, "values", {}))) for p in passes]


@pytest.mark.parametrize("recipe, options", [
    # the criterion by default is l2 without data and reconstruction with it; recipes name it
    ("magnitude-uniform", {"ratio": 0.5, "criterion": "l2"}),
    ("application-soft", {"metric": "cosine", "strategy": "soft", "target_params": 0.5,
                          "calib": "c.npz", "tolerance": 0.02, "soft_method": "gradient",
                          "criterion": "l2"}),
    ("recover-compensate", {"ratio": 0.5, "compensate": True, "calib": "c.npz",
                            "criterion": "reconstruction"}),
])
def test_prune_builds_what_the_recipe_lists(recipe, options):
    passes, _ = prune_pipeline("m.onnx", "o.onnx", options)
    listed = load_recipe(recipe).build()
    names = [p.name for p in listed]
    at = names.index("normalize") + 1
    if "calib" in options:  # `onnxprune run --calib` puts calibration right after normalize
        from onnxprune.pipeline import Calibrate

        listed.insert(at, Calibrate(path="c.npz"))
    assert _spec(passes[1:-1]) == _spec(listed)
    assert [passes[0].name, passes[-1].name] == ["load", "write"]


def test_every_public_option_has_one_flag_and_help():
    opts = public_options()
    flags = [o.cli_flag() for _, o in opts.values() if o.cli_flag()]
    assert len(flags) == len(set(flags))
    assert all(o.help for _, o in opts.values())
    parser = build_parser()
    prune = next(a for a in parser._subparsers._group_actions[0].choices.values()
                 if a.prog.endswith("prune"))
    have = {s for a in prune._actions for s in a.option_strings}
    assert set(flags) <= have
    # names that differ from the options they set
    assert opts["calib_random"][1].name == "random" and opts["scope_depth"][1].name == "depth"
    assert opts["providers"][1].cli_flag() == "--provider"


def test_errors_name_the_option_and_the_cli_names_the_flag(tmp_path, capsys):
    with pytest.raises(OptionError, match=r"^select\.round_to: must be 'auto' or a whole"):
        SelectChannels(round_to=0)
    with pytest.raises(OptionError, match=r"^select\.max_ratio: must be in \(0, 1\)"):
        SelectChannels(max_ratio=1.0)
    with pytest.raises(OptionError, match=r"^run\.workers: must be >= 1"):
        RunConfig.of(workers=0)
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), str(model))
    assert main(["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--round-to", "0"]) \
        == EXIT_USAGE
    assert capsys.readouterr().err.startswith("onnxprune: error: --round-to: must be 'auto'")
    assert main(["run", "magnitude-uniform", str(model), "-o", str(tmp_path / "o.onnx"),
                 "--set", "select.round_to=0"]) == EXIT_USAGE
    assert "select.round_to: must be 'auto'" in capsys.readouterr().err


def test_unknown_api_options_are_named():
    with pytest.raises(Exception, match="unknown option.*ratoi"):
        prune_pipeline("m.onnx", None, {"ratoi": 0.5})


def test_recipe_values_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    import onnxprune.ir.io

    monkeypatch.setattr(onnxprune.ir.io, "load_model", lambda *a: pytest.fail("loaded"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pass]]\nname = "normalize"\n[[pass]]\nname = "analyze"\n'
                   '[[pass]]\nname = "select"\nratio = 1.5\n')
    assert main(["run", str(bad), "m.onnx", "-o", str(tmp_path / "o.onnx")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "select.ratio" in err and "outside [0, 1)" in err and str(bad) in err


def test_a_recipe_without_analyze_is_rejected_by_the_contracts(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pass]]\nname = "normalize"\n[[pass]]\nname = "select"\n')
    assert main(["run", str(bad), "m.onnx", "-o", str(tmp_path / "o.onnx")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "pass 'select' needs the channel analysis (analysis)" in err
    assert "pass 'analyze' provides analysis" in err and "internal error" not in err


def test_passes_command_lists_every_option(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for cls in CATALOGUE.values():
        for o in cls.options:
            assert o.name in out, (cls.name, o.name)
    for o in RUN_OPTIONS:
        assert o.name in out


def test_switches_and_run_settings_are_public():
    opts = public_options()
    assert {o.public for o in SWITCHES} <= set(opts)
    assert {o.public for o in RUN_OPTIONS} <= set(opts)
