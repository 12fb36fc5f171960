"""Self-contained HTML pages: plotly.js embedded once, figures, tables, and a render probe.

Every page opens offline (no CDN). Two small scripts make pages checkable by a headless
browser (``tests/test_browser.py``) and are harmless otherwise:

- in ``<head>``, before anything else runs, ``window.onerror``, ``unhandledrejection`` and
  ``console.error`` are recorded into ``window.__tracekitErrors``;
- after every plot has rendered, a JSON summary of what was drawn is written into the
  hidden ``<pre id="tracekit-probe">``: per figure the number of traces, the bars drawn
  per role (segments of the bar traces, read back from the rendered data), the y-axis row
  labels, whether WebGL was used, plus the recorded errors.
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from tracekit._version import __version__
from tracekit.core.atomic import atomic_write
from tracekit.views.styling import FONT_FAMILY

PROBE_ID = "tracekit-probe"

_ERROR_CAPTURE = """<script>
window.__tracekitErrors = [];
window.addEventListener('error', function (e) {
  window.__tracekitErrors.push(String(e.message || e.type) + (e.filename ? ' @' + e.filename + ':' + e.lineno : ''));
});
window.addEventListener('unhandledrejection', function (e) {
  window.__tracekitErrors.push('unhandled rejection: ' + String(e.reason));
});
(function () {
  var orig = console.error;
  console.error = function () {
    window.__tracekitErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
</script>"""

_PROBE = """<pre id="%(probe)s" hidden>pending</pre>
<script>
(function () {
  function segments(x) {
    if (!x) return 0;
    var n = 0, inside = false;
    for (var i = 0; i < x.length; i++) {
      var v = x[i];
      var ok = v !== null && v !== undefined && v === v;
      if (ok && !inside) n++;
      inside = ok;
    }
    return n;
  }
  function summarize() {
    var out = {errors: window.__tracekitErrors.slice(), figures: [], title: document.title};
    document.querySelectorAll('.plotly-graph-div').forEach(function (gd) {
      var fig = {id: gd.id, traces: gd._fullData.length, bars: {}, rows: {},
                 webgl: !!(gd._fullLayout._glcanvas && gd._fullLayout._glcanvas.size()),
                 title: (gd._fullLayout.title && gd._fullLayout.title.text) || ''};
      gd._fullData.forEach(function (t) {
        var meta = t.meta || {};
        if (meta.role) {
          var key = meta.role + (meta.panel !== undefined ? ':' + meta.panel : '');
          fig.bars[key] = (fig.bars[key] || 0) + segments(t.x);
        }
      });
      Object.keys(gd._fullLayout).forEach(function (k) {
        if (k.indexOf('yaxis') === 0 && gd._fullLayout[k].ticktext) {
          fig.rows[k] = Array.prototype.slice.call(gd._fullLayout[k].ticktext);
        }
      });
      out.figures.push(fig);
    });
    document.getElementById('%(probe)s').textContent = JSON.stringify(out);
  }
  var tries = 0;
  function poll() {
    var gds = document.querySelectorAll('.plotly-graph-div');
    var ready = gds.length > 0 && Array.prototype.every.call(gds, function (gd) {
      return gd._fullLayout && gd._fullData;
    });
    if (ready || ++tries > 400) {
      setTimeout(summarize, 100);
    } else {
      setTimeout(poll, 25);
    }
  }
  poll();
})();
</script>"""

_STYLE = """<style>
body { font-family: %(font)s; margin: 16px 24px; color: #222; }
h1 { font-size: 22px; margin: 4px 0 2px; }
h2 { font-size: 17px; margin: 26px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
p.sub, p.note { color: #555; margin: 2px 0; font-size: 13px; }
table.tk { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
table.tk th, table.tk td { border-bottom: 1px solid #e3e3e3; padding: 3px 10px; text-align: right; }
table.tk th { background: #f4f4f4; }
table.tk td:first-child, table.tk th:first-child { text-align: left; }
table.tk tr.best td { font-weight: bold; background: #eef7ee; }
footer { color: #888; font-size: 11px; margin-top: 30px; }
</style>"""

#: plotly config for every figure: wheel zoom, no plotly logo, PNG export at 2x
PLOT_CONFIG = {
    "scrollZoom": True,
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


@dataclass(frozen=True, kw_only=True)
class Section:
    """One block of a page: an optional heading, then HTML and/or a figure."""

    heading: str = ""
    html: str = ""
    figure: go.Figure | None = None
    #: the figure's div id (stable ids make pages diffable and testable)
    div_id: str = ""


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as a ``<div>`` + script, without plotly.js."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=PLOT_CONFIG)


def render_page(*, title: str, sections: Sequence[Section], subtitle: str = "",
                show_title: bool = True) -> str:
    """A complete HTML document: plotly.js once in ``<head>``, then the sections.

    ``title`` is the browser tab's title and, with ``show_title``, the page heading.
    """
    body = [f"<h1>{_html.escape(title)}</h1>"] if show_title else []
    if subtitle:
        body.append(f'<p class="sub">{subtitle}</p>')
    for i, sec in enumerate(sections):
        if sec.heading:
            body.append(f"<h2>{_html.escape(sec.heading)}</h2>")
        if sec.html:
            body.append(sec.html)
        if sec.figure is not None:
            body.append(figure_div(sec.figure, sec.div_id or f"tracekit-fig-{i}"))
    body.append(f"<footer>written by tracekit {__version__}; opens offline "
                "(plotly.js is embedded). Drag to zoom, double-click to reset, "
                "click legend entries to hide kinds.</footer>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_html.escape(title)}</title>",
        _ERROR_CAPTURE,
        _STYLE % {"font": FONT_FAMILY},
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        *body,
        _PROBE % {"probe": PROBE_ID},
        "</body></html>",
    ])


def write_page(path: str | Path, page: str) -> int:
    """Write ``page`` to ``path`` atomically (creating the folder); return the file size
    in bytes. A kill or a full disk leaves no partial page at ``path``."""
    return atomic_write(path, page, what="the HTML file", fix="choose another path with -o",
                        parents=True)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[object]], *,
               highlight: Sequence[bool] | None = None) -> str:
    """A small HTML table; cells are escaped, floats formatted with 3 significant digits."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return _html.escape(str(v))

    head = "".join(f"<th>{_html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = ' class="best"' if highlight is not None and highlight[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    return f'<table class="tk"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
