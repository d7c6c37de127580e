"""Notebook 04's evaluation as one command: the answer cache, the report, bad inputs, and a judge that dies mid-way."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import StubChat, make_smoke_run

from dpo_lab.cli import main
from dpo_lab.evaluation.answers import cached_answers
from dpo_lab.evaluation.judges import Comparison, Judgment
from dpo_lab.evaluation.report import success_and_failure_cases
from dpo_lab.evaluation.stage import decoding_settings, evaluate_run
from dpo_lab.infra.tables import read_text_table
from dpo_lab.run.models import tiny_random_model
from dpo_lab.run.pipeline import run_dpo_stage

PROMPTS = ["\n\nHuman: What is a rainbow?\n\nAssistant:", "\n\nHuman: How do magnets work?\n\nAssistant:"]


def test_answers_are_generated_once_per_model_prompts_and_settings(tokenizer, tmp_path):
    loads = []

    def load():
        loads.append(1)
        return tiny_random_model(tokenizer, seed=0)

    first = cached_answers("model-1", load, tokenizer, PROMPTS, cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
    again = cached_answers("model-1", load, tokenizer, PROMPTS, cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
    assert again == first and len(loads) == 1  # second call: from the cache, the model never loaded
    cached_answers("model-1", load, tokenizer, PROMPTS, cache_dir=tmp_path, max_new_tokens=7, do_sample=False)
    cached_answers("model-2", load, tokenizer, PROMPTS, cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
    cached_answers("model-1", load, tokenizer, PROMPTS[:1], cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
    assert len(loads) == 4  # other settings, another model id, other prompts: each generated anew
    for path in tmp_path.glob("*.json"):  # a damaged cache file is regenerated, not trusted
        path.write_text("{not json", encoding="utf-8")
    assert (
        cached_answers("model-1", load, tokenizer, PROMPTS, cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
        == first
    )
    assert len(loads) == 5
    with pytest.raises(ValueError, match="empty list of prompts"):
        cached_answers("model-1", load, tokenizer, [], cache_dir=tmp_path, max_new_tokens=6)


def test_decoding_settings():
    assert decoding_settings(0, 32, 1) == {"max_new_tokens": 32, "do_sample": False}
    assert decoding_settings(0.7, 32, 1) == {"max_new_tokens": 32, "do_sample": True, "temperature": 0.7, "seed": 1}
    with pytest.raises(ValueError, match="temperature"):
        decoding_settings(-1, 32, 1)


def test_success_and_failure_cases_are_the_largest_gains_and_losses():
    gains = [0.5, -2.0, 3.0, 0.0, -0.1, 1.0]
    comp = Comparison(
        judge="gold",
        n_requested=6,
        judgments=[
            Judgment(index=i, winner="A" if g > 0 else "B", shown_first="A", score_a=g, score_b=0.0)
            for i, g in enumerate(gains)
        ],
    )
    prompts = [f"\n\nHuman: q{i}\n\nAssistant:" for i in range(6)]
    cases = success_and_failure_cases(prompts, [f"dpo{i}" for i in range(6)], [f"sft{i}" for i in range(6)], comp, k=2)
    assert cases["case"].tolist() == ["success", "success", "failure", "failure"]
    assert cases["model"].tolist() == ["dpo2", "dpo5", "dpo1", "dpo4"] and cases["prompt"].tolist()[0] == "q2"
    none = Comparison(judge="human", n_requested=1, judgments=[Judgment(0, "A", "A", None, None)])
    with pytest.raises(ValueError, match="score judge"):
        success_and_failure_cases(prompts[:1], ["a"], ["b"], none)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A smoke run folder with 01_data and 02_sft only (no DPO yet)."""
    return make_smoke_run(tmp_path_factory.mktemp("eval") / "smoke")


def test_evaluate_without_a_dpo_run_is_a_clear_error(smoke_run, capsys):
    with pytest.raises(FileNotFoundError, match="no finished DPO run"):
        evaluate_run(smoke_run, log=lambda *_: None)
    assert main(["evaluate", "--run-dir", str(smoke_run), "--quiet"]) == 2
    assert "no finished DPO run" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_writes_the_report_and_keeps_a_failing_judges_partial_results(
    smoke_run, tmp_path, stub_server, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    run_dpo_stage(run_dir, progress=False)
    with pytest.raises(ValueError, match="n_judge_prompts"):
        evaluate_run(run_dir, n_judge_prompts=0, log=lambda *_: None)
    with pytest.raises(ValueError, match="unknown evaluation parameter"):
        evaluate_run(run_dir, n_prompts=3, log=lambda *_: None)
    StubChat.fail_after = 5  # the LLM judge's server dies after 5 answers
    monkeypatch.setenv("DPO_LAB_JUDGE_URL", stub_server)
    monkeypatch.setenv("DPO_LAB_JUDGE_MODEL", "stub-model")
    assert (
        main(
            [
                "evaluate",
                "--run-dir",
                str(run_dir),
                "--quiet",
                "--llm-judge",
                "--param",
                "n_judge_prompts=10",
                "--param",
                "judge_pairs=64",
            ]
        )
        == 0
    )
    out = run_dir / "04_eval"
    for name in (
        "summary.csv",
        "summary.json",
        "win_rates.csv",
        "elo.csv",
        "cases.csv",
        "generations.csv",
        "report.md",
        "manifest.json",
        "figures/model_comparison.png",
        "figures/elo.png",
        "figures/reward_kl_frontier.png",
    ):
        assert (out / name).exists(), name
    generations = read_text_table(out / "generations.csv")  # exact prompts, one row each, nothing cut
    helpful = generations[generations["kind"] == "helpful"]
    assert len(helpful) == 10 and all(p.endswith("\n\nAssistant:") for p in helpful["prompt"])
    assert set(generations.columns) == {"prompt", "base", "SFT", "DPO β=0.1", "kind"}
    rates = pd.read_csv(out / "win_rates.csv")
    llm = rates[rates["judge"] == "LLM judge stub-model"].iloc[0]
    assert {"wins_n", "ties_n", "losses_n", "n_clusters", "net_of_noise"} <= set(rates.columns)
    oracle_row = rates[(rates["judge"] == "oracle") & (rates["model"] == "DPO β=0.1")].iloc[0]
    assert oracle_row[["wins_n", "ties_n", "losses_n"]].sum() == oracle_row["n_judged"] == 10
    assert oracle_row["n_clusters"] < 10  # topics, not prompts, are what the interval resamples
    assert (llm["n_judged"], llm["n_requested"], llm["errors"]) == (5, 10, 4)  # 5 kept, 3 failures + "stopped"
    gold = rates[rates["judge"] == "gold judge"]
    assert set(gold["model"]) == {"SFT (another sample)", "DPO β=0.1"} and (gold["n_judged"] == 10).all()
    elo = pd.read_csv(out / "elo.csv")
    assert (
        set(elo["model"]) == {"base", "SFT", "DPO β=0.1"}
        and float(elo.loc[elo["model"] == "SFT", "elo"].iloc[0]) == 1000.0
    )
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## 對 SFT 的 win rate" in report and "## Elo" in report and "LLM judge stub-model" in report
    assert "5 of 10 pairs judged" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decoding"]["do_sample"] is True and summary["models"] == ["SFT", "DPO β=0.1"]
    # a second evaluation reuses every cached answer: no model is loaded for generation
    cached = sorted(p.name for p in (run_dir / "cache" / "answers").glob("*.json"))
    evaluate_run(run_dir, n_judge_prompts=10, judge_pairs=64, progress=False, log=lambda *_: None)
    assert sorted(p.name for p in (run_dir / "cache" / "answers").glob("*.json")) == cached
