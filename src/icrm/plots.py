"""PNG figures without pyplot, written all-or-nothing.

Every plot icrm writes goes through these two functions: a matplotlib
``Figure`` on an Agg canvas (no GUI backend, no global pyplot state, safe in
servers and threads), saved to a temporary file beside the target and renamed
into place, so an interrupted run never leaves a half-written image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .outputs import staged_file


def new_figure(width: float = 6.4, height: float = 4.2):
    """An empty figure of ``width`` × ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | os.PathLike, tight: bool = True) -> Path:
    """Write ``figure`` to ``path`` as a PNG, replacing it only once the file is complete."""
    if tight:
        figure.tight_layout()
    with staged_file(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs (emoji, CJK) in the fonts
        figure.savefig(tmp, format="png")
    return Path(path)
