"""Machinery with no DPO in it: atomic files, device / precision / seeding / distributed, manifests, checkpoints.

The bottom layer: it imports nothing else from the package, and everything may import it.
"""

from .checkpoints import StaleCheckpointError, verify_checkpoint
from .runtime import disable_dropout, environment_report, freeze, pick_device, quiet_hf, seed_everything

__all__ = [
    "StaleCheckpointError",
    "disable_dropout",
    "environment_report",
    "freeze",
    "pick_device",
    "quiet_hf",
    "seed_everything",
    "verify_checkpoint",
]
