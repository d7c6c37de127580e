"""Training loops, the reference cache, checkpoints and resume, on the smoke profile (tiny model)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import Interrupted, count_calls, interrupt_after, loop_args

import dpo_lab
from dpo_lab.evaluation.stage import discover_models
from dpo_lab.infra.checkpoints import StaleCheckpointError, load_model_checkpoint, verify_checkpoint
from dpo_lab.run import pipeline
from dpo_lab.run.prepare import prepare_data, save_prepared_data
from dpo_lab.training.dpo import DPOLoop, dpo_train
from dpo_lab.training.sft import TrainingDivergedError, sft_train

ROOT = Path(__file__).resolve().parents[1]


def _dpo_args(**kw):
    base = dict(
        beta=0.1, lr=5e-3, steps=6, batch_size=2, eval_every=3, progress=False, kl_limit=None, train_accuracy_limit=None
    )
    return loop_args("dpo", **{**base, **kw})


# ------------------------------------------------------------------ the DPO loop itself


def test_every_policy_parameter_changes_and_no_reference_parameter_does(tokenizer, tokenized_pairs):
    policy, reference = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    before_p = {n: p.detach().clone() for n, p in policy.named_parameters()}
    before_r = {n: p.detach().clone() for n, p in reference.named_parameters()}
    dpo_train(policy, reference, tokenizer, tokenized_pairs, tokenized_pairs[:4], _dpo_args(), device="cpu")
    unchanged = [n for n, p in policy.named_parameters() if torch.equal(p, before_p[n])]
    assert not unchanged, f"policy parameters that never moved: {unchanged}"
    assert all(torch.equal(p, before_r[n]) for n, p in reference.named_parameters())
    assert all(not p.requires_grad for p in reference.parameters()) and not reference.training


def test_step_zero_is_ln2_and_kl_zero_when_reference_is_a_copy(tokenizer, tokenized_pairs):
    import copy

    policy = dpo_lab.tiny_random_model(tokenizer, seed=1)
    reference = copy.deepcopy(policy)
    result = dpo_train(
        policy, reference, tokenizer, tokenized_pairs, tokenized_pairs[:4], _dpo_args(steps=2), device="cpu"
    )
    assert result.history[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert result.initial_eval["eval_kl"] == pytest.approx(0.0, abs=1e-6)
    assert result.final_eval["eval_kl"] > 0  # it moved


def test_reference_must_not_be_the_policy_object(tokenizer):
    policy = dpo_lab.tiny_random_model(tokenizer, seed=1)
    with pytest.raises(ValueError, match="separate frozen copy"):
        DPOLoop(policy, policy, beta=0.1)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"beta": 0.0}, "beta must be a finite number > 0"),
        ({"beta": -1.0}, "beta must be a finite number > 0"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_bad_hyperparameters(kw, message):
    with pytest.raises(ValueError, match=message):
        _dpo_args(**kw)


def test_empty_training_data_is_a_clear_error(tokenizer):
    policy, reference = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    with pytest.raises(ValueError, match="no training examples"):
        dpo_train(policy, reference, tokenizer, [], [], _dpo_args(), device="cpu")


def test_nan_stops_with_a_diagnosis(tokenizer, tokenized_pairs):
    policy, reference = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    with torch.no_grad():
        policy.lm_head.weight[0, 0] = float("nan")  # a corrupted weight
    with pytest.raises(TrainingDivergedError, match=r"step 1.*logps/chosen"):
        dpo_train(policy, reference, tokenizer, tokenized_pairs, [], _dpo_args(), device="cpu")


def test_over_optimisation_rule_stops_and_records_the_reason(tokenizer, tokenized_pairs):
    policy, reference = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    args = _dpo_args(steps=30, lr=2e-2, train_accuracy_limit=0.5, accuracy_window=3)
    result = dpo_train(policy, reference, tokenizer, tokenized_pairs, [], args, device="cpu")
    assert result.stop_reason.startswith("over-optimisation: train accuracy") and len(result.history) < 30


def test_lora_policy_uses_adapters_off_as_reference(tokenizer, tokenized_pairs):
    peft = pytest.importorskip("peft")
    base = dpo_lab.tiny_random_model(tokenizer, seed=1)
    batch = dpo_lab.PreferenceDataCollator(tokenizer)(tokenized_pairs[:4])
    with torch.no_grad():
        base_logps = torch.cat(dpo_lab.batch_logprobs(base.eval(), batch))
    policy = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0))
    trainer = DPOLoop(policy, None, beta=0.1)
    with torch.no_grad():
        ref = torch.cat(trainer.reference_side_logps(batch))
    assert torch.allclose(ref, base_logps, atol=1e-5)
    dpo_train(policy, None, tokenizer, tokenized_pairs, tokenized_pairs[:2], _dpo_args(steps=3, lr=5e-2), device="cpu")
    trained = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    with torch.no_grad():
        assert torch.allclose(
            torch.cat(trainer.reference_side_logps(batch)), base_logps, atol=1e-5
        )  # reference unchanged


# ------------------------------------------------------------------ stages on a run folder


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    config = dpo_lab.get_config("smoke", run_dir=str(run_dir))
    save_prepared_data(prepare_data(config), run_dir)
    pipeline.run_sft_stage(run_dir, progress=False)
    return run_dir


def test_sft_stage_writes_a_loadable_checkpoint(smoke_run):
    from transformers import AutoModelForCausalLM

    folder = smoke_run / "02_sft"
    manifest = verify_checkpoint(folder, produced_by="02")
    assert manifest["inputs"]["01_data"] and manifest["metrics"]["best_eval_loss"] > 0
    assert manifest["versions"]["trl"] == "1.16.0"
    AutoModelForCausalLM.from_pretrained(folder)  # plain transformers, no dpo_lab needed
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4] and "eval_perplexity" in history[-1]
    assert not (smoke_run / ".state").exists()


def test_beta_rerun_uses_the_cache_and_never_loads_the_reference(smoke_run, monkeypatch):
    calls = []
    original = pipeline.load_reference_model
    monkeypatch.setattr(pipeline, "load_reference_model", lambda *a, **k: calls.append(1) or original(*a, **k))
    first, r1 = pipeline.run_dpo_stage(smoke_run, beta=0.1, progress=False)
    assert calls == [1]  # the first run computes the cache
    monkeypatch.setattr(
        pipeline, "load_reference_model", lambda *a, **k: pytest.fail("reference model loaded on a cached re-run")
    )
    second, r2 = pipeline.run_dpo_stage(smoke_run, beta=0.5, progress=False)
    assert json.loads((first / "manifest.json").read_text())["metrics"]["reference_cache"].startswith("computed")
    assert json.loads((second / "manifest.json").read_text())["metrics"]["reference_cache"] == "hit"
    assert first.exists() and second.exists() and first != second  # the other beta's run is kept
    assert set(discover_models(smoke_run)[0]) == {"SFT", "DPO β=0.1", "DPO β=0.5"}
    # the cached numbers are the reference's: step-0 held-out loss is ln 2 for both betas
    assert r1.initial_eval["eval_loss"] == pytest.approx(0.693147, abs=1e-5) == r2.initial_eval["eval_loss"]
    assert r2.initial_eval["eval_kl"] == pytest.approx(0.0, abs=1e-5)
    # the cache is computed over the very batches training sees, so step 1 (policy == reference) is exact:
    # zero margins and a strict-">" accuracy of 0, as TRL shows
    for r in (r1, r2):
        assert r.history[0]["rewards/margins"] == 0.0 and r.history[0]["rewards/accuracies"] == 0.0


def test_on_a_small_gpu_the_stage_takes_the_planners_micro_batch(smoke_run, monkeypatch, capsys):
    """The GPU path (device_budget is None on the CPU, so it is mocked): a budget that fits one pair per forward
    turns the smoke profile's 2 pairs x 1 into 1 pair x 2 accumulated, printed and recorded."""
    from dpo_lab.run import memory

    policy = pipeline.load_reference_model(smoke_run / "02_sft", "cpu")
    config = dpo_lab.get_config("smoke")
    one_pair = memory.estimate_dpo_memory(
        memory.model_shape(policy), pairs=1, seq_len=config.max_length, precision="fp32"
    ).peak
    monkeypatch.setattr(pipeline, "device_budget", lambda device: one_pair + 1)
    out, result = pipeline.run_dpo_stage(smoke_run, beta=0.3, progress=False)
    assert (result.args["batch_size"], result.args["grad_accum"]) == (1, 2)
    assert "dpo_batch_size=1 × grad_accum=2" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["dpo_batch_size"] == 1


def test_on_a_card_too_small_for_one_pair_the_stage_stops_with_the_plan_not_an_oom(smoke_run, monkeypatch):
    """One size up from what fits: the planner's error (what to change, the estimate by part) before any model
    is loaded or any step runs, and no run folder left behind."""
    from dpo_lab.run import memory

    loaded = []
    monkeypatch.setattr(pipeline, "load_sft_checkpoint", lambda *a, **k: loaded.append(a))
    monkeypatch.setattr(pipeline, "device_budget", lambda device: 1024)
    with pytest.raises(memory.MemoryPlanError, match="dpo_batch_size=1") as err:
        pipeline.run_dpo_stage(smoke_run, beta=0.7, progress=False)
    assert "lora=true" in str(err.value) and "activations" in str(err.value) and not loaded
    assert not (smoke_run / "03_dpo" / "beta_0.7").exists()


def test_a_per_process_memory_cap_is_the_budget_not_the_cards_size(monkeypatch):
    """A 16 GB card simulated on a bigger one (or a shared card): the planner plans for the cap."""
    from types import SimpleNamespace

    from dpo_lab.run import memory

    def by_index(value):  # like torch 2.11 on the H200: a bare "cuda" (no index) is a ValueError
        def read(device):
            if not isinstance(device, int):
                raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
            return value

        return read

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", by_index(SimpleNamespace(total_memory=140 * memory.GIB)))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", by_index(16 / 140), raising=False)
    assert memory.device_budget("cuda") == 16 * memory.GIB - memory.SAFETY_MARGIN
    assert memory.device_budget(torch.device("cuda", 0)) == 16 * memory.GIB - memory.SAFETY_MARGIN
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", by_index(1.0), raising=False)
    assert memory.device_budget("cuda") == 140 * memory.GIB - memory.SAFETY_MARGIN
    monkeypatch.delattr(torch.cuda, "get_per_process_memory_fraction", raising=False)  # an older torch
    assert memory.device_budget("cuda") == 140 * memory.GIB - memory.SAFETY_MARGIN
    assert memory.device_budget("cpu") is None


def test_cached_and_live_reference_give_the_same_run(smoke_run):
    _, cached = pipeline.run_dpo_stage(smoke_run, beta=0.2, progress=False)
    _, live = pipeline.run_dpo_stage(smoke_run, beta=0.2, use_cache=False, progress=False)
    for a, b in zip(cached.history, live.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["rewards/margins"] == pytest.approx(
            b["rewards/margins"], abs=1e-5
        )
    assert cached.final_eval["eval_kl"] == pytest.approx(live.final_eval["eval_kl"], rel=1e-3, abs=1e-6)


def _student_dpo_loss(calls):
    """A correct dpo_loss written another way (softplus), counting its calls: the student's, not the package's."""

    def dpo_loss(pc, pr, rc, rr, beta):
        calls.append(pc.shape[0])
        logits = beta * ((pc - rc) - (pr - rr))
        return torch.nn.functional.softplus(-logits), beta * (pc - rc).detach(), beta * (pr - rr).detach()

    return dpo_loss


def _student_dpo_step(calls, loss_fn):
    """A correct dpo_step in a student's style (two forwards, its own sequence log-probs), counting its calls."""

    def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
        calls.append(batch["input_ids"].shape[0])
        policy.train()
        optimizer.zero_grad()
        ids, att, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        logps = dpo_lab.sequence_logprobs(policy(input_ids=ids, attention_mask=att).logits, ids, mask)
        with torch.no_grad():
            ref = dpo_lab.sequence_logprobs(reference(input_ids=ids, attention_mask=att).logits, ids, mask)
        pc, pr = logps.chunk(2)
        rc, rr = ref.chunk(2)
        losses, cr, rj = loss_fn(pc, pr, rc, rr, beta)
        losses.mean().backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        return {**dpo_lab.dpo_metrics(pc, pr, cr, rj, losses), "grad_norm": float(grad_norm)}

    return dpo_step


def test_the_students_dpo_loss_and_step_train_the_model(smoke_run):
    loss_calls, step_calls = [], []
    student_loss = _student_dpo_loss(loss_calls)
    student_step = _student_dpo_step(step_calls, student_loss)
    folder, result = pipeline.run_dpo_stage(
        smoke_run, beta=0.3, progress=False, dpo_loss=student_loss, dpo_step=student_step
    )
    steps = len(result.history)
    assert len(step_calls) == steps > 0  # every optimizer step was the student's function
    assert len(loss_calls) >= steps  # ... which used the student's loss (and so did the held-out evaluations)
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    assert metrics["implementations"] == {"dpo_loss": "student", "dpo_step": "student"}
    assert metrics["reference_cache"].startswith("off")
    # the same run on the package's path: the student's code trained the same model
    _, package = pipeline.run_dpo_stage(smoke_run, beta=0.3, use_cache=False, progress=False)
    for a, b in zip(result.history, package.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["logratios/margins"] == pytest.approx(
            b["logratios/margins"], abs=1e-4
        )
    assert result.final_eval["eval_loss"] == pytest.approx(package.final_eval["eval_loss"], abs=1e-5)


def test_a_students_loss_alone_trains_on_the_cached_path(smoke_run):
    calls = []
    folder, result = pipeline.run_dpo_stage(
        smoke_run, beta=0.4, progress=False, dpo_loss=_student_dpo_loss(calls), dpo_step=dpo_lab.dpo_step
    )
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    assert metrics["implementations"] == {"dpo_loss": "student", "dpo_step": "reference"}
    assert not metrics["reference_cache"].startswith("off") and len(calls) >= len(result.history)


def test_unfinished_exercises_fall_back_to_the_reference(smoke_run):
    folder, _ = pipeline.run_dpo_stage(smoke_run, beta=0.6, progress=False, dpo_loss=dpo_lab.dpo_loss, dpo_step=None)
    assert json.loads((folder / "manifest.json").read_text())["metrics"]["implementations"] == {
        "dpo_loss": "reference",
        "dpo_step": "reference",
    }
    assert json.loads((smoke_run / "02_sft" / "manifest.json").read_text())["metrics"]["implementations"] == {
        "sequence_logprobs": "reference"
    }


def test_merged_micro_batches_are_one_batch_with_chosen_rows_first(tokenizer, tokenized_pairs):
    from dpo_lab.core.collator import merge_pair_batches

    collate = dpo_lab.PreferenceDataCollator(tokenizer)
    a, b = collate(tokenized_pairs[:2]), collate(tokenized_pairs[2:5])
    merged, whole = merge_pair_batches([a, b], collate.pad_token_id), collate(tokenized_pairs[:5])
    for key in ("attention_mask", "loss_mask"):
        assert torch.equal(merged[key], whole[key]), key
    keep = whole["attention_mask"].bool()
    assert torch.equal(merged["input_ids"][keep], whole["input_ids"][keep])


def test_the_reference_cache_is_filled_from_the_plan_the_loop_trains_with(tokenizer, tokenized_pairs, monkeypatch):
    """One plan: the examples the pipeline caches (``args.visited``) are exactly those the loop's stream yields, for
    one process or several, across epochs — and the loop streams from ``args.batch_plan`` itself."""
    from dpo_lab.training import session as session_module

    args = _dpo_args(steps=4, batch_size=3, grad_accum=2)  # 24 pair slots over 10 pairs: more than two epochs
    for world, steps in ((1, 4), (2, 4), (2, 1), (3, 1)):
        a = dataclasses.replace(args, steps=steps)
        plan = a.batch_plan(world)
        streamed = []
        for rank in range(world):
            batches = plan.batches(tokenized_pairs, rank=rank)
            streamed += [i for _ in range(a.steps * a.grad_accum) for i in next(batches)]
        assert set(a.visited(tokenized_pairs, world)) == set(streamed), world
    assert len(args.visited(tokenized_pairs)) == len(tokenized_pairs)  # a full run meets every pair
    one_batch = dataclasses.replace(args, steps=1, grad_accum=1)
    assert len(one_batch.visited(tokenized_pairs)) == 3
    assert len(one_batch.visited(tokenized_pairs, world=2)) == 6  # each process trains on its own batch
    plans = []
    original = session_module.batch_stream
    spy = lambda ex, plan, *a, **k: plans.append(plan) or original(ex, plan, *a, **k)  # noqa: E731
    monkeypatch.setattr(session_module, "batch_stream", spy)
    policy, reference = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    dpo_train(policy, reference, tokenizer, tokenized_pairs, [], dataclasses.replace(args, steps=1), device="cpu")
    assert plans == [args.batch_plan(1)]


def test_sft_on_the_students_sequence_logprobs(smoke_run, tmp_path):
    import shutil

    from dpo_lab.core.collator import SFTDataCollator
    from dpo_lab.training.sft import sft_loss

    calls = []

    def student_logprobs(logits, input_ids, loss_mask, average=False):
        calls.append(1)
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        return (logp * loss_mask[:, 1:]).sum(-1)

    model, tok, _ = pipeline.load_sft_checkpoint(smoke_run)
    examples = [
        dpo_lab.tokenize_sft_example(tok, "\n\nHuman: hi\n\nAssistant:", " hello there" * k, 64) for k in (1, 3)
    ]
    batch = SFTDataCollator(tok)(examples)
    assert sft_loss(model, batch, student_logprobs).item() == pytest.approx(sft_loss(model, batch).item(), rel=1e-5)

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "01_data", run_dir / "01_data")
    calls.clear()
    folder, result = pipeline.run_sft_stage(run_dir, progress=False, sequence_logprobs=student_logprobs)
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    assert metrics["implementations"] == {"sequence_logprobs": "student"}
    assert len(calls) == len(result.history) * pipeline.load_prepared_data(run_dir).config.grad_accum


def test_cache_for_other_inputs_is_not_used(smoke_run, tokenizer):
    from dpo_lab.fast.reference_cache import cache_key, cache_path, ensure_reference_logps, load_cache_file

    sft_dir = smoke_run / "02_sft"
    sft_id = verify_checkpoint(sft_dir, produced_by="02")["id"]
    key = cache_key(sft_id, average=False, precision="fp32", max_length=128)
    other_ckpt = cache_key("another-sft-checkpoint", average=False, precision="fp32", max_length=128)
    assert key["key"] != other_ckpt["key"] != cache_key(sft_id, average=True, precision="fp32", max_length=128)["key"]
    reference = pipeline.load_reference_model(sft_dir, "cpu")
    calls = []

    def make_reference():
        calls.append(1)
        return reference

    examples = [{"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9, 0], "rejected_ids": [10, 0]}]
    common = dict(tokenizer=tokenizer, batch_size=2, device="cpu", max_length=128)
    first = ensure_reference_logps(sft_dir, key, examples, [], make_reference, **common)
    again = ensure_reference_logps(sft_dir, key, examples, [], make_reference, **common)
    assert calls == [1] and first["train"] == again["train"] and again["computed"] == 0
    changed = [{**examples[0], "rejected_ids": [11, 0]}]  # other data (or tokenizer): no entry, computed afresh
    fresh = ensure_reference_logps(sft_dir, key, changed, [], make_reference, **common)
    assert calls == [1, 1] and fresh["computed"] == 1 and fresh["train"][0][0] == first["train"][0][0]
    # a cache file whose recorded inputs differ from its name is rejected loudly
    real = cache_path(sft_dir, key)
    fake = cache_path(sft_dir, other_ckpt)
    fake.write_bytes(real.read_bytes())
    try:
        with pytest.raises(ValueError, match="sft_checkpoint"):
            load_cache_file(sft_dir, other_ckpt)
    finally:
        fake.unlink()


def test_dpo_without_sft_says_which_notebook_to_run(tmp_path):
    config = dpo_lab.get_config("smoke", run_dir=str(tmp_path))
    save_prepared_data(prepare_data(config), tmp_path)
    with pytest.raises(FileNotFoundError, match="02-SFT_Baseline.ipynb"):
        pipeline.run_dpo_stage(tmp_path, beta=0.1, progress=False)


def test_stale_and_tampered_checkpoints_are_reported(smoke_run, tmp_path):
    import shutil

    copy_dir = tmp_path / "run"
    shutil.copytree(smoke_run, copy_dir)
    (copy_dir / "02_sft" / "model.safetensors").write_bytes(b"half-written")
    with pytest.raises(StaleCheckpointError, match="does not match its manifest"):
        pipeline.load_sft_checkpoint(copy_dir)
    shutil.rmtree(copy_dir)
    shutil.copytree(smoke_run, copy_dir)
    config = dpo_lab.get_config("smoke", run_dir=str(copy_dir), max_pairs=32)  # 01 re-run with other data
    save_prepared_data(prepare_data(config), copy_dir)
    with pytest.raises(StaleCheckpointError, match="stale"):
        pipeline.load_sft_checkpoint(copy_dir)


# ------------------------------------------------------------------ interruption and resume


def test_killed_during_checkpoint_save_leaves_previous_checkpoint_loadable(tmp_path, tokenizer):
    folder = tmp_path / "ckpt"
    tokenizer.save_pretrained(tmp_path / "tok")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import torch, dpo_lab
        from dpo_lab.infra.checkpoints import save_model_checkpoint
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tmp_path / "tok")!r})
        save_model_checkpoint({str(folder)!r}, dpo_lab.tiny_random_model(tok, seed=1), tok, {{"stage": "v1"}}, [])
        model = dpo_lab.tiny_random_model(tok, seed=2)
        original = model.save_pretrained
        def slow_save(path, **kw):
            original(path, **kw)
            print("WRITING", flush=True)
            time.sleep(60)  # killed here, in the middle of the v2 save
        model.save_pretrained = slow_save
        save_model_checkpoint({str(folder)!r}, model, tok, {{"stage": "v2"}}, [])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    model, _, manifest = load_model_checkpoint(folder, produced_by="test")
    assert manifest["stage"] == "v1"
    expected = dpo_lab.tiny_random_model(tokenizer, seed=1)
    assert torch.equal(model.lm_head.weight, expected.lm_head.weight)


def test_dpo_resume_reproduces_the_uninterrupted_run(tmp_path, tokenizer, tokenized_pairs, monkeypatch):
    args = _dpo_args(steps=8, save_every=3, eval_every=4)
    data, held = tokenized_pairs, tokenized_pairs[:4]

    def train(**kw):  # the same fresh policy and reference every time
        return dpo_train(
            dpo_lab.tiny_random_model(tokenizer, seed=1),
            dpo_lab.tiny_random_model(tokenizer, seed=2),
            tokenizer,
            data,
            held,
            args,
            device="cpu",
            **kw,
        )

    full = train()
    with monkeypatch.context() as m:
        interrupt_after(m, DPOLoop, "train_step", 7)  # dies during step 8; the state of step 6 is on disk
        with pytest.raises(Interrupted):
            train(state_dir=tmp_path)
    assert (tmp_path / "train_state" / "state.pt").exists()
    steps_run = count_calls(monkeypatch, DPOLoop, "train_step")
    resumed = train(state_dir=tmp_path)
    assert steps_run["n"] == 2  # steps 7 and 8 only: it really resumed from the step-6 state
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    for a, b in zip(full.history, resumed.history):
        for key in ("loss", "rewards/margins", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    assert resumed.final_eval == pytest.approx(full.final_eval, abs=1e-6)


def test_sft_resume_reproduces_the_uninterrupted_run(tmp_path, tokenizer, pairs, monkeypatch):
    examples = [dpo_lab.tokenize_sft_example(tokenizer, p["prompt"], p["chosen"]) for p in pairs]
    args = loop_args("sft", steps=6, lr=1e-3, batch_size=2, eval_every=2, save_every=2)
    full_model = dpo_lab.tiny_random_model(tokenizer, seed=5)  # dropout ON: the RNG state must be restored too
    full = sft_train(full_model, tokenizer, examples, examples[:3], args, device="cpu")
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 5)  # dies in step 6
        with pytest.raises(Interrupted):
            sft_train(
                dpo_lab.tiny_random_model(tokenizer, seed=5),
                tokenizer,
                examples,
                examples[:3],
                args,
                device="cpu",
                state_dir=tmp_path,
            )
    resumed_model = dpo_lab.tiny_random_model(tokenizer, seed=5)
    steps_run = count_calls(monkeypatch, torch.nn.utils, "clip_grad_norm_")
    resumed = sft_train(resumed_model, tokenizer, examples, examples[:3], args, device="cpu", state_dir=tmp_path)
    assert steps_run["n"] == 2  # steps 5 and 6 only (the state of step 4 was on disk)
    assert [r["step"] for r in resumed.history] == list(range(1, 7))
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert resumed.best_step == full.best_step and resumed.best_eval_loss == pytest.approx(
        full.best_eval_loss, abs=1e-6
    )
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_model.parameters(), resumed_model.parameters()))


def test_sft_lowers_held_out_loss_and_keeps_the_best(tokenizer, pairs):
    examples = [dpo_lab.tokenize_sft_example(tokenizer, p["prompt"], p["chosen"]) for p in pairs]
    model = dpo_lab.tiny_random_model(tokenizer, seed=5)
    result = sft_train(
        model,
        tokenizer,
        examples,
        examples[:4],
        loop_args("sft", steps=12, lr=5e-3, batch_size=4, eval_every=3),
        device="cpu",
    )
    evals = [r["eval_loss"] for r in result.history if "eval_loss" in r]
    assert evals[-1] < evals[0] and result.best_eval_loss == min(evals)
    import pandas as pd

    frame = pd.DataFrame(result.history)  # history goes into pandas as is
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "eval_loss", "eval_perplexity"} <= set(frame.columns)


def test_cli_sft_and_dpo_on_a_run_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*a):
        return subprocess.run([sys.executable, "-m", "dpo_lab", *a], capture_output=True, text=True, env=env, cwd=ROOT)

    bad = run("dpo", "--run-dir", str(tmp_path), "--beta", "0.1")
    assert bad.returncode == 2 and "01-Setup_and_Data.ipynb" in bad.stderr
    assert run("data", "--profile", "smoke", "--run-dir", str(tmp_path)).returncode == 0
    bad = run("dpo", "--run-dir", str(tmp_path), "--beta", "0.1")
    assert bad.returncode == 2 and "02-SFT_Baseline.ipynb" in bad.stderr
    assert run("sft", "--run-dir", str(tmp_path), "--quiet").returncode == 0
    bad = run("dpo", "--run-dir", str(tmp_path), "--beta", "-1")
    assert bad.returncode == 2 and "beta must be a finite number > 0" in bad.stderr
    bad = run("dpo", "--run-dir", str(tmp_path), "--set", "run_dir=elsewhere")
    assert bad.returncode != 0 and "use --run-dir" in bad.stderr
    bad = run("dpo", "--run-dir", str(tmp_path), "--set", "dpo_lr=0")
    assert bad.returncode == 2 and "lr must be > 0" in bad.stderr
    ok = run("dpo", "--run-dir", str(tmp_path), "--beta", "0.3", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "eval_rewards/accuracies" in ok.stdout and (tmp_path / "03_dpo" / "beta_0.3" / "model.safetensors").exists()


def test_live_reference_step_zero_evaluation_is_exact(smoke_run):
    """With a live reference (no cache) the held-out rewards at step 0 are exactly 0, so the strict-">" accuracy is
    0.
    """
    _, live = pipeline.run_dpo_stage(smoke_run, beta=0.7, use_cache=False, progress=False)
    first = live.initial_eval
    assert first["eval_rewards/margins"] == 0.0 and first["eval_rewards/accuracies"] == 0.0
    assert first["eval_loss"] == pytest.approx(0.693147, abs=1e-6) and first["eval_kl"] == pytest.approx(0.0, abs=1e-6)
