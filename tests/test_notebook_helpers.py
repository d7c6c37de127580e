"""The package pieces the notebooks call: generation, win rate, inspection tables, evaluation discovery, figures."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

import dpo_lab
from dpo_lab.data.inspection import batch_table, mask_picture, token_table
from dpo_lab.evaluation.generation import generate, side_by_side
from dpo_lab.evaluation.winrate import bootstrap_ci, win_rate

PROMPTS = [
    "\n\nHuman: What is a habit loop?\n\nAssistant:",
    "\n\nHuman: Hi\n\nAssistant:",
    "\n\nHuman: Explain compound interest with an example, please.\n\nAssistant:",
]


@pytest.fixture(scope="module")
def model(tokenizer):
    return dpo_lab.tiny_random_model(tokenizer, seed=3)


# ---------------------------------------------------------------------------------------------- generation


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(model, tokenizer):
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3)
    single = [generate(model, tokenizer, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(a, str) and tokenizer.eos_token not in a for a in batched)


def test_sampling_is_seeded_and_differs_from_greedy(model, tokenizer):
    a = generate(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    b = generate(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    c = generate(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=8)
    assert a == b and a != c


def test_generation_restores_train_mode_and_rejects_bad_input(model, tokenizer):
    model.train()
    generate(model, tokenizer, PROMPTS[:1], max_new_tokens=2)
    assert model.training
    with pytest.raises(ValueError, match="empty list"):
        generate(model, tokenizer, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="positions"):
        generate(model, tokenizer, PROMPTS[:1], max_new_tokens=10_000)


def test_side_by_side_checks_lengths():
    table = side_by_side(PROMPTS, {"SFT": ["a", "b", "c"], "DPO": ["d", "e", "f"]})
    assert list(table.columns) == ["prompt", "SFT", "DPO"] and table["prompt"][1] == "Hi"
    with pytest.raises(ValueError, match="2 answers for 3 prompts"):
        side_by_side(PROMPTS, {"SFT": ["a", "b"]})


# ---------------------------------------------------------------------------------------------- win rate


def test_win_rate_counts_ties_as_half_and_validates():
    assert win_rate(["A", "B", "tie", "tie"]) == 0.5
    assert win_rate([1, 1, 1, 0]) == 0.75
    for bad in ([], ["C"], [0.3]):
        with pytest.raises(ValueError):
            win_rate(bad)


def test_bootstrap_interval_on_known_answers():
    assert bootstrap_ci(["A"] * 40) == (1.0, 1.0)
    low, high = bootstrap_ci(["A"] * 50 + ["B"] * 50, seed=1)
    assert low < 0.5 < high and 0.08 < high - low < 0.25  # ±1.96·sqrt(.25/100) ≈ ±0.098
    low2, high2 = bootstrap_ci(["A"] * 500 + ["B"] * 500, seed=1)
    assert high2 - low2 < (high - low) / 2  # ten times the data: about a third of the width
    assert bootstrap_ci(["A", "B", "tie"] * 10, seed=3) == bootstrap_ci(["A", "B", "tie"] * 10, seed=3)


def test_a_topic_bootstrap_is_wider_when_prompts_of_one_topic_agree():
    """20 topics x 10 prompts whose outcomes move together per topic: resampling prompts treats them as 200
    independent draws and is too narrow; resampling topics sees 20 (the interval is about three times wider)."""
    from dpo_lab.evaluation.winrate import wins_ties_losses

    outcomes, topics = [], []
    for t in range(20):
        outcomes += ["A" if t % 5 < 3 else "B"] * 10  # topics, not prompts, decide: 60 % of topics won
        topics += [f"topic {t}"] * 10
    low, high = bootstrap_ci(outcomes, seed=0)
    c_low, c_high = bootstrap_ci(outcomes, clusters=topics, seed=0)
    assert c_high - c_low > 2.5 * (high - low) and c_low < 0.5 < low
    assert bootstrap_ci(outcomes, clusters=list(range(200)), seed=0) == (low, high)  # one prompt per cluster
    assert wins_ties_losses(["A", "tie", "B", "A", 0.5]) == (2, 2, 1)
    with pytest.raises(ValueError, match="cluster labels"):
        bootstrap_ci(outcomes, clusters=topics[:-1])


def test_the_length_controlled_interval_resamples_topics_too():
    from dpo_lab.evaluation.bias import length_controlled_win_rate

    outcomes, topics, a, b = [], [], [], []
    for t in range(20):
        outcomes += ["A" if t % 5 < 3 else "B"] * 10
        topics += [t] * 10
        a += [20 + t % 3] * 10
        b += [20] * 10
    plain = length_controlled_win_rate(outcomes, a, b, seed=0)
    clustered = length_controlled_win_rate(outcomes, a, b, clusters=topics, seed=0)
    assert clustered["lc_win_rate"] == plain["lc_win_rate"]
    assert clustered["lc_ci_high"] - clustered["lc_ci_low"] > 2 * (plain["lc_ci_high"] - plain["lc_ci_low"])


# ---------------------------------------------------------------------------------------------- inspection


def test_token_table_marks_the_boundary_and_a_scored_eos(tokenizer):
    ex = dpo_lab.tokenize_pair(tokenizer, "\n\nHuman: Hi\n\nAssistant:", " Hello there.", " Go.")
    table = token_table(tokenizer, ex)
    n_prompt = len(ex["prompt_ids"])
    assert (table["segment"][:n_prompt] == "prompt").all() and table["scored_by_loss"][:n_prompt].sum() == 0
    assert table["segment"].iloc[-1] == "EOS" and table["scored_by_loss"].iloc[-1] == 1
    assert table["scored_by_loss"].sum() == len(ex["chosen_ids"])


def test_batch_table_and_mask_picture(tokenizer):
    examples = dpo_lab.tokenize_pairs(
        tokenizer, [{"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello there, friend.", "rejected": " Go."}]
    )
    batch = dpo_lab.PreferenceDataCollator(tokenizer)(examples)
    table = batch_table(tokenizer, batch, 1)
    assert list(table.columns) == ["position", "token_id", "text", "attention_mask", "loss_mask"]
    picture = mask_picture(batch, "loss_mask").splitlines()
    assert picture[1].startswith("chosen   0") and picture[2].startswith("rejected 0")
    assert picture[1].count("█") == int(batch["loss_mask"][0].sum())
    wide = {"loss_mask": torch.ones(2, 300, dtype=torch.long)}
    assert "1 character = 4 tokens" in mask_picture(wide, max_chars=96)
    assert len(mask_picture(wide, max_chars=96).splitlines()[1]) <= 12 + 96


# ---------------------------------------------------------------------------------------------- config, evaluation


def test_stage_config_refuses_a_profile_other_than_the_run_folders():
    from dpo_lab.run.pipeline import stage_config

    cfg = dpo_lab.get_config("smoke")
    assert stage_config(cfg, "auto", beta=0.5, dpo_lr=None).beta == 0.5
    assert stage_config(cfg, "smoke", dpo_lr=None).dpo_lr == cfg.dpo_lr
    with pytest.raises(ValueError, match="prepared with profile 'smoke'"):
        stage_config(cfg, "cpu")


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    from conftest import make_smoke_run

    return make_smoke_run(tmp_path_factory.mktemp("eval") / "run", betas=(0.5, 0.1))


def test_discover_models_orders_betas_and_skips_broken_runs(evaluated_run, tmp_path):
    from dpo_lab.evaluation.stage import discover_models

    run_dir = tmp_path / "copy"
    shutil.copytree(evaluated_run, run_dir)
    models, skipped = discover_models(run_dir)
    assert list(models) == ["SFT", "DPO β=0.1", "DPO β=0.5"] and skipped == []
    (run_dir / "03_dpo" / "beta_0.5" / "model.safetensors").write_bytes(b"half-written")
    shutil.copytree(run_dir / "03_dpo" / "beta_0.1", run_dir / "03_dpo" / "beta_oops")
    models, skipped = discover_models(run_dir)
    assert list(models) == ["SFT", "DPO β=0.1"]
    assert any(s.startswith("beta_0.5:") and "does not match" in s for s in skipped)
    assert any(s.startswith("beta_oops:") for s in skipped)


def test_summary_perplexity_and_saved_evaluation(evaluated_run, tokenizer):
    from dpo_lab.evaluation.metrics import heldout_perplexity, summarize_runs
    from dpo_lab.evaluation.stage import discover_models, save_evaluation
    from dpo_lab.run.layout import EVAL_DIR
    from dpo_lab.run.pipeline import load_eval_model
    from dpo_lab.run.prepare import load_prepared_data

    models, _ = discover_models(evaluated_run)
    summary = summarize_runs(models)
    sft = summary.iloc[0]
    assert (
        sft["model"] == "SFT"
        and sft["heldout_reward_margin"] == 0 == sft["heldout_logratio_margin"]
        and sft["heldout_dpo_loss"] == pytest.approx(math.log(2))
    )
    assert list(summary["beta"][1:]) == [0.1, 0.5]
    prepared = load_prepared_data(evaluated_run)
    ppl = heldout_perplexity(
        load_eval_model(models["SFT"]), prepared.tokenizer, prepared.splits["pairs_test"][:4], max_length=128
    )
    assert 1.0 < ppl < prepared.tokenizer.vocab_size * 2  # a random tiny model: near-uniform, finite
    with pytest.raises(ValueError):
        heldout_perplexity(load_eval_model(models["SFT"]), prepared.tokenizer, [], max_length=128)
    out = save_evaluation(
        evaluated_run, prepared.config, summary=summary, models={k: v for k, v in models.items() if k != "SFT"}
    )
    payload = json.loads((out / "summary.json").read_text())
    assert out.name == EVAL_DIR and payload["betas"] == [0.1, 0.5]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"03_dpo/beta_0.1", "03_dpo/beta_0.5"}


# ---------------------------------------------------------------------------------------------- figures


def _labelled(fig):
    for ax in fig.axes:
        if ax.get_visible() and ax.has_data():
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), ax
    return True


def test_new_figures_have_titles_and_labelled_axes(evaluated_run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dpo_lab.evaluation.metrics import summarize_runs
    from dpo_lab.evaluation.plots import plot_model_comparison, plot_overoptimization, save_figure
    from dpo_lab.evaluation.stage import discover_models
    from dpo_lab.infra.checkpoints import read_history

    folder = evaluated_run / "03_dpo" / "beta_0.1"
    manifest = json.loads((folder / "manifest.json").read_text())
    fig = plot_overoptimization(read_history(folder), manifest["metrics"]["initial_eval"], beta=0.1)
    assert _labelled(fig) and len(fig.axes) == 3
    from dpo_lab.evaluation.plots import plot_beta_sweep

    summary = summarize_runs(discover_models(evaluated_run)[0])
    comparison = plot_model_comparison(summary)
    assert (
        _labelled(comparison) and len([ax for ax in comparison.axes if ax.get_visible()]) == 4
    )  # no perplexity column
    sweep = plot_beta_sweep(summary, pick="DPO β=0.1")
    assert _labelled(sweep) and [ax.get_ylabel() for ax in sweep.axes] == [
        "log-ratio margin, nats",
        "reward margin = β × nats",
    ]
    path = save_figure(comparison, tmp_path / "figures" / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_environment_report_names_device_profile_and_versions():
    from dpo_lab.infra.device import environment_report

    line = environment_report(dpo_lab.get_config("smoke"))
    for part in ("profile smoke", "device cpu", "fp32", "torch", "transformers", "trl"):
        assert part in line


def test_progress_bars_can_be_switched_off_by_the_environment(monkeypatch):
    from dpo_lab.infra.console import PROGRESS_ENV, PROGRESS_FILE_ENV, track

    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    shown = track(True, total=3, desc="x")
    assert shown is not None and shown.bar is not None
    shown.close()
    assert track(False, total=3, desc="x") is None
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert track(True, total=3, desc="x").bar is None


def test_a_loop_announces_its_expected_duration_from_measured_steps_and_evaluations(monkeypatch, capsys):
    """After WARMUP_STEPS timed steps: elapsed + per-step time x steps left + evaluations left x their time."""
    from dpo_lab.infra import console

    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    monkeypatch.delenv(console.PROGRESS_FILE_ENV, raising=False)
    clock = iter(range(0, 1000, 2))  # every perf_counter() call moves 2 s: steps take 2 s each
    monkeypatch.setattr(console.time, "perf_counter", lambda: float(next(clock)))
    p = console.Progress(20, desc="SFT", eval_every=5, eval_seconds=3.0)  # start at t=0
    for _ in range(console.Progress.WARMUP_STEPS):
        p.step(loss=1.0)
        assert p.estimate_seconds is None
    p.step(loss=1.0)  # first step ends at t=2, the 4th at t=8: 2 s per step
    # 8 s so far + 16 steps x 2 s + evaluations at steps 5, 10, 15, 20 x 3 s
    assert p.estimate_seconds == 8 + 16 * 2 + 4 * 3
    out = capsys.readouterr().out
    assert "預估全程約 52 秒" in out and "每步 2.00 s × 剩下 16 步 + 4 次 held-out 評估 × 3.0 s" in out
    p.step(loss=1.0)
    assert capsys.readouterr().out == ""  # said once


def test_a_long_loop_is_timed_for_a_while_and_evaluations_in_that_window_are_not_counted_as_steps(monkeypatch):
    """Steps of 2 s, and 3 s more on the steps that evaluate: the estimate must find 2 s per step, not more."""
    from dpo_lab.infra import console

    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    monkeypatch.delenv(console.PROGRESS_FILE_ENV, raising=False)
    ends = [0.0]  # Progress starts at t = 0; step k ends 2 s later, 5 s later when k is a multiple of 5
    for k in range(1, 40):
        ends.append(ends[-1] + 2 + (3 if k % 5 == 0 else 0))
    clock = iter(ends)
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    p = console.Progress(1000, desc="DPO", eval_every=5, eval_seconds=3.0)
    for step in range(1, 8):
        assert p.estimate_seconds is None, step  # too early: under 15 s since the first step ended
        p.step(loss=0.5)
    # announced at step 7 (t = 17; 15 s after step 1): 6 timed steps took 15 s, 3 of them in the step-5 evaluation
    left_evals = len(range(10, 1001, 5))
    assert p.estimate_seconds == 17 + 993 * 2.0 + left_evals * 3.0


def test_progress_written_by_one_process_is_shown_by_the_runner(monkeypatch, tmp_path):
    """The kernel side appends JSON lines; follow_progress prints them as log lines (not a TTY) with held-out values."""
    import io

    from dpo_lab.infra import console

    path = tmp_path / "p.jsonl"
    out = io.StringIO()
    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    monkeypatch.setenv(console.PROGRESS_FILE_ENV, str(path))
    with console.follow_progress(path, stream=out):
        p = console.Progress(4, desc="DPO beta=0.1", announce=False)
        p.step(loss=0.69)
        p.step(loss=0.68, eval_loss=0.67)
        p.step(loss=0.66)
        p.step(loss=0.65, eval_loss=0.64)
        p.close()
    lines = out.getvalue().splitlines()
    assert any("[DPO beta=0.1] 2/4 (50%) · loss 0.68 · eval_loss 0.67" in line for line in lines), lines
    assert any("[DPO beta=0.1] 4/4 (100%) · loss 0.65 · eval_loss 0.64" in line for line in lines), lines
    assert sum("4/4" in line for line in lines) == 1, lines  # the "done" record does not repeat the last step
    assert not path.exists()


def test_sampled_kl_is_zero_for_identical_models_and_positive_otherwise(tokenizer):
    from dpo_lab.evaluation.metrics import sampled_kl

    policy = dpo_lab.tiny_random_model(tokenizer, seed=1)
    same = dpo_lab.tiny_random_model(tokenizer, seed=1)  # a separate module with the same weights
    other = dpo_lab.tiny_random_model(tokenizer, seed=1)
    torch.manual_seed(5)
    with torch.no_grad():  # the same model, perturbed: its next-token distributions differ clearly from the policy's
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    prompts = PROMPTS * 8
    zero = sampled_kl(policy, same, tokenizer, prompts, max_new_tokens=16, seed=0)
    assert zero["sampled_kl"] == 0.0 and zero["n_samples"] == len(prompts)
    kl = sampled_kl(policy, other, tokenizer, prompts, max_new_tokens=16, seed=0)
    assert kl["sampled_kl"] > 3 * kl["sampled_kl_stderr"] > 0  # clearly positive, not noise
    assert sampled_kl(policy, other, tokenizer, prompts, max_new_tokens=16, seed=0) == kl  # seeded


def test_generate_ids_keeps_the_eos_it_sampled(model, tokenizer):
    from dpo_lab.evaluation.generation import generate_ids

    results = generate_ids(model, tokenizer, PROMPTS, max_new_tokens=40, do_sample=True, seed=1)
    assert [p for p, _ in results] == [tokenizer(p)["input_ids"] for p in PROMPTS]
    for _, new in results:
        assert tokenizer.eos_token_id not in new[:-1]  # nothing after the first EOS
        assert len(new) <= 40


def _sweep(rows):
    import pandas as pd

    table = pd.DataFrame(
        [{"model": "SFT", "beta": None, "loss_type": None, "round": 0, "heldout_reward_margin": 0.0, "heldout_kl": 0.0}]
        + [
            {"model": f"DPO β={b:g}", "beta": b, "loss_type": "sigmoid", "round": 1}
            | {"heldout_reward_margin": m, "heldout_kl": kl}
            for b, m, kl in rows
        ]
    )
    table["heldout_logratio_margin"] = table["heldout_reward_margin"] / table["beta"].fillna(1.0)
    return table


def test_course_rule_compares_log_ratio_margins_not_beta_scaled_rewards():
    from dpo_lab.evaluation.metrics import course_rule_pick

    # the README's cpu runs before this rule was fixed: reward margins 0.612 (β=0.1) and 1.519 (β=0.5)
    # are 6.12 and 3.04 nats; in nats β=0.1 moved the log-ratios twice as far, at a KL well under 10
    table = _sweep([(0.1, 0.612, 2.48), (0.5, 1.519, 0.89)])
    assert course_rule_pick(table, 10.0) == "DPO β=0.1"
    assert (
        table.loc[table["heldout_reward_margin"].idxmax(), "model"] == "DPO β=0.5"
    )  # what the β-scaled margin would pick
    # the KL limit excludes a run whatever its margin; nothing under the limit -> None
    assert course_rule_pick(_sweep([(0.05, 0.9, 12.0), (0.5, 1.519, 0.89)]), 10.0) == "DPO β=0.5"
    assert course_rule_pick(_sweep([(0.05, 0.9, 12.0)]), 10.0) is None
    # the limit is the caller's (stage 04 passes LabConfig.course_kl_limit), not a number inside the rule
    assert course_rule_pick(_sweep([(0.05, 0.9, 12.0), (0.5, 1.519, 0.89)]), 15.0) == "DPO β=0.05"
    # a loss variant or a second round is not part of the beta sweep, however large its margin
    table.loc[len(table)] = {"model": "IPO β=0.1", "beta": 0.1, "loss_type": "ipo", "round": 1}
    table.loc[len(table)] = {"model": "DPO β=0.1 · round 2", "beta": 0.1, "loss_type": "sigmoid", "round": 2}
    table.loc[table.index[-2:], ["heldout_reward_margin", "heldout_logratio_margin", "heldout_kl"]] = [5.0, 50.0, 1.0]
    assert course_rule_pick(table, 10.0) == "DPO β=0.1"


def test_summary_reports_both_margins(evaluated_run):
    from dpo_lab.evaluation.metrics import summarize_runs
    from dpo_lab.evaluation.stage import discover_models

    summary = summarize_runs(discover_models(evaluated_run)[0]).set_index("model")
    for name, beta in (("DPO β=0.1", 0.1), ("DPO β=0.5", 0.5)):
        row = summary.loc[name]
        assert row["heldout_logratio_margin"] == pytest.approx(row["heldout_reward_margin"] / beta)
        manifest = json.loads((evaluated_run / "03_dpo" / f"beta_{beta:g}" / "manifest.json").read_text())
        assert manifest["metrics"]["final_eval"]["eval_logratios/margins"] == pytest.approx(
            row["heldout_logratio_margin"], rel=1e-6
        )


def test_the_report_headline_covers_every_method_that_ran():
    """The report's verdict picks among every trained run — IPO, cDPO, rDPO, hinge, second rounds — not only the
    runs whose display label starts with "DPO" (the rows a label filter once silently dropped)."""
    import pandas as pd

    from dpo_lab.evaluation.report import report_head

    trained = ["DPO β=0.5", "IPO β=0.5", "rDPO ε=0.1 β=0.5", "hinge β=0.5 · round 2"]
    rates = {"DPO β=0.5": 0.52, "IPO β=0.5": 0.61, "rDPO ε=0.1 β=0.5": 0.58, "hinge β=0.5 · round 2": 0.55}
    rates["SFT (second sample)"] = 0.99  # a noise row: not a trained run, never the headline
    win_rates = pd.DataFrame(
        [
            {
                "model": m,
                "judge": "oracle",
                "win_rate": r,
                "win_ci_low": r - 0.1,
                "win_ci_high": r + 0.1,
                "n_judged": 200,
            }
            for m, r in rates.items()
        ]
    )
    report = "\n".join(report_head(headline=None, win_rates=win_rates, trained=trained, primary="oracle"))
    assert "win rate 最高的 DPO run 是 **IPO β=0.5**：對 SFT 的 win rate 61.0%" in report
    for model, rate in (("rDPO ε=0.1 β=0.5", 0.7), ("hinge β=0.5 · round 2", 0.8)):
        win_rates.loc[win_rates["model"] == model, "win_rate"] = rate
        head = report_head(headline=None, win_rates=win_rates, trained=trained, primary="oracle")
        assert f"**{model}**：對 SFT 的 win rate {rate:.1%}" in "\n".join(head)
