"""report.html in a real browser (headless Chromium; -m slow, scripts/test-slow.sh installs
Debian's chromium): at a desktop and a phone-sized window the page loads every image, logs
nothing to the console, raises no error and never scrolls sideways. Screenshots of both go to
benchmarks/results/ (the README shows the desktop one)."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onnxprune.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and os.access(p, os.X_OK)), None)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/test-slow.sh "
                                 "installs it: apt-get install chromium)")]

DESKTOP, PHONE = (1280, 900), (390, 844)

# The page is opened, unchanged, in an iframe of exactly the window's size (headless Chromium
# lays a top-level page out at least 500 px wide); once it has loaded, the frame's title says
# what the page could not do.
FRAME = """<!DOCTYPE html>
<html><head><title>probe</title><style>body {{ margin: 0 }} iframe {{ border: 0 }}</style></head>
<body><iframe id="f" src="{src}" width="{width}" height="{height}"></iframe>
<script>
const f = document.getElementById("f");
f.addEventListener("load", () => {{
  let state;
  try {{
    const d = f.contentDocument, w = f.contentWindow;
    const images = Array.from(d.images);
    state = {{
      images: images.length,
      broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
      width: w.innerWidth,
      scrollWidth: d.documentElement.scrollWidth,
      narrow: w.matchMedia("(max-width: 520px)").matches,
      scripts: d.scripts.length,
    }};
  }} catch (e) {{
    state = {{error: String(e)}};
  }}
  document.title = "PROBE " + JSON.stringify(state);
}});
</script></body></html>
"""


def framed(tmp: Path, page: Path, size: tuple[int, int]) -> Path:
    out = tmp / f"frame-{size[0]}x{size[1]}.html"
    out.write_text(FRAME.format(src=page.as_uri(), width=size[0], height=size[1]))
    return out


def chromium(tmp: Path, size: tuple[int, int], *args: str) -> subprocess.CompletedProcess:
    window = f"--window-size={max(size[0], 520)},{size[1]}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-extensions", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}", window,
         *args], capture_output=True, text=True, timeout=180)


def console_lines(stderr: str) -> list[str]:
    """What the page said on its console (Chromium logs each as a CONSOLE line)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report with every section: a trained autoencoder, sensitivity on PSNR, compensation
    and a benchmark."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    work = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ONNXPRUNE_PROGRESS_INTERVAL", "3600")
        mp.chdir(work)
        for argv in (["zoo", "export", "autoencoder", "-o", "ae.onnx", "--train", "-q"],
                     ["data", "digits", "-o", "digits.npz", "--count", "256"],
                     ["prune", "ae.onnx", "-o", "small.onnx", "--calib", "digits.npz",
                      "--metric", "psnr", "--strategy", "sensitivity", "--target-params", "0.5",
                      "--compensate", "--bench", "--bench-batch", "1,16", "--bench-seconds",
                      "0.5", "--report", "report", "-q"]):
            assert main(argv) == 0, argv
    return work / "report"


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_page_renders_and_every_image_loads(report, tmp_path, size):
    frame = framed(tmp_path, report / "report.html", size)
    run = chromium(tmp_path, size, "--dump-dom", frame.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    title = re.search(r"<title>PROBE (.*?)</title>", run.stdout, re.S)
    assert title, run.stdout[:2000]
    state = json.loads(html.unescape(title.group(1)))
    data = json.loads((report / "report.json").read_text())
    assert "error" not in state, state
    assert state["images"] == len(data["report"]["images"]) >= 8
    assert state["broken"] == [] and state["scripts"] == 0
    assert state["width"] == size[0]
    assert state["narrow"] == (size == PHONE)  # the phone layout applies at phone width only
    assert state["scrollWidth"] <= size[0]  # wide tables scroll inside the page, not the page
    assert console_lines(run.stderr) == []  # no errors, no messages at all


def test_screenshots(report, tmp_path):
    from PIL import Image

    RESULTS.mkdir(parents=True, exist_ok=True)
    for size, name in (((1280, 1500), "report_screenshot.png"),
                       ((390, 1500), "report_screenshot_phone.png")):
        out = tmp_path / name
        frame = framed(tmp_path, report / "report.html", size)
        run = chromium(tmp_path, size, f"--screenshot={out}", frame.as_uri())
        assert run.returncode == 0 and out.is_file(), run.stderr[-2000:]
        assert console_lines(run.stderr) == []
        image = Image.open(out).convert("RGB").crop((0, 0, *size))
        assert len(image.getcolors(1 << 20)) > 200  # a page, not a blank
        image.save(RESULTS / name, optimize=True)
