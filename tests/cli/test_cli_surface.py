"""The prune command's surface: at most 30 flags in titled groups, the combined spellings
(--target KIND=F, --calib random:N, --recover a,b, --set PASS.OPTION=VALUE) equal to the
earlier ones they replace in --help, which keep working."""

import json

import pytest

from onnxprune.cli.flags import GROUPS
from onnxprune.cli.main import build_parser, main
from onnxprune.errors import EXIT_USAGE


def _subparser(name):
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("command", ["prune", "run"])
def test_help_shows_at_most_30_flags_in_titled_groups(command):
    parser = _subparser(command)
    shown = [a for a in parser._actions if a.option_strings and a.help != "==SUPPRESS=="
             and "-h" not in a.option_strings]
    assert len(shown) <= 30, [a.option_strings for a in shown]
    titles = [g.title for g in parser._action_groups if g._group_actions]
    assert [t for t in titles if t in GROUPS] == [t for t in GROUPS if t in titles]
    text = parser.format_help()
    assert "--target-params" not in text and "--distill-steps" not in text  # the long tail
    assert "--set PASS.OPTION=VALUE" in text


def _prune(model_file, out, capsys, *flags):
    code = main(["prune", str(model_file), "-o", str(out), "--json", "-q", *flags])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    return data


def _cut(data):
    return [(g["id"], g["after"]) for g in data["groups"]], data["params_after"]


def test_combined_spellings_equal_the_earlier_ones(demo_file, tmp_path, capsys):
    new = _prune(demo_file, tmp_path / "a.onnx", capsys, "--target", "params=0.4", "--calib",
                 "random:8", "--criterion", "activation", "--recover", "compensate",
                 "--set", "select.min_width=2")
    old = _prune(demo_file, tmp_path / "b.onnx", capsys, "--target-params", "0.4",
                 "--calib-random", "8", "--criterion", "activation", "--compensate",
                 "--min-width", "2")
    assert _cut(new) == _cut(old)
    assert new["params_after"] <= 0.6 * new["params_before"] + 1e-9 * new["params_before"]
    assert list(new["recovery"]) == list(old["recovery"]) and "compensate" in new["recovery"]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_set_reaches_any_pass_option(demo_file, tmp_path, capsys):
    plain = _prune(demo_file, tmp_path / "a.onnx", capsys, "--ratio", "0.3")
    rounded = _prune(demo_file, tmp_path / "b.onnx", capsys, "--ratio", "0.3",
                     "--set", "select.round_to=4")
    widths = [g["after"] for g in rounded["groups"] if g["after"] != g["before"]]
    assert widths and all(w % 4 == 0 for w in widths)
    assert _cut(plain) != _cut(rounded)


def test_recover_takes_both_stages(demo_file, tmp_path, capsys):
    pytest.importorskip("torch")
    data = _prune(demo_file, tmp_path / "a.onnx", capsys, "--ratio", "0.3", "--calib",
                  "random:16", "--recover", "compensate,distill", "--set", "distill.steps=3")
    assert list(data["recovery"])[:2] == ["compensate", "distill"]


@pytest.mark.parametrize("flags, message", [
    (["--target", "flops=0.3"], "--target: 'flops': the target is one of params, macs"),
    (["--target", "params=0.3", "--target-params", "0.2"], "params given twice"),
    (["--recover", "compensate,finetune"], "--recover: 'compensate,finetune': expected none"),
    (["--calib", "random:0"], "--calib: random:0: N must be >= 1"),
    (["--set", "select.nope=1"], "select.nope: no such option here (select's options:"),
    (["--set", "nope"], "--set 'nope': expected PASS.OPTION=VALUE"),
    (["--set", "select.tolerance=0.1", "--tolerance", "0.2"],
     "--tolerance: given twice (--set and --tolerance)"),
])
def test_bad_spellings_are_one_line(demo_file, tmp_path, capsys, flags, message):
    out = tmp_path / "x.onnx"
    assert main(["prune", str(demo_file), "-o", str(out), *flags]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_api_takes_the_same_spellings(demo_file, tmp_path):
    from onnxprune import prune

    a = prune(demo_file, tmp_path / "a.onnx", target="params=0.4", calib="random:8",
              criterion="activation", recover="compensate")
    b = prune(demo_file, tmp_path / "b.onnx", target_params=0.4, calib_random=8,
              criterion="activation", compensate=True)
    c = prune(demo_file, tmp_path / "c.onnx", target={"params": 0.4}, calib_random=8,
              criterion="activation", recover=["compensate"])
    assert a.params_after == b.params_after == c.params_after
    assert list(a.recovery) == list(b.recovery) == list(c.recovery)


def test_an_internal_error_names_its_pass_and_a_pass_must_provide_what_it_declares(
        demo_file, tmp_path, capsys, monkeypatch):
    """A bug is one line naming the pass it happened in; a pass that does not set what its
    contract declares is such a bug (caught after the pass, not by a later one)."""
    from onnxprune.pipeline.passes.pruning import SelectChannels

    def broken(self, ctx):
        from onnxprune.pipeline.base import PassResult
        return PassResult(False)  # declares "plan", sets nothing

    monkeypatch.setattr(SelectChannels, "run", broken)
    assert main(["prune", str(demo_file), "-o", str(tmp_path / "o.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("onnxprune: internal error in pass select: RuntimeError: pass 'select' did "
                   "not provide plan (rerun with --debug)")
    assert not (tmp_path / "o.onnx").exists()


def test_renamed_options_keep_their_earlier_names():
    """One name per option family (keep_tokens_*, compensate_*); the earlier public names stay
    accepted, by the API and on the command line, and both at once is one usage error."""
    from onnxprune.errors import UsageError
    from onnxprune.pipeline.build import public_aliases, split_options

    assert public_aliases() == {"ridge": "compensate_ridge",
                                "token_fallback": "keep_tokens_fallback"}
    for alias, public in public_aliases().items():
        value = 0.5 if public == "compensate_ridge" else "nearest"
        new, old = split_options({public: value}), split_options({alias: value})
        assert new == old and new[0]  # the same pass option either way
        with pytest.raises(UsageError, match="are one option"):
            split_options({public: value, alias: value})
    parser = build_parser()
    for flag in ("--ridge", "--compensate-ridge"):
        args = parser.parse_args(["prune", "m.onnx", "-o", "s.onnx", flag, "0.25"])
        assert args.compensate_ridge == "0.25"


def test_the_readme_lists_the_flags_prune_help_shows():
    """The README's flag list is checked against the parser (it was typed by hand and drifted
    from the schema): every flag --help shows is there, and nothing else."""
    import argparse
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("`onnxprune prune --help` shows")
    text = readme[start:readme.index("Every other option", start)]
    listed = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z]|-[a-z])(?![\w-])", text))
    listed.discard("--help")  # (the sentence naming the command)
    prune = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()
                 if a.prog.endswith("prune"))
    shown = [a for a in prune._actions if a.option_strings and a.help != argparse.SUPPRESS
             and "--help" not in a.option_strings]
    missing = [a.option_strings for a in shown if not set(a.option_strings) & listed]
    known = {s for a in shown for s in a.option_strings}
    assert missing == [] and listed - known == set()
    assert len(shown) == 30
