"""The command line contract: analyze/prune/demo, JSON shapes, exit codes, one-line errors."""

import json

import onnx
import pytest

from onnxprune.cli.main import main
from onnxprune.errors import EXIT_INPUT_MISSING, EXIT_INVALID_MODEL, EXIT_OUTPUT, EXIT_USAGE
from onnxprune.zoo.builder import demo_cnn


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), str(path))
    return path


def test_analyze_json(model_file, capsys):
    assert main(["analyze", str(model_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"groups", "totals", "params", "macs"} <= data.keys()
    groups = data["groups"]
    assert len(groups) == data["totals"]["groups"] == 7
    first = groups[0]
    assert {"id", "members", "channels", "params", "macs", "frozen", "reason"} <= first.keys()
    assert all({"tensor", "axis"} <= m.keys() for m in first["members"])
    frozen = [g for g in groups if g["frozen"]]
    assert len(frozen) == 1 and frozen[0]["reason"].startswith("reaches graph output")


def test_analyze_table(model_file, capsys):
    assert main(["analyze", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "7 groups (6 prunable, 1 frozen)" in out


def test_prune_json_and_output(model_file, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    before = model_file.read_bytes()
    code = main(["prune", str(model_file), "-o", str(out), "--ratio", "0.5", "--criterion",
                 "l1", "--round-to", "4", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert model_file.read_bytes() == before  # the input is never modified
    assert data["verification"]["passed"] and data["verification"]["oracle_max_abs_diff"] < 1e-4
    assert data["params_after"] < 0.5 * data["params_before"]
    assert all(g["after"] % 4 == 0 or g["after"] == g["before"] for g in data["groups"])
    assert {"load", "analyze", "remove", "verify", "write"} <= data["timings"].keys()
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_prune_exclude(model_file, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    assert main(["prune", str(model_file), "-o", str(out), "--exclude", "fc*", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    pruned = onnx.load(str(out))
    fc1 = next(n for n in pruned.graph.node if n.name == "fc1")
    weight = next(i for i in pruned.graph.initializer if i.name == fc1.input[1])
    assert list(weight.dims) == [128, 64 * 16]  # fc1's own output channels untouched
    assert data["params_after"] < data["params_before"]


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys, model_file):
    assert main(["analyze", str(tmp_path / "missing.onnx")]) == EXIT_INPUT_MISSING
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    assert main(["analyze", str(bad)]) == EXIT_INVALID_MODEL
    assert main(["prune", str(model_file), "-o", str(model_file)]) == EXIT_OUTPUT
    assert main(["prune", str(model_file), "-o", str(tmp_path / "x.onnx"), "--ratio", "1.5"]) \
        == EXIT_USAGE
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 4 and all(line.startswith("onnxprune: error:") for line in lines)
    assert "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_unavailable_provider_is_one_clear_line(model_file, tmp_path, capsys):
    code = main(["prune", str(model_file), "-o", str(tmp_path / "x.onnx"), "--provider", "cuda"])
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert code == 0
    else:
        assert code != 0
        assert "provider cuda (CUDAExecutionProvider) is not available" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "mask oracle max abs diff" in out
    assert (tmp_path / "demo_cnn.pruned.onnx").exists()


def test_prune_round_to_auto_and_bench(model_file, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    code = main(["prune", str(model_file), "-o", str(out), "--round-to", "auto", "--bench",
                 "--bench-seconds", "0.2", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    m = data["selection"]["round_to"]
    assert m in (1, 2, 4, 8, 16, 32)
    probe = data["selection"]["latency_probe"]
    assert probe["cost"][str(m)] <= 1.02  # rounding up to it costs (almost) no time
    assert all(g["after"] % m == 0 or g["after"] == g["before"] for g in data["groups"])
    rows = data["bench"]["results"]
    assert [r["model"] for r in rows] == [model_file.name, out.name]
    assert rows[1]["macs"] < rows[0]["macs"] and rows[0]["speedup"] == 1.0


def test_debug_is_taken_after_the_subcommand_too(model_file, capsys):
    assert main(["analyze", str(model_file), "--debug"]) == 0
    assert main(["--debug", "analyze", str(model_file)]) == 0
    with pytest.raises(SystemExit):  # a flag the command does not have is still refused
        main(["analyze", str(model_file), "--no-such-flag"])


def test_a_plain_ratio_out_of_range_is_named_as_given(model_file, tmp_path, capsys):
    assert main(["prune", str(model_file), "-o", str(tmp_path / "o.onnx"),
                 "--ratio", "1.5"]) == EXIT_USAGE
    assert "--ratio: 1.5 is outside [0, 1)" in capsys.readouterr().err
    assert main(["prune", str(model_file), "-o", str(tmp_path / "o.onnx"),
                 "--ratio", "*=0.5,fc1=1.5"]) == EXIT_USAGE
    assert "fc1=1.5 is outside [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_the_demo_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo"]) == 0
    assert "removed afterwards" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert main(["demo", "--out-dir", str(tmp_path / "keep")]) == 0
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == [
        "demo_cnn.onnx", "demo_cnn.pruned.onnx"]


def test_example_data_files_get_the_usual_permissions(tmp_path):
    import os

    pytest.importorskip("sklearn")
    mask = os.umask(0o022)
    try:
        assert main(["data", "digits", "-o", str(tmp_path / "d.npz"), "--count", "5"]) == 0
    finally:
        os.umask(mask)
    assert (tmp_path / "d.npz").stat().st_mode & 0o777 == 0o644


def test_piped_tables_keep_whole_layer_names(tmp_path, capsys):
    from onnxprune.zoo.builder import GraphBuilder

    long = "encoder/blocks.11/attention/output_projection/MatMul_with_a_long_exported_name"
    b = GraphBuilder(seed=0)
    h = b.relu(b.gemm(b.input("x", ["batch", 8]), 8, 16, name=long))
    onnx.save(b.build([b.gemm(h, 16, 4, name="head")]), str(tmp_path / "m.onnx"))
    assert main(["analyze", str(tmp_path / "m.onnx")]) == 0  # capsys: stdout is not a terminal
    out = capsys.readouterr().out
    assert long in out and "…" not in out


def test_a_plain_prune_is_quiet_and_verbose_shows_every_pass(model_file, tmp_path, capsys):
    assert main(["prune", str(model_file), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5",
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 15, "\n".join(lines)
    assert any(ln.startswith("group widths: 6 of 7 groups changed") for ln in lines)
    assert any(ln.startswith("took ") and "peak memory" in ln for ln in lines)
    assert not any("time and peak memory per pass" in ln for ln in lines)
    assert main(["prune", str(model_file), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5",
                 "--force", "--quiet", "-v"]) == 0
    out = capsys.readouterr().out
    assert "time and peak memory per pass" in out and "closest to its tolerance" in out
    assert "group widths (6 of 7 groups changed)" in out


def test_quality_figures_show_the_digits_that_differ():
    from onnxprune.cli.report import stage_lines
    from onnxprune.figures import distinct

    assert distinct([1.0, 0.99996, 0.99999]) == ["1", "0.99996", "0.99999"]
    assert distinct([1.0, 0.5, 0.25]) == ["1", "0.5", "0.25"]  # no more digits than needed
    assert distinct([0.9, 0.9]) == ["0.9", "0.9"]  # equal values may read alike
    line = stage_lines({"metric": "cosine", "samples": {"calib": 8},
                        "stages": [{"stage": "unpruned", "calib": 1.0},
                                   {"stage": "pruned", "calib": 0.999991},
                                   {"stage": "compensate", "calib": 0.999996, "kept": False}]})
    assert line == ["cosine on 8 calibration samples (too few to hold any out): 1 (unpruned) "
                    "-> 0.999991 (pruned) -> 0.999996 (compensate, undone)"]


def test_the_cli_reference_is_the_one_the_parsers_generate():
    """docs/cli.md lists every command and flag from the option schema; regenerate it with
    ``python -m onnxprune.cli.reference > docs/cli.md`` when a flag changes."""
    from pathlib import Path

    from onnxprune.cli.reference import render

    text = render()
    for flag in ("--calib", "--calib-resize", "--memory", "--verbose", "--target-params"):
        assert f"`{flag}`" in text
    docs = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert docs.read_text() == text, "docs/cli.md is stale: python -m onnxprune.cli.reference"
