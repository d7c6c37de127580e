"""The run folder, in one place: where each stage writes, and which notebook (or command) produces it.

::

    runs/<run>/01_data/            stage 01: validated pairs, tokenizer, statistics, manifest
    runs/<run>/02_sft/             stage 02: the SFT model (DPO's reference and starting policy)
    runs/<run>/02_sft/ref_cache/   reference log-probs, keyed by what they depend on
    runs/<run>/03_dpo/beta_<b>/    stage 03: one folder per beta, never touching the others
    runs/<run>/04_eval/            stage 04: tables, figures, report.md
    runs/<run>/.state/<stage>/     resumable training state while a stage runs
    runs/<run>/cache/answers/      generated answers, keyed by checkpoint id and decoding settings
    runs/<run>/figures/            the notebooks' figures as PNG
    runs/<run>/human_ab/           the blind A/B labels of notebook 04
    runs/<run>/notebooks/          executed notebook copies (`python -m dpo_lab run`)
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = "01_data"
SFT_DIR = "02_sft"
DPO_DIR = "03_dpo"
EVAL_DIR = "04_eval"
STATE_DIR = ".state"
ANSWERS_DIR = "cache/answers"
FIGURES_DIR = "figures"
HUMAN_AB_DIR = "human_ab"
EXECUTED_DIR = "notebooks"

# "produced by" in manifests and error messages: what to run when a stage's output is missing or stale
RUN_01 = "01-Setup_and_Data.ipynb (or `python -m dpo_lab data`)"
RUN_02 = "02-SFT_Baseline.ipynb (or `python -m dpo_lab sft`)"
RUN_03 = "03-DPO_Training.ipynb (or `python -m dpo_lab dpo --beta B`)"


def beta_dir(run_dir: str | Path, beta: float) -> Path:
    """``03_dpo/beta_<b>/``: ``beta_0.1``, ``beta_0.5`` (``:g`` formatting, so 0.10 and 0.1 are one folder)."""
    return Path(run_dir) / DPO_DIR / f"beta_{beta:g}"


def beta_dirs(run_dir: str | Path) -> list[Path]:
    """Every ``03_dpo/beta_*`` folder, finished or not (``evaluation.discover_models`` says which count)."""
    return sorted((Path(run_dir) / DPO_DIR).glob("beta_*"))


def state_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / STATE_DIR / stage
