"""Exploratory statistics of a preference data set: lengths, duplicates, variety, and a plot.

Lengths are counted in tokens of the tokenizer the model will use (whitespace words if none is
given), because token budgets — not characters — decide what gets truncated.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable


def _length_fn(tokenizer):
    if tokenizer is None:
        return lambda text: len(text.split())
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def dataset_statistics(pairs: list[dict[str, Any]], tokenizer=None):
    """One row per pair: prompt / chosen / rejected lengths, ``chosen_longer``, ``subset`` (if known)."""
    import pandas as pd

    length = _length_fn(tokenizer)
    rows = [
        {
            "subset": p.get("subset", "all"),
            "prompt_len": length(p["prompt"]),
            "chosen_len": length(p["chosen"]),
            "rejected_len": length(p["rejected"]),
            "turns": p["prompt"].count("\n\nHuman:"),
        }
        for p in pairs
    ]
    df = pd.DataFrame(rows)
    df["chosen_longer"] = df["chosen_len"] > df["rejected_len"]
    return df


def distinct_ngrams(texts: Iterable[str], n: int) -> tuple[int, float]:
    """``(number of distinct word n-grams, distinct / total)`` — the "distinct-n" variety measure."""
    counts: Counter = Counter()
    for text in texts:
        words = text.split()
        counts.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(counts.values())
    return len(counts), (len(counts) / total if total else 0.0)


def statistics_summary(pairs: list[dict[str, Any]], tokenizer=None):
    """A two-column table (``metric``, ``value``): counts, length percentiles, duplicates, variety."""
    import pandas as pd

    df = dataset_statistics(pairs, tokenizer)
    unit = "tokens" if tokenizer is not None else "words"
    responses = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    rows: list[tuple[str, Any]] = [
        ("pairs", len(pairs)),
        ("distinct prompts", len({p["prompt"] for p in pairs})),
        ("duplicate pairs", len(pairs) - len({(p["prompt"], p["chosen"], p["rejected"]) for p in pairs})),
        ("multi-turn prompts", int((df["turns"] > 1).sum())),
    ]
    if "topic" in pairs[0]:
        rows.append(("topics", len({p["topic"] for p in pairs})))
    for col in ("prompt_len", "chosen_len", "rejected_len"):
        s = df[col]
        rows.append(
            (
                f"{col.replace('_len', '')} length ({unit}) mean / median / p95 / max",
                f"{s.mean():.1f} / {s.median():.0f} / {s.quantile(0.95):.0f} / {s.max()}",
            )
        )
    rows.append(("share where chosen is longer", f"{df['chosen_longer'].mean():.1%}"))
    for n in (1, 2, 3):
        count, ratio = distinct_ngrams(responses, n)
        rows.append((f"distinct {n}-grams in responses (count, distinct-{n})", f"{count}, {ratio:.3f}"))
    return pd.DataFrame(rows, columns=["metric", "value"])


def plot_length_distributions(stats, title: str = "Preference data: length distributions", unit: str = "tokens"):
    """Histograms of prompt / chosen / rejected lengths (one panel each) from :func:`dataset_statistics`."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    colors = {"prompt_len": "tab:gray", "chosen_len": "tab:green", "rejected_len": "tab:red"}
    for ax, (col, color) in zip(axes, colors.items()):
        ax.hist(stats[col], bins=40, color=color, alpha=0.85)
        name = col.replace("_len", "")
        ax.set_title(f"{name} (median {stats[col].median():.0f})")
        ax.set_xlabel(f"length ({unit})")
        ax.set_ylabel("number of pairs")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig
