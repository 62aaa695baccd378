"""Per-token rewards of responses, shown as HTML and PNG heatmaps."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "core": ["Explained", "colour_of", "decisive_share", "explain_responses", "explain_to_files",
        "rank_correlation", "render_html", "render_index", "render_png"],
})
