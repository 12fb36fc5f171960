"""Colors, labels and sizes shared by every tracekit view.

One :class:`BarKind` per color in a timeline. The palette is colorblind-friendly (Okabe-Ito
based) and keeps related work in related hues: forward / backward / optimizer compute in
blues and greens, communication in orange, host glue in greys.
"""

from __future__ import annotations

from enum import Enum


class BarKind(str, Enum):
    """What a timeline bar shows, decided from the event kind, its name and its phase."""

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    COMM = "communication"
    LAUNCH = "launch / runtime"
    SYNC = "sync"
    MEMCPY = "memcpy / memset"
    OTHER = "other compute / host"
    IDLE = "idle"


#: drawing (and legend) order: compute first, glue last
BAR_KIND_ORDER: list[BarKind] = [
    BarKind.FORWARD,
    BarKind.BACKWARD,
    BarKind.OPTIMIZER,
    BarKind.COMM,
    BarKind.MEMCPY,
    BarKind.LAUNCH,
    BarKind.SYNC,
    BarKind.OTHER,
    BarKind.IDLE,
]

BAR_COLORS: dict[BarKind, str] = {
    BarKind.FORWARD: "#0072B2",  # blue
    BarKind.BACKWARD: "#56B4E9",  # sky blue
    BarKind.OPTIMIZER: "#009E73",  # green
    BarKind.COMM: "#E69F00",  # orange
    BarKind.MEMCPY: "#CC79A7",  # purple
    BarKind.LAUNCH: "#8C8C8C",  # grey
    BarKind.SYNC: "#D55E00",  # vermillion
    BarKind.OTHER: "#B8B8B8",  # light grey
    BarKind.IDLE: "#E4E4E4",  # very light grey
}

#: outline of nodes on the critical path
CRITICAL_COLOR = "#C00000"
#: step boundary lines and labels
STEP_LINE_COLOR = "#444444"

FONT_FAMILY = "Helvetica Neue, Helvetica, Arial, sans-serif"

#: pixels per lane row: the figure grows with the number of rows, within these bounds
ROW_PX_MAX = 26
ROW_PX_MIN = 7
#: the plot area's width the bars are laid out for (aggregation threshold = 1 px of it)
PLOT_WIDTH_PX = 1300
#: bar thickness as a fraction of the row height
BAR_FRACTION = 0.72
#: aggregated bars ("N small ops") are drawn thinner than single ops
AGGREGATE_FRACTION = 0.45
#: idle gaps are drawn as thin bars
IDLE_FRACTION = 0.22

#: the longest op name shown in a hover label
HOVER_NAME_CHARS = 90


def row_px(n_rows: int, target_px: int = 700) -> int:
    """Row height in pixels for a panel of ``n_rows`` lanes: ~``target_px`` tall, clamped."""
    if n_rows <= 0:
        return ROW_PX_MAX
    return max(ROW_PX_MIN, min(ROW_PX_MAX, target_px // n_rows))
