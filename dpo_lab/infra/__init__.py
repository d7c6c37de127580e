"""Machinery with no DPO in it: atomic files, device / precision / seeding / distributed, manifests, checkpoints.

The bottom layer: it imports nothing else from the package, and everything may import it.
"""

from .checkpoints import StaleCheckpointError, verify_checkpoint
from .console import quiet_hf
from .device import environment_report, pick_device
from .seeding import seed_everything

__all__ = [
    "StaleCheckpointError",
    "environment_report",
    "pick_device",
    "quiet_hf",
    "seed_everything",
    "verify_checkpoint",
]
