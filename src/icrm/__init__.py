"""icrm: reward models with intra-trajectory consistency regularization.

The Python API mirrors TRL's reward modelling::

    from icrm import ICRMConfig, ICRMTrainer     # instead of: from trl import RewardConfig, RewardTrainer

    trainer = ICRMTrainer(model="Qwen/Qwen3-0.6B", args=ICRMConfig(output_dir="rm"), train_dataset=dataset)
    trainer.train()
    trainer.save_model("rm")

    from icrm import RewardModel
    RewardModel.from_pretrained("rm").score(["prompt"], ["response"])

Names are imported on first use, so ``import icrm`` (and ``icrm --help``)
does not pay for torch and transformers.
"""

from .exports import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "training": ["ICRMConfig", "ICRMTrainer"],
    "modeling": ["RewardModel"],
    "data": ["load_examples", "LoadedData", "PairExample", "PointExample", "DataError"],
})
