"""icrm: reward models with intra-trajectory consistency regularization."""

__version__ = "0.1.0"
