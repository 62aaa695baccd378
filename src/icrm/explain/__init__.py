"""Per-token rewards of responses, shown as HTML and PNG heatmaps, and attribution metrics on them."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "attribution": ["decisive_share", "rank_correlation"],
    "colours": ["colour_of"],
    "compute": ["explain_responses"],
    "html": ["render_html", "render_index"],
    "png": ["render_png"],
    "record": ["Explained"],
})
