"""Training reward models: ``ICRMConfig``, ``ICRMTrainer`` (one ``transformers.Trainer``), its objective and
callbacks, and the SFT pieces; the ``train``/``sft`` commands that run them on files are in ``icrm.commands``."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "arguments": ["ICRMArguments", "RECIPES", "TrainingOptions"],
    "callbacks": ["GracefulInterrupt", "LogLastStep", "RichProgress", "WholeRunLoss", "use_rich_progress"],
    "config": ["ConfigError", "ICRMConfig", "METHODS", "PROCESS_METHODS", "TRAINABLE_FORMATS"],
    "objective": ["BatchObjective", "batch_objective"],
    "sampler": ["SeededLengthGroupedSampler"],
    "sft": ["SFTCollator", "SFT_RESPONSES", "sft_examples"],
    "trainer": ["ICRMTrainer", "pairwise_accuracy", "reward_stats"],
})
