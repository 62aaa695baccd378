"""The reward server: OpenRLHF's ``/get_reward`` and icrm's ``/score`` over one batching loop."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "core": ["DEFAULT_MAX_LENGTH", "Metrics", "ServeConfig", "create_app", "percentile", "pick_batch", "serve"],
})
