"""The SFT and DPO loops (notebooks 02 and 03): batching, optimizer and schedule, resume, early stopping."""

from .dpo import DPOArgs, DPOLoop, DPOResult, dpo_step, dpo_train
from .loop_args import LoopArgs
from .sft import SFTArgs, SFTResult, TrainingDivergedError, sft_train

__all__ = [
    "LoopArgs",
    "DPOArgs",
    "DPOResult",
    "DPOLoop",
    "SFTArgs",
    "SFTResult",
    "TrainingDivergedError",
    "dpo_step",
    "dpo_train",
    "sft_train",
]
