"""The offline controlled corpus: deterministic, big and varied enough, split by prompt, labelled."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import dpo_lab
from dpo_lab.data.corpus import build_corpus
from dpo_lab.data.stats import distinct_ngrams

ROOT = Path(__file__).resolve().parents[1]


def _write_in_fresh_process(out: Path, seed: int, hashseed: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "dpo_lab", "corpus", "--out", str(out), "--seed", str(seed)],
        check=True,
        env=env,
        capture_output=True,
        cwd=ROOT,
    )
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_same_seed_gives_byte_identical_files_across_processes(tmp_path):
    a = _write_in_fresh_process(tmp_path / "a", seed=0, hashseed="1")
    b = _write_in_fresh_process(tmp_path / "b", seed=0, hashseed="2")  # different str hashing, same bytes
    c = _write_in_fresh_process(tmp_path / "c", seed=1, hashseed="1")
    assert a == b
    assert "pairs_train.jsonl" in a and a["pairs_train.jsonl"] != c["pairs_train.jsonl"]


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(0)


def test_sizes_and_coverage(corpus):
    pairs = corpus["pairs_train"] + corpus["pairs_test"]
    assert len(pairs) >= 3000
    by_subset = Counter(p["subset"] for p in pairs)
    assert by_subset["helpful"] >= 2000 and by_subset["harmless"] >= 500
    assert len({p["topic"] for p in pairs if p["subset"] == "helpful"}) >= 30
    assert len({p["topic"] for p in pairs if p["subset"] == "harmless"}) >= 15
    assert (
        len(corpus["sft_train"]) >= 1000 and len(corpus["eval_prompts"]) >= 100 and len(corpus["redteam_prompts"]) >= 50
    )


def test_train_and_test_share_no_prompt(corpus):
    prompt = lambda p: p["chosen"][: p["chosen"].rfind("\n\nAssistant:")]  # noqa: E731
    train = {prompt(p) for p in corpus["pairs_train"]} | {
        r["prompt"][: -len("\n\nAssistant:")] for r in corpus["sft_train"]
    }
    test = {prompt(p) for p in corpus["pairs_test"]}
    test |= {r["prompt"][: -len("\n\nAssistant:")] for r in corpus["eval_prompts"] + corpus["redteam_prompts"]}
    assert train and test and not (train & test)
    # whole topics are held out too, so generalisation is measured on unseen subjects
    assert {p["topic"] for p in corpus["pairs_test"]} - {p["topic"] for p in corpus["pairs_train"]}


def test_every_pair_is_valid_and_labelled(corpus):
    pairs, report = dpo_lab.load_preference_data("offline", split="train", errors="raise")
    assert report.n_skipped == 0 and len(pairs) == len(corpus["pairs_train"])
    pairs = corpus["pairs_train"] + corpus["pairs_test"]
    # quality labels are true to the texts; the preference label is wrong on the flipped (noisy) pairs only
    assert all((p["chosen_quality"] > p["rejected_quality"]) != p["label_flipped"] for p in pairs)
    flipped = sum(p["label_flipped"] for p in pairs) / len(pairs)
    assert 0.05 < flipped < 0.15
    assert len({(p["chosen"], p["rejected"]) for p in corpus["pairs_train"]}) == len(
        corpus["pairs_train"]
    )  # no duplicates


def test_not_trivially_separable(corpus):
    pairs = corpus["pairs_train"]
    styles = Counter(p["chosen_style" if p["label_flipped"] else "rejected_style"] for p in pairs)  # the worse text
    subtle = sum(styles[s] for s in ("partly_wrong", "less_specific", "padded", "partial_compliance", "rude_refusal"))
    assert subtle / len(pairs) > 0.3  # a large share of rejected answers are plausible, not obviously bad
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)
    assert 0.5 < longer < 0.75  # length alone does not decide the preference
    assert styles["unneeded_refusal"] > 0  # refusing is sometimes the WRONG answer


def test_sft_split_is_mixed_quality(corpus):
    share_good = sum(r["is_good"] for r in corpus["sft_train"]) / len(corpus["sft_train"])
    assert 0.4 < share_good < 0.6


def test_harmful_compliance_is_only_a_placeholder(corpus):
    for p in corpus["pairs_train"] + corpus["pairs_test"]:
        for side in ("chosen", "rejected"):
            if p[f"{side}_style"] in ("placeholder_compliance", "partial_compliance"):
                response = p[side][p[side].rfind("\n\nAssistant:") :]
                assert "[step removed" in response or "[details removed]" in response


def test_redteam_set_has_benign_lookalikes(corpus):
    flags = Counter(r["should_refuse"] for r in corpus["redteam_prompts"])
    assert flags[True] > 0 and flags[False] > 0


def test_variety(corpus):
    responses = [p["chosen"] for p in corpus["pairs_train"]] + [p["rejected"] for p in corpus["pairs_train"]]
    n_trigrams, _ = distinct_ngrams(responses, 3)
    assert n_trigrams > 5000
    assert len({p["chosen"][: p["chosen"].rfind("\n\nAssistant:")] for p in corpus["pairs_train"]}) > 3000
