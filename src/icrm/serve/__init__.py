"""The reward server: OpenRLHF's ``/get_reward`` and icrm's ``/score`` over one batching loop.

The command that loads a model and listens is ``icrm.commands.serve``.
"""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "app": ["create_app", "default_batch_size"],
    "batching": ["DynamicBatcher", "pick_batch"],
    "config": ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_MAX_LENGTH", "ServeConfig"],
    "metrics": ["Metrics", "percentile"],
    "requests": ["RequestError", "ScoreItem", "score_items", "text_sequences"],
})
