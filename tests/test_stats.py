"""Statistics table and plot on a hand-made set with known answers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import dpo_lab  # noqa: E402
from dpo_lab.data.stats import distinct_ngrams  # noqa: E402

P = "\n\nHuman: Q\n\nAssistant:"
PAIRS = [
    {"prompt": P, "chosen": " a b c d", "rejected": " a"},
    {"prompt": P, "chosen": " a b c d", "rejected": " a"},  # exact duplicate
    {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: R\n\nAssistant:", "chosen": " x", "rejected": " y z"},
]


def test_summary_counts_known_values():
    table = dict(zip(*dpo_lab.statistics_summary(PAIRS).to_dict(orient="list").values()))
    assert table["pairs"] == 3 and table["distinct prompts"] == 2 and table["duplicate pairs"] == 1
    assert table["multi-turn prompts"] == 1
    assert table["share where chosen is longer"] == "66.7%"


def test_distinct_ngrams():
    assert distinct_ngrams(["a b a b"], 1) == (2, 0.5)
    assert distinct_ngrams(["a b a b"], 2) == (2, 2 / 3)


def test_token_lengths_use_the_tokenizer(tokenizer):
    stats = dpo_lab.dataset_statistics(PAIRS, tokenizer)
    assert stats.loc[0, "chosen_len"] == len(tokenizer(" a b c d", add_special_tokens=False)["input_ids"])
    assert list(stats["chosen_longer"]) == [True, True, False]


def test_plot_has_three_labelled_panels(tmp_path):
    fig = dpo_lab.plot_length_distributions(dpo_lab.dataset_statistics(PAIRS))
    axes = fig.get_axes()
    assert len(axes) == 3
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in axes)
    fig.savefig(tmp_path / "lengths.png")
    assert (tmp_path / "lengths.png").stat().st_size > 1000


def _history():
    rows = []
    for step in range(1, 21):
        row = {
            "step": step,
            "loss": 0.69 - 0.01 * step,
            "rewards/chosen": 0.01 * step,
            "rewards/rejected": -0.02 * step,
            "rewards/margins": 0.03 * step,
            "rewards/accuracies": min(1.0, 0.05 * step),
            "logps/chosen": -20.0,
            "logps/rejected": -25.0 - step,
            "eval_loss": 2.0,
            "eval_perplexity": 7.4,
        }
        if step % 5 == 0:
            row.update(
                {f"eval_{k}": v for k, v in row.items() if k.startswith(("rewards/", "logps/"))}
                | {"eval_kl": 0.1 * step}
            )
        rows.append(row)
    return rows


def test_training_plots_are_labelled_and_start_at_step_zero(tmp_path):
    fig = dpo_lab.plot_dpo_history(_history(), beta=0.1, initial_eval={"eval_loss": 0.693, "eval_kl": 0.0})
    axes = fig.get_axes()
    assert len(axes) == 6 and all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in axes)
    kl_axis = next(ax for ax in axes if ax.get_title().startswith("KL"))
    assert kl_axis.get_lines()[0].get_xdata()[0] == 0  # the step-0 point where policy == reference
    assert "β = 0.1" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "dpo.png")
    fig = dpo_lab.plot_sft_history(_history())
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.get_axes())
