"""The heatmaps' colour scale, shared by the HTML page and the PNG: a diverging map of ``Δr`` around 0.

One symmetric scale per page (the largest ``|Δr|``) keeps rows comparable.
"""

from __future__ import annotations

import math
from typing import Sequence as Seq

from .record import Explained

# Diverging colour map: blue (negative) — white (0) — red (positive).
NEGATIVE_RGB = (33, 102, 172)
POSITIVE_RGB = (178, 24, 43)
NEUTRAL_RGB = (255, 255, 255)


def page_scale(rows: Seq[Seq[Explained]]) -> float:
    """The symmetric colour scale: the largest ``|Δr|`` on the page (1 if none)."""
    values = [abs(d) for row in rows for ex in row for d in ex.delta if math.isfinite(d)]
    scale = max(values, default=0.0)
    return scale if scale > 0 else 1.0


def colour_of(value: float, scale: float) -> tuple[int, int, int]:
    """Diverging colour of ``value`` on ``[-scale, scale]``: blue < 0, white at 0, red > 0."""
    if not math.isfinite(value) or scale <= 0:
        return NEUTRAL_RGB
    t = max(-1.0, min(1.0, value / scale))
    end = POSITIVE_RGB if t > 0 else NEGATIVE_RGB
    a = abs(t)
    return tuple(round(n + (e - n) * a) for n, e in zip(NEUTRAL_RGB, end))  # type: ignore[return-value]


def text_colour(value: float, scale: float) -> str:
    """Dark text on a light token box, white on a dark one."""
    return "#fff" if math.isfinite(value) and abs(value) / scale > 0.6 else "#111"
