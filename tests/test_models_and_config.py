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


# ------------------------------------------------------------------------------- one source of defaults
def _config_fields():
    import dataclasses

    from dpo_lab.run.config import LabConfig

    return {f.name: f for f in dataclasses.fields(LabConfig)}


def test_loop_arguments_take_every_lab_setting_from_the_config_and_default_none_of_them():
    """A loop argument the config owns has no default of its own (a second default once disagreed: eval_every 25
    vs 50, seed 42 vs 0, AdamW betas), and every loop argument named like a config field is in the table."""
    import dataclasses

    from dpo_lab.run.pipeline import DPO_LOOP_FIELDS, SFT_LOOP_FIELDS, dpo_args, sft_args
    from dpo_lab.training.dpo import DPOArgs
    from dpo_lab.training.sft import SFTArgs

    fields = _config_fields()
    for cls, table, build in ((SFTArgs, SFT_LOOP_FIELDS, sft_args), (DPOArgs, DPO_LOOP_FIELDS, dpo_args)):
        args = {f.name: f for f in dataclasses.fields(cls)}
        for arg, field in table.items():
            assert field in fields, f"{cls.__name__}.{arg} <- LabConfig.{field}: no such config field"
            assert args[arg].default is dataclasses.MISSING and args[arg].default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{arg} has a default of its own; LabConfig.{field} is its only default"
            )
        required = {n for n, f in args.items() if f.default is dataclasses.MISSING}
        assert required == set(table), f"{cls.__name__}: required fields not filled from the config"
        shared_names = (set(args) & set(fields)) - set(table)
        assert not shared_names, f"{cls.__name__} and LabConfig both define {sorted(shared_names)}"
        for profile in ("cpu", "gpu", "smoke"):
            config = get_config(profile)
            built = build(config, progress=False)
            for arg, field in table.items():
                if arg != "average_logps":  # the loss may imply it (IPO): tested with the losses
                    assert getattr(built, arg) == getattr(config, field), (profile, arg)


def test_no_profile_repeats_a_default_the_config_already_has():
    """A profile names only what differs from LabConfig's own default: a copy would silently disagree once one
    of the two is edited."""
    import dataclasses

    from dpo_lab.run.config import _PROFILE_DEFAULTS

    fields = _config_fields()
    for profile, values in _PROFILE_DEFAULTS.items():
        for name, value in values.items():
            default = fields[name].default
            assert default is dataclasses.MISSING or value != default, (
                f"profile {profile!r} sets {name}={value!r}, which is already LabConfig's default"
            )


def test_the_command_line_and_the_notebooks_leave_config_defaults_to_the_config():
    """An argparse option for a config field defaults to None (the config decides); a notebook parameter named like
    a config field is None or the config's value in every profile (04's table of settings, seeds, losses)."""
    import argparse

    from dpo_lab.cli import build_parser
    from dpo_lab.course.notebooks import master_notebooks, notebook_parameters

    fields = set(_config_fields()) - {"profile"}  # `profile = "auto"` picks a profile, it is no default of one
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    configs = [get_config(p) for p in ("cpu", "gpu", "smoke")]
    checked = 0
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest in fields:
                checked += 1
                option = f"`{name} {action.option_strings[0]}`"
                if action.nargs == 0:  # a switch (store_true): off must be what every profile has
                    assert all(getattr(c, action.dest) == action.default for c in configs), option
                else:
                    assert action.default is None, f"{option} defaults to {action.default!r}"
    assert checked >= 10
    aliases = {"learning_rate": "dpo_lr", "steps": "dpo_steps"}  # notebook 03's names for them
    for path in master_notebooks():
        for name, value in notebook_parameters(path).items():
            field = aliases.get(name, name) if path.name.startswith("03") else name
            if field in fields and value is not None:
                differs = [c.profile for c in configs if getattr(c, field) != value]
                assert not differs, f"{path.name}: {name} = {value!r} is not the config's default ({differs})"
