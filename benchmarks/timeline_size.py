"""Timeline at scale: a synthetic 64-rank step of ~100k ops, measured and predicted.

Prints the time to build the figure and write the HTML, the file size, how many bars were
drawn and how many ops were aggregated; with ``--browser`` (needs /usr/bin/chromium) also,
in real time, how long headless Chromium takes to show the page, the time of one frame
while the mouse drags (pans) the plot (and the JavaScript part of it), and the redraw after
the mouse is released. Headless Chromium renders WebGL in software (SwiftShader), so frame
times here are dominated by software rasterization; the JavaScript part is what a browser
with a GPU still pays per frame.

    .venv/bin/python benchmarks/timeline_size.py [--ranks 64] [--ops 100000] [--browser]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from replay.result import ReplayResult
from tracekit.core.schema import EVENT_COLUMNS
from tracekit.views.timeline import headline_from, timeline_figure, write_timeline_html


def synthetic_step(ranks: int, ops: int, *, seed: int = 0, step: int = 7) -> pd.DataFrame:
    """One step of a GPU DDP-like job: per rank a CPU thread launching kernels on a
    compute stream, NCCL all-reduces on a comm stream; ~``ops`` events in total."""
    rng = np.random.default_rng(seed)
    per_rank = ops // ranks
    n_comm = max(4, per_rank // 40)
    n_kern = (per_rank - n_comm) // 2
    frames = []
    t0 = 1_700_000_000_000_000_000
    for r in range(ranks):
        dur = np.clip(rng.lognormal(np.log(30_000), 1.3, n_kern), 2_000, 3_000_000).astype(np.int64)
        gaps = rng.integers(1_000, 20_000, n_kern)
        k_start = t0 + 200_000 + np.cumsum(gaps + np.concatenate([[0], dur[:-1]]))
        l_start = k_start - rng.integers(5_000, 60_000, n_kern)
        l_dur = rng.integers(3_000, 9_000, n_kern)
        phase = np.where(np.arange(n_kern) < n_kern // 3, "aten::addmm",
                         np.where(np.arange(n_kern) < 0.9 * n_kern, "AddmmBackward0 kernel",
                                  "Optimizer.step#SGD.step kernel"))
        span = int(k_start[-1] + dur[-1] - t0)
        c_start = t0 + np.sort(rng.integers(span // 3, span, n_comm))
        c_dur = rng.integers(200_000, 2_000_000, n_comm)
        c_start = np.maximum(c_start, np.concatenate([[0], (c_start + c_dur)[:-1]]))
        corr = np.arange(n_kern) + r * 1_000_000
        step_end = max(int(k_start[-1] + dur[-1]), int(c_start[-1] + c_dur[-1])) + 100_000
        rows = {
            "lane_kind": ["cpu"] * (n_kern + 1) + ["gpu"] * (n_kern + n_comm),
            "lane": [1000 + r] * (n_kern + 1) + [7] * n_kern + [20] * n_comm,
            "lane_name": ["thread main (python)"] * (n_kern + 1) + ["stream 7"] * n_kern
                         + ["stream 20"] * n_comm,
            "name": ["ProfilerStep#7"] + ["cudaLaunchKernel"] * n_kern + list(phase)
                    + ["ncclKernel_AllReduce_RING_LL_Sum_float"] * n_comm,
            "kind": ["step"] + ["launch"] * n_kern + ["kernel"] * n_kern + ["comm"] * n_comm,
            "ts_ns": np.concatenate([[t0], l_start, k_start, c_start]),
            "dur_ns": np.concatenate([[step_end - t0], l_dur, dur, c_dur]),
            "correlation": np.concatenate([[-1], corr, corr, -np.ones(n_comm, np.int64)]),
            "comm_bytes": np.concatenate([-np.ones(1 + 2 * n_kern, np.int64),
                                          np.full(n_comm, 25 << 20)]),
        }
        f = pd.DataFrame(rows)
        f["rank"] = r
        frames.append(f)
    ev = pd.concat(frames, ignore_index=True)
    ev["end_ns"] = ev["ts_ns"] + ev["dur_ns"]
    ev["step"] = step
    ev["cat"] = np.where(ev["kind"] == "launch", "cuda_runtime",
                         np.where(ev["lane_kind"] == "gpu", "kernel", "cpu_op"))
    full = {}
    for col, (dt, _) in EVENT_COLUMNS.items():
        if col in ev:
            full[col] = ev[col].astype(dt)
        elif dt == "category":
            full[col] = pd.Categorical([""] * len(ev))
        else:
            full[col] = np.full(len(ev), -1, dtype=dt)
    return pd.DataFrame(full)


def predicted_from(measured: pd.DataFrame, *, speed: float = 0.85) -> pd.DataFrame:
    """A fake prediction: every op compressed in time, a critical chain on rank 0's stream."""
    tl = measured[measured["kind"] != "step"].copy().reset_index(drop=True)
    t0 = int(tl["ts_ns"].min())
    tl["node"] = np.arange(len(tl), dtype=np.int64)
    tl["measured_ts_ns"] = tl["ts_ns"]
    tl["ts_ns"] = t0 + ((tl["ts_ns"] - t0) * speed).astype(np.int64)
    tl["dur_ns"] = (tl["dur_ns"] * speed).astype(np.int64)
    tl["end_ns"] = tl["ts_ns"] + tl["dur_ns"]
    tl["critical"] = (tl["rank"] == 0) & (tl["lane"] == 7) & (tl["dur_ns"] > 100_000)
    return tl


class _DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``
    (requests on fd 3, replies on fd 4, NUL-terminated JSON), for real-time timings."""

    def __init__(self, chromium: str, profile: str) -> None:
        import os

        self._to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, self._from_chrome_w = os.pipe()
        # the child must see the pipes as fds 3 and 4: let a shell put them there
        redirect = f'exec "$@" 3<&{self._to_chrome_r} 4>&{self._from_chrome_w}'
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", redirect, "sh", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--disable-background-networking", "--no-first-run", "--disable-component-update",
             "--disable-sync", "--disable-quic", f"--user-data-dir={profile}",
             "--window-size=1600,1000", "--remote-debugging-pipe"],
            pass_fds=(self._to_chrome_r, self._from_chrome_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(self._to_chrome_r)
        os.close(self._from_chrome_w)
        self._out = os.fdopen(self._to_chrome_w, "wb")
        self._in = os.fdopen(self._from_chrome_r, "rb")
        self._id = 0
        self._buf = b""

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        self._out.flush()
        while True:
            while b"\0" not in self._buf:
                chunk = self._in.read1(1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        self.proc.wait(timeout=30)


_BENCH_JS = """new Promise(function (done) {
  function frame(f) { requestAnimationFrame(function () { setTimeout(f, 0); }); }
  (function wait() {
    var gd = document.getElementById('tracekit-timeline');
    if (!gd || !gd._fullLayout) return setTimeout(wait, 10);
    frame(function () {
      var shown = performance.now();
      Plotly.relayout(gd, {dragmode: 'pan'}).then(function () {
        var drag = gd.querySelector('.nsewdrag'), bb = drag.getBoundingClientRect();
        var x0 = bb.left + bb.width * 0.6, y = bb.top + bb.height * 0.5, frames = [], js = [];
        var i = 0;
        function ev(type, x, target) {
          (target || drag).dispatchEvent(new MouseEvent(type, {clientX: x, clientY: y,
            bubbles: true, buttons: 1, button: 0}));
        }
        ev('mousedown', x0);
        (function move() {
          if (i >= 20) {
            var t = performance.now();
            gd.once('plotly_relayout', function () {
              frame(function () {
                var release = performance.now() - t;
                frames.sort(function (a, b) { return a - b; });
                js.sort(function (a, b) { return a - b; });
                done(JSON.stringify({shown_ms: Math.round(shown),
                  drag_frame_median_ms: Math.round(frames[10]),
                  drag_frame_max_ms: Math.round(frames[19]),
                  drag_js_median_ms: Math.round(js[10]),
                  release_redraw_ms: Math.round(release),
                  x_range_after: gd._fullLayout.xaxis.range.map(function (v) {
                    return Math.round(v * 100) / 100; }),
                  errors: window.__tracekitErrors}));
              });
            });
            return ev('mouseup', x0 - 15 * i, document);
          }
          var t0 = performance.now();
          ev('mousemove', x0 - 15 * (i + 1), document);
          js.push(performance.now() - t0);
          frame(function () { frames.push(performance.now() - t0); i++; move(); });
        })();
      });
    });
  })();
})"""


def browser_timing(html: Path) -> dict:
    """Real-time load and pan timings of ``html`` in headless Chromium (software WebGL)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        dt = _DevTools(chromium, f"{tmp}/profile")
        try:
            target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = dt.call("Target.attachToTarget",
                              {"targetId": target, "flatten": True})["sessionId"]
            t = time.perf_counter()
            dt.call("Page.navigate", {"url": html.resolve().as_uri()}, session)
            got = dt.call("Runtime.evaluate", {"expression": _BENCH_JS, "awaitPromise": True,
                                               "returnByValue": True}, session)
            wall = time.perf_counter() - t
        finally:
            dt.close()
    out = json.loads(got["result"]["value"])
    out["wall_s"] = round(wall, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--out", default=None, help="keep the HTML here (default: a temp file)")
    ap.add_argument("--browser", action="store_true", help="also time it in headless Chromium")
    args = ap.parse_args()

    t = time.perf_counter()
    measured = synthetic_step(args.ranks, args.ops)
    predicted = predicted_from(measured)
    t_data = time.perf_counter() - t
    base = ReplayResult(timeline=predicted, step_ms={7: 90.0}, measured_step_ms={7: 100.0})

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "timeline.html"
    t = time.perf_counter()
    tf = timeline_figure(measured, predicted, headline=headline_from("synthetic", base))
    t_fig = time.perf_counter() - t
    t = time.perf_counter()
    size = write_timeline_html(tf, out)
    t_write = time.perf_counter() - t

    print(f"synthetic step: {args.ranks} ranks, {len(measured):,} measured ops, "
          f"{len(predicted):,} predicted ops, {len(tf.rows)} lanes (data {t_data:.2f} s)")
    for p in tf.panels:
        print(f"  {p.name:28s} {p.n_ops:>8,} ops -> {p.n_bars:>7,} bars "
              f"({p.n_aggregated_ops:,} ops aggregated into {p.n_aggregated_bars:,}), "
              f"{p.n_idle:,} idle bars")
    print(f"build figure: {t_fig:.2f} s   write html: {t_write:.2f} s   "
          f"total render: {t_fig + t_write:.2f} s")
    print(f"file: {out} {size / 1e6:.2f} MB (plotly.js ~4.8 MB of it)")
    if args.browser:
        print("browser:", json.dumps(browser_timing(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
