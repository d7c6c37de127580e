"""Offline models and tokenizers, profiles and overrides."""

from __future__ import annotations

import pytest
import torch

import dpo_lab
from dpo_lab import get_config


def test_tiny_models_are_deterministic_per_seed(tokenizer):
    a, b, c = (dpo_lab.tiny_random_model(tokenizer, seed=s) for s in (1, 1, 2))
    wa, wb, wc = (m.transformer.wte.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config.vocab_size == len(tokenizer)


def test_corpus_tokenizer_round_trips_through_from_pretrained(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "\n\nHuman: What is DNA?\n\nAssistant: DNA is a molecule." + tokenizer.eos_token
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.eos_token == loaded.pad_token == "<|endoftext|>"


def test_cpu_profile_decoder_saves_and_loads_with_plain_from_pretrained(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    cfg = get_config("cpu")
    model = dpo_lab.build_decoder(tokenizer, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, seed=cfg.seed)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([tokenizer("\n\nHuman: Hi\n\nAssistant:")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids).logits, loaded(ids).logits)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 2e7


@pytest.mark.slow
def test_smollm2_loads_offline_generates_and_scores(tmp_path_factory, monkeypatch):
    pytest.importorskip("gguf")
    try:
        dpo_lab.run.smollm2.smollm2_gguf_path()
    except ModuleNotFoundError as e:
        pytest.fail(f"{e} (CI installs it: see requirements-offline-models.txt)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = dpo_lab.load_pretrained("smollm2-offline")
    assert (dpo_lab.run.smollm2.smollm2_dir() / "model.safetensors").exists()
    model.eval()
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    pair = dpo_lab.tokenize_pair(tok, "\n\nHuman: What is the capital of France?\n\nAssistant:", " Paris.", " Berlin.")
    batch = dpo_lab.PreferenceDataCollator(tok)([pair])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = dpo_lab.sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    lean = dpo_lab.sequence_logprobs_lean(logits, batch["input_ids"], batch["loss_mask"])
    assert torch.isfinite(plain).all() and (plain < 0).all()
    assert torch.allclose(plain, lean, atol=1e-4)
    assert plain[0] > plain[1]  # a real pretrained model prefers the right answer


# ------------------------------------------------------------------ config


def test_auto_profile_is_cpu_without_cuda():
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert get_config("auto").profile == expected


def test_profiles_differ_and_overrides_apply():
    smoke, cpu, gpu = get_config("smoke"), get_config("cpu"), get_config("gpu")
    assert (smoke.model_name, cpu.model_name, gpu.model_name) == ("tiny-random", "scratch", "gpt2")
    assert gpu.dataset == "Anthropic/hh-rlhf" and cpu.dataset == smoke.dataset == "offline"
    assert get_config("cpu", beta=0.5, max_pairs=None).beta == 0.5
    assert get_config("gpu", max_pairs=None).max_pairs is None  # an explicit None is kept, not ignored
    assert get_config("smoke", dataset_subsets="harmless").dataset_subsets == ("harmless",)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"beta": 0}, "beta must be a finite number > 0"),
        ({"dpo_lr": -1e-6}, "dpo_lr must be > 0"),
        ({"max_prompt_length": 600, "max_length": 512}, "max_prompt_length"),
        ({"bogus": 1}, "unknown config field"),
    ],
)
def test_bad_config_values_are_clear_errors(overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):
        get_config("cpu", **overrides)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("tpu")


def test_load_pretrained_local_folder_sets_pad_and_offline_hub_miss_is_explained(tmp_path, tokenizer, monkeypatch):
    import json

    model = dpo_lab.tiny_random_model(tokenizer, seed=3)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "tokenizer_config.json"
    data = json.loads(cfg.read_text())
    data.pop("pad_token", None)  # like GPT-2: no pad token
    cfg.write_text(json.dumps(data))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "m").pad_token is None
    loaded, tok = dpo_lab.load_pretrained(str(tmp_path / "m"))
    assert tok.pad_token == tok.eos_token and loaded.config.pad_token_id is not None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="smollm2-offline"):
        dpo_lab.load_pretrained("no-such-owner/no-such-model")
    with pytest.raises(ValueError, match="built, not loaded"):
        dpo_lab.load_pretrained("scratch")


def test_the_dpo_loops_stopping_rules_and_log_prob_averaging_are_config_fields():
    """kl_limit, train_accuracy_limit and average_logps reach the DPO loop from a notebook's overrides or `--set`."""
    from dpo_lab.run.pipeline import dpo_args

    default = dpo_args(get_config("smoke"), progress=False)
    assert (default.kl_limit, default.train_accuracy_limit, default.average_logps) == (20.0, 0.95, False)
    changed = dpo_args(get_config("smoke", kl_limit=5, train_accuracy_limit=None, average_logps=True), progress=False)
    assert (changed.kl_limit, changed.train_accuracy_limit, changed.average_logps) == (5.0, None, True)
    with pytest.raises(ValueError, match="kl_limit must be a number or null"):
        get_config("smoke", kl_limit="high")


def test_auto_profile_can_be_steered_from_the_environment_without_editing_a_notebook(monkeypatch):
    from dpo_lab.run.config import PROFILE_ENV, resolve_profile

    monkeypatch.setenv(PROFILE_ENV, "smoke")
    assert resolve_profile("auto") == "smoke" and dpo_lab.get_config().profile == "smoke"
    assert resolve_profile("cpu") == "cpu"  # a profile written in the notebook wins
    monkeypatch.setenv(PROFILE_ENV, "tiny")
    with pytest.raises(ValueError, match="DPO_LAB_PROFILE='tiny'"):
        resolve_profile("auto")
    monkeypatch.setenv(PROFILE_ENV, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "gpu"
