"""The run folder, in one place: where each stage writes, and which notebook (or command) produces it.

::

    runs/<run>/01_data/            stage 01: validated pairs, tokenizer, statistics, manifest
    runs/<run>/02_sft/             stage 02: the SFT model (DPO's reference and starting policy)
    runs/<run>/02_sft/ref_cache/   reference log-probs, keyed by what they depend on
    runs/<run>/03_dpo/beta_<b>/    stage 03: one folder per beta, never touching the others (the DPO loss)
    runs/<run>/03_dpo/<loss>_beta_<b>/  the same for a loss variant: ipo_beta_0.1, conservative-ls0.1_beta_0.1
    runs/<run>/03_dpo/round2_<run>/     an on-policy second round trained from that run (its pairs inside)
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
ROUND2_PREFIX = "round2_"  # 03_dpo/round2_<run>/: the on-policy round trained from 03_dpo/<run>/

# "produced by" in manifests and error messages: what to run when a stage's output is missing or stale
RUN_01 = "01-Setup_and_Data.ipynb (or `python -m dpo_lab data`)"
RUN_02 = "02-SFT_Baseline.ipynb (or `python -m dpo_lab sft`)"
RUN_03 = "03-DPO_Training.ipynb (or `python -m dpo_lab dpo --beta B`)"


def number_text(value: float) -> str:
    """``0.1`` → ``"0.1"``, ``0.10`` → ``"0.1"``, ``0.1000001`` → ``"0.1000001"``: short (``:g``) where that reads
    back as the same number, else the exact shortest form — two different values never get the same text."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def dpo_run_name(beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> str:
    """The folder name of one DPO run: ``beta_0.1`` for the DPO loss (as before), ``ipo_beta_0.1``,
    ``conservative-ls0.1_beta_0.1`` for a variant (0.10 and 0.1 are one folder; 0.1 and 0.1000001 are two)."""
    smoothing = f"-ls{number_text(label_smoothing)}" if label_smoothing else ""
    prefix = "" if loss_type == "sigmoid" else f"{loss_type}{smoothing}_"
    return f"{prefix}beta_{number_text(beta)}"


def run_identity(manifest: dict) -> dict:
    """``{"round": 1|2, "loss_type", "label_smoothing", "beta", "first_round"}`` of a DPO run, from its manifest —
    the facts it was trained with. The folder name is only where it was saved: never parsed back (a renamed or
    copied folder still says what it holds). ``first_round``: the folder name of a second round's first round."""
    config, metrics = manifest["config"], manifest.get("metrics", {})
    second = metrics.get("round") == 2
    return {
        "round": 2 if second else 1,
        "loss_type": config.get("loss_type", "sigmoid"),  # manifests older than the loss variants: DPO's loss
        "label_smoothing": float(config.get("label_smoothing", 0.0)),
        "beta": float(config["beta"]),
        "first_round": metrics.get("first_round") if second else None,
    }


def dpo_run_dir(run_dir: str | Path, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> Path:
    return Path(run_dir) / DPO_DIR / dpo_run_name(beta, loss_type, label_smoothing)


def beta_dir(run_dir: str | Path, beta: float) -> Path:
    """``03_dpo/beta_<b>/``: the DPO (sigmoid-loss) run at one beta."""
    return dpo_run_dir(run_dir, beta)


def beta_dirs(run_dir: str | Path) -> list[Path]:
    """Every DPO run folder (``*beta_*``: each loss, each beta, each round), finished or not
    (``evaluation.discover_models`` says which count)."""
    return sorted(p for p in (Path(run_dir) / DPO_DIR).glob("*beta_*") if p.is_dir())


def state_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / STATE_DIR / stage
