"""index.html of the demo sweep in a real headless browser (Debian's chromium, installed by
tests/report/browser/install-chromium.sh, which `make test` runs): it loads with no failed resource and no console
error, every figure has a non-zero size, and a full-page screenshot is not blank.

The demo grid (grids/demo_digits.yaml, 20 runs on digits) is trained once for this module on the local pool, as
`make demo` does: about 2-4 minutes on 2 cores. The numbers behind the figures are checked on synthetic stores
(test_figures_data.py, tests/sweep/test_report_cli.py)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from lsbench.sweep import api

DEMO_GRID = api.SHIPPED_GRIDS_BASE / "grids" / "demo_digits.yaml"

# Appended to a copy of the page (the page itself runs no script): writes what the browser laid out into the DOM,
# which --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = [...document.querySelectorAll("img, svg")].map(e => {
    const r = e.getBoundingClientRect();
    return {w: r.width, h: r.height, natural: e.naturalWidth === undefined ? 1 : e.naturalWidth, done: e.complete};
  });
  const failed = performance.getEntriesByType("resource").filter(r => r.responseStatus >= 400).length;
  document.body.setAttribute("data-probe", JSON.stringify({sizes, failed}));
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is missing: run tests/report/browser/install-chromium.sh (make test does)"
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> api.ReportResult:
    """The demo sweep submitted on the local pool and waited for (once for the module), then its report."""
    root = tmp_path_factory.mktemp("sweeps")
    env = {**os.environ, "LSBENCH_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    submitted = subprocess.run(
        [sys.executable, "-m", "lsbench", "sweep", "submit", str(DEMO_GRID), "--wait", "--json"],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    assert json.loads(submitted.stdout)["runs"] == 20
    return api.report("demo_digits", root=root)


@pytest.fixture(scope="module")
def page(demo) -> Path:
    return demo.index


def test_demo_report_has_every_figure_of_its_one_problem(demo):
    names = {figure.name for figure in demo.figures}
    assert {"box_digits_mlp_penalized", "box_digits_mlp_excluded", "curves_digits_mlp", "cost"} <= names
    assert demo.index.parent.name == "reports" and demo.index.parent.parent.name == "demo_digits"


def test_page_loads_without_errors_and_every_figure_is_visible(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    result = _run("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Failed to load resource" in line]
    assert console == []
    match = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert match, result.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["failed"] == 0
    figures = page.read_text().count("<figure ")
    assert figures >= 4 and len(probe["sizes"]) == figures
    assert all(s["w"] > 0 and s["h"] > 0 and s["natural"] > 0 and s["done"] for s in probe["sizes"])


def test_full_page_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    result = _run(f"--screenshot={shot}", "--window-size=1200,4000", "--hide-scrollbars", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.05 and not_white > 0.05
