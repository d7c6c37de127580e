"""Stage 04 and what it is built from: generation, judges (the corpus oracle first), win rates, Elo,
safety, bias checks, the report, plots, and the step-by-step comparison with TRL.

:class:`Evaluation` is stage 04: notebook 04 runs its steps cell by cell, ``python -m dpo_lab evaluate``
runs them all (:func:`evaluate_run`).
"""

from .bias import chosen_longer_share
from .generation import generate, show_table, side_by_side
from .judges import LLMJudge
from .metrics import summarize_runs
from .oracle import probe_results, validate_on_corpus, verdict_table
from .plots import plot_dpo_history, plot_overoptimization, plot_sft_history, save_figure
from .stage import Evaluation, discover_models, evaluate_run
from .trl_compare import compare_with_trl
from .winrate import bootstrap_ci, win_rate

__all__ = [
    "LLMJudge",
    "chosen_longer_share",
    "probe_results",
    "validate_on_corpus",
    "verdict_table",
    "Evaluation",
    "bootstrap_ci",
    "compare_with_trl",
    "discover_models",
    "evaluate_run",
    "generate",
    "plot_dpo_history",
    "plot_overoptimization",
    "plot_sft_history",
    "save_figure",
    "show_table",
    "side_by_side",
    "summarize_runs",
    "win_rate",
]
