"""report.html as a person reads it: the answer first, a verdict matrix, readable tables, and nothing that runs off
a 1300 px laptop window or an 800 px one, checked in a real headless Chromium (Debian's `chromium`; .ci/run
installs it)."""

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
  const figures = [...document.querySelectorAll('figure')].map(f => ({
    caption: (f.querySelector('figcaption') || {}).innerText || '',
    inside: f.getBoundingClientRect().right <= width + 0.5}));
  const pre = document.createElement('pre');
  pre.id = 'layout-probe';
  pre.textContent = JSON.stringify({width: width, scrollWidth: document.documentElement.scrollWidth, overflow: out,
    bodyScrollWidth: document.body.scrollWidth, viewport: !!document.querySelector('meta[name=viewport]'),
    backticks: document.body.innerText.includes('`'), figures: figures});
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


def _params_plot_summary(groups: list[str], pct: list[float], means: list[float]):
    import pandas as pd

    means = pd.Series(means, dtype=float)
    return pd.DataFrame({"group": groups, "params_relative_pct": pct, "mean": means, "ci95_low": means - 0.01,
                         "ci95_high": means + 0.01})


def test_groups_in_the_params_plot_are_named_in_a_legend_and_stand_apart():
    """Three placements at the same % of parameters: each its own marker, side by side on screen, named in a legend
    beside the axes (labels on leader lines once landed 300 px below the axes)."""
    import numpy as np

    from analysis import plots

    groups = ["upper r=8", "even r=8", "lower r=8", "lora_all r=8"]
    summary = _params_plot_summary(groups, [1.38, 1.38, 1.38, 1.54], [0.641, 0.632, 0.628, 0.66])
    fig = plots.accuracy_vs_params(summary, "val_accuracy")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert not ax.texts  # no free-floating labels
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [*groups, "Pareto front (group means)"]
    points = [c.lines[0] for c in ax.containers]  # one errorbar per group, in the summary's order
    xs = [ln.get_transform().transform(np.column_stack([ln.get_xdata(), ln.get_ydata()]).astype(float))[0, 0]
          for ln in points]
    assert min(np.diff(sorted(xs[:3]))) >= 5  # pixels apart, though at one x in data units
    assert len({ln.get_marker() for ln in points}) == 4
    low, high = ax.get_ylim()
    assert low <= summary["ci95_low"].min() and summary["ci95_high"].max() <= high  # every interval inside the axes
    plots.close(fig)
    tied = summary.assign(ci95_low=np.nan, ci95_high=np.nan)  # no interval (undetermined): no bar, no error
    plots.close(plots.accuracy_vs_params(tied, "val_accuracy"))


@pytest.mark.parametrize("n", [4, 7, 30])
def test_every_text_of_the_params_plot_lies_inside_the_figure(n):
    """Legend, ticks, axis labels: nothing drawn off the figure (savefig's tight box would grow to a far label)."""
    import matplotlib.text

    from analysis import plots

    groups = [f"placement {i} with a long name r={2 ** (i % 5)}" for i in range(n)]
    summary = _params_plot_summary(groups, [1.38 if i % 3 else 0.475 * (1 + i) for i in range(n)],
                                   [0.6 + 0.002 * i for i in range(n)])
    fig = plots.accuracy_vs_params(summary, "val_accuracy")
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), fig.bbox
    ax = fig.axes[0]
    texts = [*fig.legends[0].get_texts(), fig.legends[0].get_title(), ax.xaxis.label, ax.yaxis.label,
             *(t for t in (*ax.get_xticklabels(), *ax.get_yticklabels())  # the ticks drawn (in view)
               if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1])]
    assert all(isinstance(t, matplotlib.text.Text) for t in texts) and len(texts) > n
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    tight = fig.get_tightbbox(renderer)  # all that is drawn, in inches: what savefig's tight box crops to
    assert tight.x0 >= -0.02 and tight.y0 >= -0.02 and tight.x1 <= fig.bbox_inches.x1 + 0.02 \
        and tight.y1 <= fig.bbox_inches.y1 + 0.02, tight
    outside = [(text, box.bounds) for text, box in boxes if not (
        frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1)]
    assert outside == [], outside[:5]
    plots.close(fig)


class Text(HTMLParser):
    """Visible text of a page (script and style left out), figure captions and image alt texts, the comparisons
    table's cells by header, and comparison sentences outside the folded <details>."""

    VOID = ("meta", "img", "br", "link", "input", "hr")

    def __init__(self):
        super().__init__()
        self.text, self.captions, self.alts, self.stack = [], [], [], []
        self.viewport, self.sentences_outside_details, self.details = False, 0, 0
        self.comparison_headers, self.comparison_rows, self._row, self._table = [], [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta" and attrs.get("name") == "viewport":
            self.viewport = "width=device-width" in (attrs.get("content") or "")
        if tag == "img":
            self.alts.append(attrs.get("alt", ""))
        if tag == "details":
            self.details += 1
        if tag == "table":
            self._table = attrs.get("id")
        if tag == "tr" and self._table == "comparisons":
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append("")  # a blank cell is a cell
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.comparison_rows.append(self._row)
        if tag == "tr":
            self._row = None
        if tag == "table":
            self._table = None
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if any(t in ("script", "style", "title") for t in self.stack):
            return
        self.text.append(data)
        top = self.stack[-1] if self.stack else ""
        if "figcaption" in self.stack:
            self.captions.append(data.strip())
        if self._table == "comparisons" and top == "th":
            self.comparison_headers.append(data.strip())
        if self._table == "comparisons" and "td" in self.stack and self._row:
            self._row[-1] += data.strip()
        if " vs " in data and "Δ = " in data and top == "li" and "details" not in self.stack:
            self.sentences_outside_details += 1


def test_the_page_says_things_once_in_words_without_markdown(report):
    html = (report / "report.html").read_text()
    page = Text()
    page.feed(html)
    page.close()
    text = "".join(page.text)
    assert page.viewport  # laid out at the device's width, not a desktop's 980 px
    assert "`" not in text  # Markdown's code marks become <code>, never literal backticks
    assert "<code>resources</code>" in html
    assert len(page.captions) == len(page.alts) == len(list(report.glob("*.png"))) >= 4
    for caption in page.captions:  # what to look at, not a file name
        assert len(caption.split()) >= 8 and not re.fullmatch(r"[\w.-]+", caption) and "Look" in caption, caption
    assert all(alt in page.captions for alt in page.alts)
    # the comparisons once: a table, its sentences folded under it
    assert page.sentences_outside_details == 0 and page.details == 1
    assert page.comparison_rows and all(len(r) == len(page.comparison_headers) for r in page.comparison_rows)
    for header in ("seeds to settle", "seeds to detect Δ"):  # never blank: a number, "> 1000", "—" or "n/a"
        cells = [r[page.comparison_headers.index(header)] for r in page.comparison_rows]
        assert all(re.fullmatch(r"\d+|> 1000|—|n/a|none: Δ = 0", c) for c in cells), cells
    assert "> 1000" in [r[page.comparison_headers.index("seeds to settle")] for r in page.comparison_rows]
    assert "more than 1000 seeds per group" in text  # the sentence that "> 1000" repeats
    assert "per resource-hour" not in text  # a mean accuracy over hours is no rate of anything: not shown


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("LORA_SWEEP_REQUIRE_BROWSER"),
                    reason="no chromium on this machine (apt-get install chromium; .ci/run installs it)")
@pytest.mark.parametrize("width", [1300, 800])
def test_nothing_overflows_a_laptop_window_in_a_real_browser(report, tmp_path, width):
    assert CHROMIUM, "LORA_SWEEP_REQUIRE_BROWSER is set but chromium is not installed"
    page = tmp_path / "probe.html"
    page.write_text((report / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', out.stdout, re.S)
    assert found, out.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">"))
    assert layout["width"] == width
    assert layout["scrollWidth"] <= layout["width"] and layout["bodyScrollWidth"] <= layout["width"], layout
    assert layout["overflow"] == [], layout["overflow"][:5]
    assert layout["viewport"] and not layout["backticks"]
    assert len(layout["figures"]) >= 4
    for figure in layout["figures"]:  # a caption in words, and the figure inside the window
        assert figure["inside"] and len(figure["caption"].split()) >= 8, figure


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
