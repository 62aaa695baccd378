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

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "ICRMConfig": "training",
    "ICRMTrainer": "training",
    "RewardModel": "modeling",
    "load_examples": "data",
    "LoadedData": "data",
    "PairExample": "data",
    "PointExample": "data",
    "DataError": "data",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'icrm' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
