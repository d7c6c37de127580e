"""The judge interface: random A/B order, partial results when a judge fails, the reward-model judge,
the LLM judge against a stub OpenAI-compatible server on loopback, and the blind human A/B widget."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import StubChat

import dpo_lab
from dpo_lab.evaluation.human_ab import HumanABJudge
from dpo_lab.evaluation.judges import Judge, LLMJudge, RewardModelJudge, ScoreJudge, compare

PROMPTS = [f"\n\nHuman: question {i}?\n\nAssistant:" for i in range(12)]
GOOD = [f"A GOOD, specific answer to question {i}." for i in range(12)]
BAD = [f"meh {i}" for i in range(12)]


class KeywordJudge(ScoreJudge):
    """Scores 1 for answers containing GOOD, else 0; remembers what it was shown."""

    name = "keyword"
    batch_size = 4

    def __init__(self):
        self.seen_first: list[str] = []

    def score(self, prompts, responses):
        return torch.tensor([1.0 if "GOOD" in r else 0.0 for r in responses])

    def judge_shown(self, prompts, firsts, seconds):
        self.seen_first += firsts
        return super().judge_shown(prompts, firsts, seconds)


def test_order_is_shuffled_but_verdicts_are_in_model_terms():
    judge = KeywordJudge()
    result = compare(judge, PROMPTS, GOOD, BAD, seed=0)
    assert result.complete and result.outcomes == ["A"] * 12 and dpo_lab.win_rate(result.outcomes) == 1.0
    shown_good_first = sum("GOOD" in a for a in judge.seen_first)
    assert 0 < shown_good_first < 12  # both positions were used
    assert [j.shown_first == "A" for j in result.judgments] == ["GOOD" in a for a in judge.seen_first]
    assert all(j.score_a == 1.0 and j.score_b == 0.0 for j in result.judgments)
    assert compare(KeywordJudge(), PROMPTS, BAD, GOOD, seed=0).outcomes == ["B"] * 12
    assert set(compare(KeywordJudge(), PROMPTS, GOOD, GOOD, seed=0).outcomes) == {"tie"}


class FlakyJudge(Judge):
    """Answers "first" for the first `ok` calls, then raises (a server that goes down)."""

    batch_size = 2

    def __init__(self, ok: int, recover_after: int | None = None):
        self.calls, self.ok, self.recover_after = 0, ok, recover_after

    def judge_shown(self, prompts, firsts, seconds):
        self.calls += 1
        if self.calls > self.ok and (self.recover_after is None or self.calls <= self.recover_after):
            raise ConnectionError("judge server went away")
        return [("first", None, None)] * len(prompts)


def test_a_judge_that_fails_midway_keeps_partial_results_and_reports():
    result = compare(FlakyJudge(ok=2), PROMPTS, GOOD, BAD, seed=1, max_consecutive_errors=3)
    assert len(result.judgments) == 4 and not result.complete
    assert [j.index for j in result.judgments] == [0, 1, 2, 3]
    assert len(result.errors) == 4 and "ConnectionError" in result.errors[0] and "stopped after 3" in result.errors[-1]
    assert "4 of 12 pairs judged" in result.report()
    # a transient failure skips one batch and goes on
    transient = compare(FlakyJudge(ok=1, recover_after=2), PROMPTS, GOOD, BAD, seed=1)
    assert len(transient.judgments) == 10 and len(transient.errors) == 1 and "pairs 2-3" in transient.errors[0]


def test_bad_verdicts_and_inputs_are_reported():
    class Wrong(Judge):
        def judge_shown(self, prompts, firsts, seconds):
            return [("left", None, None)] * len(prompts)

    result = compare(Wrong(), PROMPTS[:2], GOOD[:2], BAD[:2])
    assert not result.judgments and "not one of" in result.errors[0]
    with pytest.raises(ValueError, match="empty list of prompts"):
        compare(KeywordJudge(), [], [], [])
    with pytest.raises(ValueError, match="2 prompts, 1 answers A"):
        compare(KeywordJudge(), PROMPTS[:2], GOOD[:1], BAD[:2])


def test_reward_model_judge_scores_with_any_sequence_classification_model(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from dpo_lab.run.tokenizers import corpus_tokenizer

    tok = corpus_tokenizer(vocab_size=512)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=256,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    judge = RewardModelJudge(str(tmp_path / "rm"), batch_size=5)
    scores = judge.score(PROMPTS, GOOD)
    one_by_one = torch.cat([judge.score([p], [g]) for p, g in zip(PROMPTS, GOOD)])
    assert scores.shape == (12,) and torch.allclose(scores, one_by_one, atol=1e-5)  # padding does not change a score
    result = compare(judge, PROMPTS, GOOD, BAD, seed=0)
    expected = [
        "tie" if abs(a - b) < judge.tie_margin else ("A" if a > b else "B")
        for a, b in zip(judge.score(PROMPTS, GOOD).tolist(), judge.score(PROMPTS, BAD).tolist())
    ]
    assert result.outcomes == expected
    GPT2ForSequenceClassification(
        GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=2)
    ).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    with pytest.raises(ValueError, match="ONE output"):
        RewardModelJudge(str(tmp_path / "clf"))


def test_llm_judge_against_a_stub_server(stub_server, monkeypatch):
    judge = LLMJudge(stub_server, "stub-model", api_key="sk-test", timeout=10)
    result = compare(judge, PROMPTS, GOOD, BAD, seed=2)
    assert result.complete and result.outcomes == ["A"] * 12
    sent = StubChat.requests
    assert len(sent) == 12 and sent[0]["path"] == "/v1/chat/completions" and sent[0]["model"] == "stub-model"
    assert sent[0]["auth"] == "Bearer sk-test" and sent[0]["temperature"] == 0
    assert sent[0]["messages"][0]["role"] == "system" and "[[tie]]" in sent[0]["messages"][0]["content"]
    firsts = ["GOOD" in r["messages"][-1]["content"].split("[Answer B]")[0] for r in sent]
    assert 0 < sum(firsts) < 12  # the server saw both orders
    # replies without a verdict are reported per pair, not fatal
    garbled = compare(judge, PROMPTS[:3] + ["garble"], GOOD[:4], BAD[:4], seed=0)
    assert len(garbled.judgments) == 3 and "no [[A]], [[B]] or [[tie]]" in garbled.errors[0]
    # configured from the environment, off when not configured
    monkeypatch.delenv("DPO_LAB_JUDGE_URL", raising=False)
    assert LLMJudge.from_env() is None
    monkeypatch.setenv("DPO_LAB_JUDGE_URL", stub_server)
    monkeypatch.setenv("DPO_LAB_JUDGE_MODEL", "stub-model")
    assert LLMJudge.from_env().url == stub_server + "/chat/completions"


def test_llm_judge_server_dying_midway_keeps_partial_results(stub_server):
    StubChat.fail_after = 5
    result = compare(LLMJudge(stub_server, "stub-model", timeout=10), PROMPTS, GOOD, BAD, seed=0)
    assert len(result.judgments) == 5 and result.outcomes == ["A"] * 5
    # the error names the status AND carries the server's own explanation (ChatClient reads the error body)
    assert "HTTP 500" in result.errors[0] and "the stub server is down" in result.errors[0]
    assert "stopped after 3" in result.errors[-1]


def test_human_ab_widget_is_blind_saves_every_click_and_resumes(tmp_path):
    pytest.importorskip("ipywidgets")
    judge = HumanABJudge(PROMPTS[:6], GOOD[:6], BAD[:6], model_a="DPO β=0.1", model_b="SFT", folder=tmp_path, seed=0)
    panel = judge.widget()
    assert "已標註 0 / 6" in panel.children[0].value
    left, right = panel.children[2].children
    for _ in range(4):  # the person always picks the answer that reads better: the GOOD one, wherever it is shown
        judge._buttons["left" if "GOOD" in left.value else "right"].click()
    saved = json.loads(judge.path.read_text(encoding="utf-8"))
    assert len(saved["labels"]) == 4 and {r["winner"] for r in saved["labels"]} == {"A"}
    assert {r["model_left"] for r in saved["labels"]} == {"DPO β=0.1", "SFT"}  # blind: positions vary
    # a new session on the same answers resumes; other answers get their own file
    again = HumanABJudge(PROMPTS[:6], GOOD[:6], BAD[:6], model_a="DPO β=0.1", model_b="SFT", folder=tmp_path, seed=0)
    assert again.next_index() == 4
    again.widget()
    again._buttons["tie"].click()
    result = again.comparison()
    assert result.outcomes == ["A", "A", "A", "A", "tie"] and not result.complete
    assert dpo_lab.win_rate(result.outcomes) == pytest.approx(0.9)
    other = HumanABJudge(PROMPTS[:6], BAD[:6], GOOD[:6], model_a="DPO β=0.1", model_b="SFT", folder=tmp_path, seed=0)
    assert other.path != judge.path and other.next_index() == 0
    with pytest.raises(ValueError, match="choice must be"):
        again.record(5, "A")


def test_position_bias_is_measured_as_the_first_shown_answers_win_share():
    # a judge that always prefers the first answer it sees: the win rate between the models is ~50 % (random
    # order), which hides the bias; the first-shown share exposes it
    biased = compare(FlakyJudge(ok=100), PROMPTS, GOOD, BAD, seed=1)
    assert biased.first_shown_win_share == 1.0 and "won 100% of the decided pairs" in biased.report()
    fair = compare(KeywordJudge(), PROMPTS, GOOD, BAD, seed=0)  # scores each answer alone: wins follow content
    assert fair.first_shown_win_share == sum(j.shown_first == "A" for j in fair.judgments) / 12
    assert compare(KeywordJudge(), PROMPTS, GOOD, GOOD, seed=0).first_shown_win_share is None  # all ties


def test_human_ab_repeats_pairs_swapped_to_measure_position_flips(tmp_path):
    pytest.importorskip("ipywidgets")

    def label(judge, follow_content: bool) -> None:
        panel = judge.widget()
        left, _ = panel.children[2].children
        while judge.next_index() is not None:
            pick = ("left" if "GOOD" in left.value else "right") if follow_content else "left"
            judge._buttons[pick].click()

    reader = HumanABJudge(
        PROMPTS[:4], GOOD[:4], BAD[:4], model_a="DPO", model_b="SFT", folder=tmp_path / "r", seed=0, repeat_swapped=3
    )
    label(reader, follow_content=True)
    assert reader.position_flips() == (0.0, 3)
    assert reader.comparison().outcomes == ["A"] * 4 and reader.comparison().complete  # repeats are not counted twice
    lefty = HumanABJudge(
        PROMPTS[:4], GOOD[:4], BAD[:4], model_a="DPO", model_b="SFT", folder=tmp_path / "l", seed=0, repeat_swapped=3
    )
    label(lefty, follow_content=False)  # always clicks the left answer: every swapped repeat flips
    assert lefty.position_flips() == (1.0, 3)
    saved = json.loads(lefty.path.read_text(encoding="utf-8"))
    assert [r["pair"] for r in saved["labels"]] == [0, 1, 2, 3, 0, 1, 2]
