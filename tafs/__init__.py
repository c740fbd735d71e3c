"""tafs: a reproducible pipeline for TAFS-GRPO (arXiv 2602.01591) and its baselines."""

__version__ = "0.1.0"
