"""A run folder and its stages: configuration and profiles, the folder layout, models, stage 01 (data),
stages 02-03 (SFT, DPO). Notebooks 01-03 and the CLI call these; stage 04 is :mod:`dpo_lab.evaluation`."""

from .config import LabConfig, get_config, resolve_profile
from .layout import DPO_DIR, SFT_DIR, beta_dir
from .pipeline import (
    build_base_model,
    load_reference_model,
    load_sft_checkpoint,
    open_run,
    run_dpo_stage,
    run_sft_stage,
    stage_config,
)
from .prepare import load_prepared_data, prepare_data, save_prepared_data

__all__ = [
    "DPO_DIR",
    "LabConfig",
    "SFT_DIR",
    "beta_dir",
    "build_base_model",
    "get_config",
    "load_prepared_data",
    "load_reference_model",
    "load_sft_checkpoint",
    "open_run",
    "prepare_data",
    "resolve_profile",
    "run_dpo_stage",
    "run_sft_stage",
    "save_prepared_data",
    "stage_config",
]
