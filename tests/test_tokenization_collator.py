"""tokenize_pair and the collators: EOS, the token-level prompt boundary, masks, ordering, padding."""

from __future__ import annotations

import pytest
import torch

import dpo_lab
from dpo_lab import PreferenceDataCollator, SFTDataCollator, tokenize_pair, tokenize_sft_example

H, A = "\n\nHuman:", "\n\nAssistant:"


def test_tokenize_pair_concatenates_to_the_full_text_and_ends_with_eos(tokenizer):
    prompt, chosen, rejected = f"{H} What is gravity?{A}", " Masses attract.", " Dunno."
    out = tokenize_pair(tokenizer, prompt, chosen, rejected)
    assert out["prompt_ids"] + out["chosen_ids"] == tokenizer(prompt + chosen + tokenizer.eos_token)["input_ids"]
    assert out["prompt_ids"] + out["rejected_ids"] == tokenizer(prompt + rejected + tokenizer.eos_token)["input_ids"]
    assert out["chosen_ids"][-1] == out["rejected_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(out["prompt_ids"]) == prompt


def test_eos_is_not_doubled(tokenizer):
    eos = tokenizer.eos_token
    once = tokenize_pair(tokenizer, f"{H} Q{A}", " yes" + eos, " no")
    assert once["chosen_ids"].count(tokenizer.eos_token_id) == 1


@pytest.fixture(scope="module")
def merging_tokenizer():
    """A BPE trained so that 'xy' is one token: a prompt ending in 'x' and a response starting with 'y' merge."""
    return dpo_lab.train_bpe_tokenizer(["xy xy xy xyxy " * 50, "hello world " * 20], vocab_size=300, min_frequency=2)


def test_prompt_boundary_is_found_at_the_token_level(merging_tokenizer):
    tok = merging_tokenizer
    prompt, chosen, rejected = "hello x", "y world", " world"
    separate = tok(prompt)["input_ids"] + tok(chosen + tok.eos_token)["input_ids"]
    together = tok(prompt + chosen + tok.eos_token)["input_ids"]
    assert separate != together, "the fixture must produce a merge across the boundary"
    out = tokenize_pair(tok, prompt, chosen, rejected)
    assert out["prompt_ids"] + out["chosen_ids"] == together  # what the model sees at inference
    assert out["prompt_ids"] + out["rejected_ids"] == tok(prompt + rejected + tok.eos_token)["input_ids"]
    assert len(out["prompt_ids"]) < len(tok(prompt)["input_ids"])  # the merged token moved to the response


def test_max_length_keeps_the_start_and_the_whole_prompt(tokenizer):
    prompt = f"{H} Tell me everything about gravity.{A}"
    full = tokenize_pair(tokenizer, prompt, " " + "word " * 50, " short")
    cut = tokenize_pair(tokenizer, prompt, " " + "word " * 50, " short", max_length=len(full["prompt_ids"]) + 5)
    assert cut["prompt_ids"] == full["prompt_ids"]
    assert cut["chosen_ids"] == full["chosen_ids"][:5]
    assert cut["rejected_ids"] == full["rejected_ids"][:5]
    with pytest.raises(ValueError, match="fills max_length"):
        tokenize_pair(tokenizer, prompt, " a", " b", max_length=len(full["prompt_ids"]))


def test_tokenizer_without_eos_is_a_clear_error(tokenizer):
    class NoEos:
        eos_token = None

    with pytest.raises(ValueError, match="no eos_token"):
        tokenize_pair(NoEos(), "p", "c", "r")


# ------------------------------------------------------------------ PreferenceDataCollator


def _examples():
    return [
        {"prompt_ids": [10, 11, 12], "chosen_ids": [20, 21, 0], "rejected_ids": [30, 0]},
        {"prompt_ids": [13], "chosen_ids": [22, 0], "rejected_ids": [31, 32, 33, 34, 0]},
    ]


class _PadIsEos:
    """A GPT-2-like tokenizer stub: EOS id 0 and pad == eos."""

    pad_token_id = 0
    eos_token_id = 0


def test_collator_layout_chosen_first_right_padded():
    batch = PreferenceDataCollator(_PadIsEos())(_examples())
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 20, 21, 0],
        [13, 22, 0, 0, 0, 0],
        [10, 11, 12, 30, 0, 0],
        [13, 31, 32, 33, 34, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1] * 6]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 0, 1, 1, 1],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 1, 1, 1, 1, 1],
    ]


def test_eos_stays_in_loss_mask_when_pad_equals_eos(tokenizer, tokenized_pairs):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    batch = PreferenceDataCollator(tokenizer)(tokenized_pairs)
    for row in range(batch["input_ids"].shape[0]):
        scored = batch["loss_mask"][row].nonzero().flatten()
        last = scored[-1].item()
        assert batch["input_ids"][row, last].item() == tokenizer.eos_token_id  # the final EOS is scored
        assert batch["loss_mask"][row, last + 1 :].sum().item() == 0  # padding (also EOS ids) is not


def test_collator_falls_back_to_eos_when_tokenizer_has_no_pad_token():
    class NoPad:
        pad_token_id = None
        eos_token_id = 7

    batch = PreferenceDataCollator(NoPad())(_examples())
    assert batch["input_ids"][1, -1].item() == 7


def test_collator_passes_cached_reference_logps_through():
    examples = [dict(e, ref_chosen_logps=-1.5, ref_rejected_logps=-2.5) for e in _examples()]
    batch = PreferenceDataCollator(_PadIsEos())(examples)
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -1.5] and batch["ref_rejected_logps"].dtype == torch.float32


def test_collator_max_length_truncates_rows_and_masks_together():
    batch = PreferenceDataCollator(_PadIsEos(), max_length=4)(_examples())
    assert batch["input_ids"].shape == (4, 4)
    assert batch["loss_mask"][0].tolist() == [0, 0, 0, 1]


def test_collator_errors_name_the_problem():
    with pytest.raises(ValueError, match="empty"):
        PreferenceDataCollator(_PadIsEos())([])
    with pytest.raises(KeyError, match="rejected_ids"):
        PreferenceDataCollator(_PadIsEos())([{"prompt_ids": [1], "chosen_ids": [2]}])


# ------------------------------------------------------------------ SFT


def test_sft_collator_trains_response_and_eos_only(tokenizer):
    ex = tokenize_sft_example(tokenizer, f"{H} Hi{A}", " Hello!")
    ex2 = tokenize_sft_example(tokenizer, f"{H} Tell me a longer thing please{A}", " Ok.")
    batch = SFTDataCollator(tokenizer)([ex, ex2])
    labels = batch["labels"]
    n_prompt = len(ex["prompt_ids"])
    assert (labels[0, :n_prompt] == -100).all()
    assert labels[0, n_prompt : n_prompt + len(ex["response_ids"])].tolist() == ex["response_ids"]
    assert ex["response_ids"][-1] == tokenizer.eos_token_id
    width = labels.shape[1]
    row1_len = len(ex2["prompt_ids"]) + len(ex2["response_ids"])
    assert (labels[1, row1_len:width] == -100).all() and labels[1, row1_len - 1].item() == tokenizer.eos_token_id
    # the model's own shifted loss over these labels is the mean NLL of the response tokens
    assert batch["input_ids"].shape == labels.shape == batch["attention_mask"].shape
