"""Training reward models: ``ICRMConfig``, ``ICRMTrainer`` (one ``transformers.Trainer``) and its callbacks."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "core": ["ConfigError", "ICRMConfig", "ICRMTrainer", "ModelSpec", "RichProgress", "sft_examples",
        "train_reward_model", "train_sft", "trainer_arguments", "use_rich_progress"],
})
