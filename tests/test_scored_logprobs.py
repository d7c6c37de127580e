"""The LM head only on scored positions (dpo_lab.fast.scored_logprobs): same log-probs and gradients as the textbook
path.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import dpo_lab
from dpo_lab.core.losses import sequence_logprobs
from dpo_lab.fast.scored_logprobs import (
    _ScoredTokenLogProbs,
    batch_logprobs,
    scored_sequence_logprobs,
    supports_scored_head,
)


def _batch(tokenizer, pairs, n=4):
    examples = dpo_lab.tokenize_pairs(tokenizer, pairs[:n])
    return dpo_lab.PreferenceDataCollator(tokenizer)(examples)


def _tiny_llama(vocab_size: int):
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(3)
    return LlamaForCausalLM(config).eval()


def _textbook(model, batch, average=False):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"], average=average)


def test_same_logprobs_as_the_full_logits_on_gpt2_and_llama(tokenizer, pairs):
    batch = _batch(tokenizer, pairs)
    for model in (dpo_lab.tiny_random_model(tokenizer, seed=1).eval(), _tiny_llama(len(tokenizer))):
        assert supports_scored_head(model)
        for average in (False, True):
            with torch.no_grad():
                want = _textbook(model, batch, average)
                got = scored_sequence_logprobs(
                    model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], average, chunk_rows=7
                )
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-5), (type(model).__name__, got - want)
        assert (want.abs() > 1).all(), "meaningful magnitudes, not zeros"


def test_same_gradients_for_every_parameter(tokenizer, pairs):
    batch = _batch(tokenizer, pairs)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0, -0.5])  # a loss that mixes rows with both signs
    grads = []
    for path in ("textbook", "kept softmax", "recomputed softmax"):
        model = dpo_lab.tiny_random_model(tokenizer, seed=1)
        dpo_lab.core.model_modes.disable_dropout(model)
        logps = (
            _textbook(model, batch)
            if path == "textbook"
            else scored_sequence_logprobs(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                batch["loss_mask"],
                chunk_rows=5,
                keep_probs=path == "kept softmax",
            )
        )
        (logps * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    textbook = grads[0]
    for scored in grads[1:]:
        assert textbook.keys() == scored.keys()
        for name in textbook:
            scale = textbook[name].abs().max().item()
            assert torch.allclose(scored[name], textbook[name], atol=1e-5 * max(scale, 1.0), rtol=1e-4), name
    assert textbook["transformer.wte.weight"].abs().sum() > 0  # the tied LM head / embedding gets both contributions


def test_the_function_passes_gradcheck_with_a_bias_and_several_chunks():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (7,), generator=g)

    want = torch.log_softmax(hidden @ weight.T + bias, dim=-1).gather(-1, labels[:, None])[:, 0]
    for keep_probs in (True, False):

        def fn(h, w, b):
            return _ScoredTokenLogProbs.apply(h, w, b, labels, 3, keep_probs).double()

        # the forward accumulates in fp32 (as the textbook path does), so compare gradients at fp32 precision
        assert torch.autograd.gradcheck(fn, (hidden, weight, bias), eps=1e-3, atol=1e-3, rtol=1e-3)
        assert torch.allclose(fn(hidden, weight, bias), want, atol=1e-5)


def test_lora_models_use_it_with_adapters_on_and_off_and_wrappers_do_not(tokenizer, pairs):
    from peft import LoraConfig, get_peft_model

    batch = _batch(tokenizer, pairs, n=2)
    assert not supports_scored_head(torch.nn.Linear(2, 2))
    grads = []
    for path in ("scored", "textbook"):
        torch.manual_seed(0)  # the same LoRA A and B in both runs
        lora = get_peft_model(
            dpo_lab.core.model_modes.disable_dropout(dpo_lab.tiny_random_model(tokenizer, seed=1)),
            LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0),
        )
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)  # adapters that change the output (fresh LoRA has B = 0)
        assert supports_scored_head(lora)
        logps = torch.cat(batch_logprobs(lora, batch)) if path == "scored" else _textbook(lora, batch)
        with torch.no_grad(), lora.disable_adapter():
            off = torch.cat(batch_logprobs(lora, batch)) if path == "scored" else _textbook(lora, batch)
        logps.sum().backward()
        grads.append((logps.detach(), off, {n: p.grad.clone() for n, p in lora.named_parameters() if p.requires_grad}))
    (on_s, off_s, g_s), (on_t, off_t, g_t) = grads
    assert torch.allclose(on_s, on_t, rtol=1e-6, atol=1e-5) and torch.allclose(off_s, off_t, rtol=1e-6, atol=1e-5)
    assert (on_s - off_s).abs().max() > 0.1, "the adapters must matter, or this proves nothing"
    assert g_s.keys() == g_t.keys() and len(g_s) == 4
    for name in g_s:
        assert torch.allclose(g_s[name], g_t[name], rtol=1e-4, atol=1e-5 * max(g_t[name].abs().max().item(), 1.0)), name
