"""Statistics table and plot on a hand-made set with known answers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import dpo_lab  # noqa: E402
from dpo_lab.stats import distinct_ngrams  # noqa: E402

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
