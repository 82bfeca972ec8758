"""What every plot module shares: a Figure drawn without pyplot (no global backend, no display: the Agg canvas),
the ``Plot`` record the report embeds, and saving a figure atomically as PNG.

Figures are built with ``matplotlib.figure.Figure`` and ``FigureCanvasAgg`` as sweep_report.heatmap does, so drawing
never touches pyplot's global state (no window, safe in worker processes and tests).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.io import write_bytes

#: Colours by role, the same in every plot of a report (matplotlib's tab10, in the table's row order).
ROLE_COLOURS = {"teacher": "#1f77b4", "student alone": "#ff7f0e", "method": "#2ca02c"}
OTHER_COLOURS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Plot:
    key: str  # file name stem under plots/, e.g. "curves_loss"
    title: str  # the section's caption in the report
    figure: Any  # matplotlib.figure.Figure
    caption: str = ""  # what it shows and how to read it, one or two sentences


def figure(width: float, height: float) -> Any:
    """A Figure on an Agg canvas (``savefig`` works; nothing is shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def colour(name: str, index: int = 0) -> str:
    return ROLE_COLOURS.get(name) or OTHER_COLOURS[index % len(OTHER_COLOURS)]


def png_bytes(fig: Any, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(data: bytes, path: Path) -> Path:
    """Write PNG bytes atomically (a temporary file renamed over ``path``): a reader never sees half an image."""
    write_bytes(path, data)
    return path


def tidy(fig: Any, rows: int = 1, cols: int = 1, left: float = 0.75, bottom: float = 0.6, top: float = 0.4,
         right: float = 0.2, gap: float = 0.8) -> None:
    """Fixed margins in inches (tick labels, axis labels, titles fit): what ``tight_layout`` finds, without its extra
    draw of the whole figure, which doubled the time a run spent on its plots."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=gap * cols / max(w - left - right, 1e-3), hspace=gap * 1.3 * rows / max(h - top - bottom, 1e-3))


def grid_shape(n: int, cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return (n + cols - 1) // cols, cols
