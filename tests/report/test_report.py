"""Reports (--report DIR): report.json is the object --json prints plus the command, report.html
shows those numbers and every figure it names, one curve per searched group; nothing is
written unless the model is, and a folder that cannot take a report is refused up front."""

import json
import shlex
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import saved
from test_components import agent

from onnxprune.api import prune
from onnxprune.cli.main import main
from onnxprune.errors import (
    EXIT_CONSTRAINT,
    EXIT_OUTPUT,
    EXIT_USAGE,
    OnnxPruneWarning,
    OutputError,
    UsageError,
)
from onnxprune.zoo.builder import demo_cnn

pytest.importorskip("matplotlib")
from onnxprune.report import plots  # noqa: E402 - after the skip

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_terminal_progress(monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_PROGRESS_INTERVAL", "3600")


@pytest.fixture
def cnn(demo_file):
    return demo_file


@pytest.fixture
def agent_file(tmp_path):
    return saved(agent(), tmp_path / "agent.onnx")


class Page(HTMLParser):
    """What a test reads off report.html: the text, tables (rows of cell texts), images,
    title attributes (exact values), links and scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.titles, self.tables, self.links, self.scripts = [], [], [], [], 0
        self.chunks: list[str] = []
        self._row = self._cell = None
        self.feed(text)
        self.text = " ".join(self.chunks)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "title" in a:
            self.titles.append(a["title"])
        if tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag in ("a", "link") and "href" in a:
            self.links.append(a["href"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        self.chunks.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *head: str) -> list[list[str]]:
        """The rows (header left out) of the table whose header starts with ``head``."""
        return next(t[1:] for t in self.tables if t and tuple(t[0][:len(head)]) == head)


def exact(page: Page, value: float) -> bool:
    """A float is on the page with its exact JSON text (as a title)."""
    return json.dumps(value) in page.titles


def check_report(folder: Path, printed: dict | None = None) -> tuple[dict, Page]:
    """What every report must satisfy; returns report.json and the parsed page."""
    data = json.loads((folder / "report.json").read_text())
    page = Page((folder / "report.html").read_text())
    if printed is not None:  # the --json object, but for the report pass's own time
        for key, value in printed.items():
            if key == "timings":
                value = {k: v for k, v in value.items() if k != "report"}
            if key == "memory":
                assert data[key]["per_pass"] == {k: v for k, v in value["per_pass"].items()
                                                 if k != "report"}
                continue
            assert data[key] == value, key
    for key in ("params_before", "params_after", "macs_before", "macs_after"):
        assert f"{data[key]:,}" in page.text, key
    wall = data["wall_seconds"]  # the TIME card: the run's wall time, not its passes' sum
    assert wall >= sum(data["timings"].values()) - 1e-6
    assert wall <= sum(data["timings"].values()) + 10  # from the run's start, not a flag
    assert f"{wall:.2f} s" in page.text
    for side in ("input", "output"):
        size = data["report"]["files"][side]["bytes"]
        assert size == Path(data[side]).stat().st_size
        assert f"{size:,} bytes" in page.titles
    components = {g["id"]: g["component"] for g in data["report"]["groups"]}
    if any(components.values()):  # a component column only when there are components
        rows = page.table("group", "component", "layers", "before", "after")
        assert [r[1] for r in rows] == [components[g["id"]] or "–" for g in data["groups"]]
        rows = [[r[0], *r[2:]] for r in rows]
    else:
        rows = page.table("group", "layers", "before", "after")
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (str(g["id"]), f"{g['before']:,}", f"{g['after']:,}") for g in data["groups"]]
    v = data["verification"]
    assert v["passed"] and exact(page, v["oracle_max_abs_diff"])
    assert exact(page, v["oracle_max_rel_diff"])
    for shapes in v["shapes"]:
        text = ", ".join(f"{k} {'x'.join(map(str, d))}" for k, d in shapes.items())
        assert text in page.text
    if data["stages"]:
        for row in data["stages"]["stages"]:
            for key in data["stages"]["samples"]:
                assert exact(page, row[key]), (row, key)
    for name, secs in data["timings"].items():
        row = next(r for r in page.table("pass", "seconds") if r[0] == name)
        assert row[1] == format(secs, ".3g")
    for w in data["warnings"]:
        assert w in page.text
    # every image the page shows is a PNG beside it, at the size the page gives it
    shown = {im["src"] for im in page.images}
    assert shown == set(data["report"]["images"]) == {p.name for p in folder.glob("*.png")}
    for im in page.images:
        head = (folder / im["src"]).read_bytes()[:24]
        assert head[:8] == PNG
        assert (int(im["width"]), int(im["height"])) == (int.from_bytes(head[16:20], "big"),
                                                         int.from_bytes(head[20:24], "big"))
    assert page.scripts == 0 and not [u for u in page.links if "//" in u]
    assert "http://" not in (folder / "report.html").read_text().replace(
        "http://www.w3.org", "")  # no network
    assert data["command"] and data["command"] in page.text
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp left
    return data, page


def test_cnn_report_with_bench_is_the_printed_json(cnn, tmp_path, capsys):
    rep = tmp_path / "rep"
    argv = ["prune", str(cnn), "-o", str(tmp_path / "small.onnx"), "--ratio", "0.5",
            "--bench", "--bench-seconds", "0.1", "--report", str(rep), "--json", "-q"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    data, page = check_report(rep, printed)
    # the report waits for the benchmark: exactly the printed object, the command, the extras
    assert data == {**printed, "command": shlex.join(["onnxprune", *argv]),
                    "report": data["report"], "wall_seconds": data["wall_seconds"]}
    assert {"widths.png", "passes.png", "bench.png"} <= set(data["report"]["images"])
    for r in data["bench"]["results"]:
        assert exact(page, r["p50"]) and exact(page, r["throughput"])
    by_op = data["report"]["params_by_op"]
    assert sum(b for b, _ in by_op.values()) == data["params_before"]
    assert sum(a for _, a in by_op.values()) == data["params_after"]
    assert {"Conv", "Gemm"} <= by_op.keys()


def test_component_agent_report_colours_groups_by_component(agent_file, tmp_path, capsys):
    from PIL import Image

    rep = tmp_path / "rep"
    argv = ["prune", str(agent_file), "-o", str(tmp_path / "small.onnx"), "--components",
            "auto", "--strategy", "soft", "--target-params", "0.5", "--calib-random", "16",
            "--compensate", "--report", str(rep), "--json", "-q"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    data, page = check_report(rep, printed)
    assert data["command"] == shlex.join(["onnxprune", *argv])
    comps = {g["component"] for g in data["report"]["groups"]}
    assert {"encoder", "dynamics", "reward", "pi", "q"} <= comps
    # every component's colour is in the width chart (bars are filled in it)
    pixels = {c for _, c in Image.open(rep / "widths.png").convert("RGB").getcolors(1 << 20)}
    for name, color in plots.component_colors(data).items():
        rgb = tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in pixels, name
    sel = data["selection"]
    assert len(sel["coefficients"]) == len(sel["coefficient_groups"]) > 0
    assert "coefficients.png" in data["report"]["images"]
    rows = page.table("group", "coefficient")
    assert [r[0] for r in rows] == [str(g) for g in sel["coefficient_groups"]]
    assert all(exact(page, c) for c in sel["coefficients"])
    assert [s["stage"] for s in data["stages"]["stages"]][-1] == "compensate"
    assert "stages.png" in data["report"]["images"]
    fits = page.table("layer", "rows", "error before")
    assert [r[0] for r in fits] == [f["layer"] for f in data["recovery"]["compensate"]]
    assert data["verification"]["shapes"]  # the removal's oracle shapes survive recovery


def test_sensitivity_report_has_one_curve_per_searched_group(agent_file, tmp_path):
    rep, out = tmp_path / "rep", tmp_path / "small.onnx"
    r = prune(agent_file, out, strategy="sensitivity", calib_random=16, report=rep)
    assert r.report == rep / "report.html"
    data, page = check_report(rep)
    assert data["command"].startswith(f"onnxprune.prune({str(agent_file)!r}, {str(out)!r}, ")
    assert "strategy='sensitivity'" in data["command"] and f"report={str(rep)!r}" in data["command"]
    curves = data["selection"]["curves"]
    searched = [g["id"] for g in data["report"]["groups"] if not g["frozen"]]
    assert sorted(c["group"] for c in curves) == searched
    names = sorted(p.name for p in rep.glob("curve-*.png"))
    assert names == sorted(f"curve-{c['group']}.png" for c in curves)
    assert {im["src"] for im in page.images} >= set(names)
    rows = page.table("group", "channels", "fraction cut")
    assert [r[0] for r in rows] == [str(c["group"]) for c in curves]
    for c in curves:
        assert exact(page, c["chosen"]) and all(exact(page, m) for m in c["metric"])

    # a new report in the same folder replaces this one's files and leaves others alone
    (rep / "notes.txt").write_text("mine")
    with pytest.warns(OnnxPruneWarning, match="target: remove 0.99"):
        prune(agent_file, out, strategy="global", target_params=0.99, report=rep)
    data, page = check_report(rep)
    assert not list(rep.glob("curve-*.png")) and (rep / "notes.txt").read_text() == "mine"
    assert data["selection"]["strategy"] == "global"
    assert any(w.startswith("target: remove 0.99") for w in data["warnings"])


def test_run_recipe_report(cnn, tmp_path, capsys):
    rep = tmp_path / "rep"
    argv = ["run", "magnitude-uniform", str(cnn), "-o", str(tmp_path / "r.onnx"), "--report",
            str(rep), "--json", "-q"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "report" in printed["timings"]  # a pass after write
    data, _ = check_report(rep, printed)
    assert data["command"] == shlex.join(["onnxprune", *argv])
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[pass]]\nname = "normalize"\n[[pass]]\nname = "report"\nfolder = "x"\n')
    assert main(["run", str(recipe), str(cnn), "-o", str(tmp_path / "x.onnx")]) == EXIT_USAGE
    assert "'report' comes from --report" in capsys.readouterr().err


def test_nothing_is_written_when_the_run_fails(cnn, agent_file, tmp_path, capsys):
    rep, empty = tmp_path / "rep", tmp_path / "empty"
    empty.mkdir()
    for folder in (rep, empty):
        code = main(["prune", str(agent_file), "-o", str(tmp_path / "s.onnx"), "--strategy",
                     "sensitivity", "--calib-random", "8", "--constraint", "cosine>=1.5",
                     "--report", str(folder), "-q"])
        assert code == EXIT_CONSTRAINT
    assert not rep.exists() and list(empty.iterdir()) == []
    assert not (tmp_path / "s.onnx").exists()
    code = main(["prune", str(cnn), "-o", str(tmp_path / "nowhere" / "s.onnx"), "--report",
                 str(rep), "-q"])
    assert code == EXIT_OUTPUT and not rep.exists()
    capsys.readouterr()


def test_a_folder_that_cannot_take_a_report_is_refused_before_any_work(cnn, tmp_path, capsys,
                                                                         monkeypatch):
    out = tmp_path / "small.onnx"
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for argv in (["prune", str(cnn), "-o", str(out), "--report", str(taken)],
                 ["run", "magnitude-uniform", str(cnn), "-o", str(out), "--report", str(taken)],
                 ["prune", str(cnn), "-o", str(out), "--bench", "--report", str(taken)],
                 ["prune", str(cnn), "-o", str(out), "--report", str(tmp_path / "no" / "r")],
                 ["prune", str(cnn), "-o", str(tmp_path / "rep" / "report.html"), "--report",
                  str(tmp_path / "rep")]):
        (tmp_path / "rep").mkdir(exist_ok=True)
        assert main(argv) == EXIT_OUTPUT, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("onnxprune: error: "), err
        if str(taken) in argv:
            assert err[0].endswith("is a file, not a folder; refusing to replace it (give a "
                                   "folder path)"), err
    assert taken.read_text() == "a file" and not out.exists()
    assert list((tmp_path / "rep").iterdir()) == []
    calls = []
    with pytest.raises(OutputError, match="is a file, not a folder"):
        prune(cnn, out, report=taken, progress=calls.append)
    assert calls == []  # no pass ran
    with pytest.raises(UsageError, match="describes a written model"):
        prune(cnn, report=tmp_path / "rep")
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert main(["prune", str(cnn), "-o", str(out), "--report", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "--report: a report needs matplotlib" in err and not out.exists()


def test_a_folder_nobody_can_write_is_refused(cnn, tmp_path, read_only_dir, capsys):
    out = tmp_path / "small.onnx"
    for folder in (read_only_dir, read_only_dir / "new"):
        assert main(["prune", str(cnn), "-o", str(out), "--report", str(folder)]) == EXIT_OUTPUT
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not writable" in err[0], err
    assert not out.exists() and list(read_only_dir.iterdir()) == []


def test_a_model_in_memory_gets_a_report(tmp_path):
    rep = tmp_path / "rep"
    r = prune(demo_cnn(), tmp_path / "small.onnx", ratio=0.25, report=rep)
    data = json.loads((rep / "report.json").read_text())
    assert data["input"] is None and data["report"]["files"]["input"]["bytes"] is None
    assert data["command"].startswith("onnxprune.prune(<ModelProto>, ")
    assert data["params_after"] == r.params_after
    assert "a model in memory" in (rep / "report.html").read_text()


def test_the_report_names_the_blocks_removed(cnn, tmp_path, capsys):
    folder = tmp_path / "report"
    code = main(["prune", str(cnn), "-o", str(tmp_path / "small.onnx"), "--remove-blocks", "1",
                 "--report", str(folder), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    data, page = check_report(folder, printed)
    assert [b["name"] for b in data["depth"]["removed"]] == ["block1_add"]
    row = next(r for t in page.tables for r in t if r and r[0] == "blocks removed")
    assert row[1].startswith("1 of 1 removable, by influence on random data: block1_add (conv, ")
