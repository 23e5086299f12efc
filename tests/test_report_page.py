"""report.html as a person reads it: the answer first, a verdict matrix, readable tables, and nothing that runs off
a 1300 px laptop window, checked in a real headless Chromium (Debian's `chromium`; .ci/run installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from synthetic import write_study
from tune_jobs.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Layout probe: every visible element's right edge, except those inside a scroll box (which must fit itself).
PROBE = """<script>
window.addEventListener('load', () => {
  const width = window.innerWidth, out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.closest('.scroll');
    const r = el.getBoundingClientRect();
    if (r.width === 0 || (box && box !== el)) continue;
    if (r.right > width + 0.5 || r.left < -0.5) out.push(el.tagName + ' ' + (el.id || el.className || '') +
      ' ' + Math.round(r.left) + '..' + Math.round(r.right) + ': ' + (el.textContent || '').slice(0, 60));
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-probe';
  pre.textContent = JSON.stringify({width: width, scrollWidth: document.documentElement.scrollWidth, overflow: out});
  document.body.appendChild(pre);
});
</script>"""

GROUPS = [  # an RTE-sized study: ties, a noisy baseline, one diverged seed, three groups at the same % of parameters
    {"scenario": "lora_all", "mean": 0.66, "params_pct": 1.54},
    {"scenario": "upper", "mean": 0.64, "params_pct": 1.38},
    {"scenario": "lower", "mean": 0.62, "params_pct": 1.38},
    {"scenario": "even", "mean": 0.63, "params_pct": 1.38},
    {"scenario": "classifier_only", "mean": 0.55, "params_pct": 0.475, "scale": 5},
    {"scenario": "full_ft", "mean": 0.65, "params_pct": 100, "diverged_seeds": [2]},
    {"scenario": "lora_all", "model": "roberta-base", "mean": 0.70, "params_pct": 1.54},
]


class Page(HTMLParser):
    """The order of headings and blocks, table headers by table id, and the headline's sentences."""

    def __init__(self):
        super().__init__()
        self.order, self.headers, self.headline, self.cells = [], {}, [], {}
        self._table, self._in, self._tag = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag in ("h1", "h2") or (tag == "div" and attrs.get("class") == "headline"):
            self.order.append(attrs.get("class") or tag)
        if tag == "div" and attrs.get("class") == "headline":
            self._in = "headline"
        if tag == "table":
            self._table = attrs.get("id")
            self.headers[self._table], self.cells[self._table] = [], []
        if tag == "td" and self._table == "verdicts":
            self.cells["verdicts"].append(attrs.get("class"))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag == "div":
            self._in = None

    def handle_data(self, data):
        if self._tag == "th" and self._table and data.strip():
            self.headers[self._table].append(data.strip())
        if self._in == "headline" and self._tag == "p" and data.strip():
            self.headline.append(data.strip())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page")
    pq_dir = write_study(root / "pq", GROUPS, seeds=5, examples=277)
    assert main(["report", str(pq_dir), "--out", str(root / "rep")]) == 0
    return root / "rep"


def test_the_page_opens_with_the_answer_and_a_verdict_matrix(report):
    page = Page()
    page.feed((report / "report.html").read_text())
    assert page.order[:2] == ["h1", "headline"]  # the answer before any table or method
    assert page.headline[0].startswith("Best mean: lora_all r=8 model=roberta-base")
    assert any(line.startswith("Worse than lora_all r=8 model=roberta-base:") for line in page.headline)
    assert len(page.cells["verdicts"]) == 7 * 7 and set(page.cells["verdicts"]) <= {
        "v-better", "v-worse", "v-equivalent", "v-inconclusive", "v-undetermined", "v-self", "v-none"}
    for table in ("summary", "comparisons"):  # headers in words, not column names
        assert page.headers[table] and not [h for h in page.headers[table] if "_" in h], page.headers[table]
    html = (report / "report.html").read_text()
    assert "777.1719" not in html and ">777<" in html  # numbers rounded to their precision
    assert "diverged: train loss nan at epoch 1" in html and "1 diverged" in html


def test_group_labels_in_the_params_plot_do_not_overprint():
    import numpy as np
    import pandas as pd

    from analysis import plots

    summary = pd.DataFrame({"group": ["upper r=8", "even r=8", "lower r=8", "lora_all r=8"],
                            "params_relative_pct": [1.38, 1.38, 1.38, 1.54], "mean": [0.641, 0.632, 0.628, 0.66],
                            "ci95_low": [0.63, 0.62, 0.62, 0.65], "ci95_high": [0.65, 0.64, 0.64, 0.67]})
    fig = plots.accuracy_vs_params(summary, "val_accuracy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 4
    assert not [(i, j) for i in range(4) for j in range(i + 1, 4) if boxes[i].overlaps(boxes[j])]
    plots.close(fig)
    tied = summary.assign(ci95_low=np.nan, ci95_high=np.nan)  # no interval (undetermined): no bar, no error
    plots.close(plots.accuracy_vs_params(tied, "val_accuracy"))


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("LORA_SWEEP_REQUIRE_BROWSER"),
                    reason="no chromium on this machine (apt-get install chromium; .ci/run installs it)")
def test_nothing_overflows_a_laptop_window_in_a_real_browser(report, tmp_path):
    assert CHROMIUM, "LORA_SWEEP_REQUIRE_BROWSER is set but chromium is not installed"
    page = tmp_path / "probe.html"
    page.write_text((report / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,900",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', out.stdout, re.S)
    assert found, out.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">"))
    assert layout["width"] == 1300
    assert layout["scrollWidth"] <= layout["width"], layout
    assert layout["overflow"] == [], layout["overflow"][:5]


@pytest.mark.parametrize("metric, front", [("val_accuracy", [0.5, 0.9]), ("val_mse", [0.5, 0.3])])
def test_the_pareto_front_follows_the_metrics_direction(metric, front):
    import pandas as pd

    from analysis import plots

    summary = pd.DataFrame({"group": ["a", "b", "c"], "params_relative_pct": [1.0, 2.0, 3.0], "mean": [0.5, 0.3, 0.9],
                            "ci95_low": [0.4, 0.2, 0.8], "ci95_high": [0.6, 0.4, 1.0]})
    fig = plots.accuracy_vs_params(summary, metric)
    line = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith("Pareto"))
    assert list(line.get_ydata()) == front  # was drawn upside down for MSE (direction guessed from the name)
    plots.close(fig)
