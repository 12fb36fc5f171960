"""Views: what people look at. Plotly HTML timelines and reports, Perfetto trace export.

- :mod:`tracekit.views.timeline`: measured-vs-predicted timeline figure and HTML page;
- :mod:`tracekit.views.report`: the one-page report (summary, breakdown, what-ifs, sweeps,
  timeline);
- :mod:`tracekit.views.perfetto`: a (predicted) timeline as a Chrome/Perfetto JSON trace;
- :mod:`tracekit.views.classify`, :mod:`~tracekit.views.lanes`, :mod:`~tracekit.views.bars`:
  bar colors, rows and aggregation; :mod:`~tracekit.views.html`: self-contained pages;
  :mod:`~tracekit.views.styling`: colors and sizes.

The views draw results (:mod:`replay.result`); they run nothing themselves: a
:class:`tracekit.api.Session` replays and predicts, the CLI hands its results here.

Nothing here imports torch; plotly is imported only by the modules that draw.
"""
