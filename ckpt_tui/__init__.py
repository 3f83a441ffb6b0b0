"""ckpt-tui: browse, prune and safely delete ML training checkpoints."""

__version__ = "0.1.0"
