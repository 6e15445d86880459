"""``onnxprune bench``: measurement, statistics, reports, provider handling and the CLI."""

import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rich.console import Console

import onnxprune
from onnxprune.analysis.size import graph_macs, graph_params
from onnxprune.bench import providers as bench_providers
from onnxprune.bench import runner
from onnxprune.bench.memory import HostPeak, host_memory_available
from onnxprune.bench.render import markdown, plot, print_table
from onnxprune.bench.report import ROW_KEYS
from onnxprune.bench.runner import run_bench
from onnxprune.bench.stats import summarize
from onnxprune.bench.workload import load_models
from onnxprune.cli.bench import add_parser, cmd_bench
from onnxprune.errors import OutputError, UnsupportedModelError, UsageError
from onnxprune.ir.graph import import_model, infer_shapes
from onnxprune.zoo.builder import GraphBuilder, demo_cnn

FAST = {"warmup": 1, "repeat": 20}
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
TENSORRT = "TensorrtExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    original, pruned = d / "demo_cnn.onnx", d / "demo_cnn.pruned.onnx"
    onnx.save(demo_cnn(), str(original))
    onnx.save(onnxprune.prune(demo_cnn(), ratio=0.5).model, str(pruned))
    return original, pruned


@pytest.fixture(scope="module")
def report(models):
    return run_bench(list(models), batches=[1, 4], **FAST)


def _per_sample_macs(path):
    return graph_macs(infer_shapes(import_model(onnx.load(str(path)))))


def _small_conv(dims):
    b = GraphBuilder(seed=1)
    x = b.input("x", dims)
    return b.build([b.relu(b.conv(x, 3, 8, name="c"))], "small")


def _row(report, model, batch, provider="cpu"):
    return next(r for r in report.to_json()["results"]
                if r["model"] == model and r["batch"] == batch and r["provider"] == provider)


# -- statistics and measurement -------------------------------------------------------------

def test_summarize():
    lat = summarize([1_000_000, 2_000_000, 3_000_000, 4_000_000], batch=8)
    assert (lat.runs, lat.p50, lat.mean) == (4, 2.5, 2.5)
    assert lat.p90 == pytest.approx(3.7) and lat.p99 == pytest.approx(3.97)
    assert lat.throughput == pytest.approx(8 * 1000 / 2.5)


@pytest.mark.skipif(not host_memory_available(), reason="psutil not installed")
def test_host_peak_sees_a_transient_allocation():
    """A 64 MB allocation held 50 ms (50 samples) and freed inside the block is counted."""
    with HostPeak() as m:
        a = np.ones(8_000_000)  # 64 MB, freed inside the block
        time.sleep(0.05)
        del a
    assert m.delta >= 48 * 2**20


def test_json_schema_and_values(report, models):
    data = json.loads(json.dumps(report.to_json()))
    original, pruned = (p.name for p in models)
    assert data["original"] == original and data["models"] == [original, pruned]
    assert len(data["results"]) == 4  # 2 models x 1 provider x 2 batches
    for row in data["results"]:
        assert set(ROW_KEYS) <= row.keys()
        assert row["provider"] == "cpu" and row["runs"] == FAST["repeat"]
        assert 0 < row["p50"] <= row["p90"] <= row["p99"]
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / row["mean"], rel=1e-9)
        if host_memory_available():
            assert isinstance(row["peak_mem"], int) and row["peak_mem"] >= 0
    base = _row(report, original, 1)
    assert base["speedup"] == base["efficiency"] == 1.0
    assert _row(report, original, 4)["peak_mem"] > 0 or not host_memory_available()


def test_macs_are_per_run_and_scale_with_batch(report, models):
    for path in models:
        one, four = _row(report, path.name, 1), _row(report, path.name, 4)
        assert one["macs"] == _per_sample_macs(path) > 0  # batch 1: the metrics' per-sample count
        assert four["macs"] == 4 * one["macs"]


def test_params_and_efficiency(report, models):
    original, pruned = models
    for path in models:
        expected = graph_params(import_model(onnx.load(str(path))))
        assert _row(report, path.name, 1)["params"] == expected
        assert _row(report, path.name, 4)["params"] == expected
    for batch in (1, 4):
        base, row = _row(report, original.name, batch), _row(report, pruned.name, batch)
        assert row["speedup"] == pytest.approx(base["p50"] / row["p50"])
        reduction = base["macs"] / row["macs"]
        assert reduction > 2 and row["efficiency"] == pytest.approx(row["speedup"] / reduction)


def test_speedup_against_itself_is_one_within_noise(models):
    result = run_bench([models[0], models[0]], warmup=5, repeat=100)
    twin = result.rows[1]
    assert twin.model == "demo_cnn.onnx#2" and twin.mac_reduction == 1.0
    assert 0.6 < twin.speedup < 1 / 0.6


def test_sessions_first_then_models_alternate(models, monkeypatch):
    events, options = [], []

    def recording(model, provider, feeds, threads=None):
        session = bench_providers.open_session(model, provider, feeds, threads)
        options.append(session.session.get_session_options())
        events.append(("open", model.name))
        inner = session.run
        session.run = lambda: (events.append(("run", model.name)), inner())
        return session

    monkeypatch.setattr(runner, "open_session", recording)
    run_bench(list(models), threads=1, warmup=3, repeat=4)
    names = [p.name for p in models]
    last_open = max(i for i, e in enumerate(events) if e[0] == "open")
    assert [e for e in events[:last_open + 1] if e[0] == "open"] == [("open", n) for n in names]
    after = [name for kind, name in events[last_open + 2:]]  # past the last model's first run
    assert after == names * (3 + 4)  # warmup and timed rounds: A B A B ...
    assert all(o.intra_op_num_threads == 1 for o in options)
    assert all(o.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
               for o in options)


def test_time_budget_gives_every_model_the_same_runs(models):
    result = run_bench(list(models), warmup=0, seconds=0.2)
    runs = {r.runs for r in result.rows}
    assert len(runs) == 1 and runs.pop() >= runner.MIN_ROUNDS
    assert result.settings["seconds"] == 0.2 and result.settings["repeat"] is None


def test_repeat_and_seconds_are_exclusive(models):
    with pytest.raises(UsageError):
        run_bench([models[0]], repeat=3, seconds=1)


# -- shapes ---------------------------------------------------------------------------------

def test_dynamic_batch_and_fixed_batch(tmp_path):
    dynamic, fixed = tmp_path / "dynamic.onnx", tmp_path / "fixed.onnx"
    onnx.save(_small_conv(["n", 3, 8, 8]), str(dynamic))
    onnx.save(_small_conv([1, 3, 8, 8]), str(fixed))
    notices = []
    result = run_bench([dynamic, fixed], batches=[1, 3], notice=notices.append, **FAST)
    assert [(r.model, r.batch) for r in result.rows] == [
        ("dynamic.onnx", 1), ("fixed.onnx", 1), ("dynamic.onnx", 3)]
    assert notices == ["skipping fixed.onnx at batch 3: its inputs fix the batch to 1"]
    per_sample = 8 * 8 * 8 * 3 * 9
    assert [r.macs for r in result.rows] == [per_sample, per_sample, 3 * per_sample]


def test_dynamic_spatial_dims_are_chosen_or_given(tmp_path):
    path = tmp_path / "any_size.onnx"
    onnx.save(_small_conv(["n", 3, "h", "w"]), str(path))
    chosen = run_bench([path], **FAST)  # the first size the model runs at, as prune chooses
    assert chosen.settings["input_shapes"]["x"] == [1, 3, 32, 32]
    assert chosen.rows[0].macs == 32 * 32 * 8 * 3 * 9
    result = run_bench([path], batches=[2], input_shapes={"x": [1, 3, 16, 8]}, **FAST)
    assert result.rows[0].macs == 2 * 16 * 8 * 8 * 3 * 9  # the batch replaces the given dim 0
    with pytest.raises(UsageError, match="names no model input"):
        run_bench([path], input_shapes={"y": [1, 3, 4, 4]}, **FAST)


# -- reports --------------------------------------------------------------------------------

def test_markdown_and_table(report, models):
    md = markdown(report).splitlines()
    assert md[0].startswith("| model | provider | batch | p50 ms |") and md[1].startswith("|---|")
    assert len([line for line in md if line.startswith("| demo_cnn")]) == 4
    console = Console(record=True, width=220)
    print_table(report, console)
    text = console.export_text()
    assert models[1].name in text and "efficiency" in text


def test_plot_writes_a_png(report, tmp_path):
    path = plot(report, tmp_path / "bench.png")
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# -- providers ------------------------------------------------------------------------------

@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(bench_providers.ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])


def test_single_unavailable_provider_is_a_one_line_error(models, cpu_only):
    with pytest.raises(UnsupportedModelError) as err:
        run_bench([models[0]], providers=["cuda"], **FAST)
    message = str(err.value)
    assert "\n" not in message and message.startswith("execution provider cuda is not available")


def test_unavailable_provider_among_several_is_skipped(models, cpu_only):
    notices = []
    result = run_bench([models[0]], providers=["cpu", "tensorrt"], notice=notices.append, **FAST)
    assert {r.provider for r in result.rows} == {"cpu"}
    assert len(notices) == 1 and notices[0].startswith("skipping provider tensorrt")
    assert "\n" not in notices[0] and result.notices == notices
    with pytest.raises(UnsupportedModelError, match="none of the execution providers"):
        run_bench([models[0]], providers=["cuda", "tensorrt"], notice=notices.append, **FAST)


def test_unknown_provider(models):
    with pytest.raises(UsageError, match="unknown provider 'tpu'"):
        run_bench([models[0]], providers=["tpu"], **FAST)


def test_io_binding_session_matches_plain_run(models):
    """The device code path (bound inputs and outputs), run with the host as the device."""
    host_bound = bench_providers.Provider("cpu", ("CPUExecutionProvider",), "cpu")
    m = load_models([models[1]])[0]
    feeds = m.feeds(m.shapes(3))
    session = bench_providers.open_session(m, host_bound, feeds)
    assert isinstance(session, bench_providers.DeviceSession)
    session.run()
    got = session.binding.copy_outputs_to_cpu()[0]
    want = ort.InferenceSession(m.source).run(None, feeds)[0]
    assert got.shape == (3, 10) and np.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not CUDA, reason="CUDAExecutionProvider not available")
def test_cuda_with_io_binding(models):
    result = run_bench(list(models), providers=["cuda"], batches=[1, 8], **FAST)
    assert {r.provider for r in result.rows} == {"cuda"} and len(result.rows) == 4
    assert all(0 < r.p50 <= r.p90 <= r.p99 for r in result.rows)
    m = load_models([models[0]])[0]
    session = bench_providers.open_session(m, bench_providers.PROVIDERS["cuda"],
                                           m.feeds(m.shapes(2)))
    assert isinstance(session, bench_providers.DeviceSession)
    session.run()
    out = session.binding.get_outputs()[0]
    assert out.device_name().lower() == "cuda" and out.shape() == [2, 10]


@pytest.mark.skipif(not TENSORRT, reason="TensorrtExecutionProvider not available")
def test_tensorrt(models):
    result = run_bench([models[0]], providers=["tensorrt"], **FAST)
    assert result.rows[0].provider == "tensorrt"


# -- command line ---------------------------------------------------------------------------

def _parse(*argv):
    parser = argparse.ArgumentParser(prog="onnxprune")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_cli_writes_json_markdown_and_plot(models, tmp_path, capsys):
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "png")}
    args = _parse(*map(str, models), "--batch", "1,2", "--warmup", "1", "--repeat", "5",
                  "--threads", "1", "--json", str(out["json"]), "--markdown", str(out["md"]),
                  "--plot", str(out["png"]))
    console = Console(record=True, width=220)
    assert cmd_bench(args, console) == 0
    data = json.loads(out["json"].read_text())
    assert [(r["model"], r["batch"]) for r in data["results"]] == [
        (models[0].name, 1), (models[1].name, 1), (models[0].name, 2), (models[1].name, 2)]
    assert data["settings"]["threads"] == 1 and data["settings"]["repeat"] == 5
    assert out["md"].read_text().startswith("| model |")
    assert out["png"].read_bytes()[:4] == b"\x89PNG"
    assert "demo_cnn.pruned.onnx" in console.export_text()
    assert "measuring cpu, batch 2" in capsys.readouterr().err


def test_cli_json_to_stdout(models, capsys):
    args = _parse(str(models[0]), "--repeat", "3", "--warmup", "0", "--json", "-")
    assert cmd_bench(args, Console()) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["runs"] == 3


def test_cli_defaults_and_usage_errors(models, capsys, monkeypatch):
    """The flags come from the option schema (bench/options.py): defaults as documented, and a
    bad value is one line naming its flag, exit 2, before anything runs."""
    from onnxprune.bench.options import bench_values
    from onnxprune.cli.bench import OWNED
    from onnxprune.cli.flags import given
    from onnxprune.cli.main import main

    v = bench_values(given(_parse(str(models[0])), OWNED))
    assert (v["providers"], v["batches"], v["warmup"]) == (["cpu"], [1], 10)
    assert v["repeat"] is None and v["seconds"] is None  # run_bench then uses 3 s
    monkeypatch.setattr("onnxprune.cli.bench.run_bench", lambda *a, **k: pytest.fail("ran"))
    for bad, flag in ((["--repeat", "5", "--seconds", "1"], "--seconds"),
                      (["--batch", "0"], "--batch"), (["--batch", "a,b"], "--batch"),
                      (["--provider", "tpu"], "--provider"),
                      (["--input-shape", "x=1xq"], "--input-shape"),
                      (["--warmup", "-1"], "--warmup")):
        assert main(["bench", str(models[0]), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"onnxprune: error: {flag}: "), err
    v = bench_values(given(_parse(str(models[0]), "--input-shape", "x=1x3x8x8", "--seconds",
                                  "0.5", "--batch", "1,4"), OWNED))
    assert v["input_shapes"] == {"x": [1, 3, 8, 8]} and v["seconds"] == 0.5
    assert v["batches"] == [1, 4]
    assert given(_parse(str(models[0]), "--json"), OWNED)["json"] == "-"  # alone: print


def test_cli_checks_outputs_before_measuring(models, tmp_path, monkeypatch):
    monkeypatch.setattr("onnxprune.cli.bench.run_bench", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(OutputError, match="does not exist"):
        cmd_bench(_parse(str(models[0]), "--json", str(tmp_path / "no" / "r.json")), Console())
    with pytest.raises(OutputError, match="overwrite an input"):
        cmd_bench(_parse(str(models[0]), "--markdown", str(models[0])), Console())
    with pytest.raises(UsageError, match="unknown image type"):
        cmd_bench(_parse(str(models[0]), "--plot", str(tmp_path / "p.xyz")), Console())


def test_benchmarked_sessions_do_not_spin_between_runs():
    """Models run alternately: a session whose threads spin after its run takes the cores from
    the next model (ResNet-50 measured 48 ms beside its cut and 25 ms alone); the bench here
    and the device script over SSH use the same settings."""
    from onnxprune.bench import on_device
    from onnxprune.bench.providers import session_options

    for opts in (session_options(), session_options(2), on_device.session_options()):
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(3).intra_op_num_threads == 3
