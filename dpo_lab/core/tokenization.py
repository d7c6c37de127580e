"""The ONE place that decides how text becomes token ids (everything else calls these functions).

Rules, the same as TRL 1.16's DPOTrainer for plain-text data so the numbers match:

1. The EOS token's text is appended to each response unless the response already ends with it:
   the model must learn to STOP, and the EOS token is part of the response it is scored on.
2. ``prompt``, ``prompt + chosen`` and ``prompt + rejected`` are tokenized separately (plain string
   concatenation, no separator; special tokens as the tokenizer adds them).
3. The prompt/response split is found at the TOKEN level: the prompt length is the common prefix of
   the prompt's ids with each full sequence's ids (the smaller of the two). Tokens can merge across
   the text boundary — e.g. a prompt ending in ``"Assistant:"`` and a response starting with ``":)"``
   may become one token ``"::)"`` — so tokenizing the prompt and the response separately and gluing
   the ids together would give a sequence the model never sees at inference time.
"""

from __future__ import annotations

from typing import Any


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading ids `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def add_eos(text: str, eos_token: str) -> str:
    """`text` with the EOS token's text appended, unless it already ends with it."""
    return text if text.endswith(eos_token) else text + eos_token


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _require_eos(tokenizer) -> str:
    if tokenizer.eos_token is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token; set tokenizer.eos_token before tokenizing")
    return tokenizer.eos_token


def _split_responses(
    tokenizer, prompt: str, responses: list[str], max_length: int | None
) -> tuple[list[int], list[list[int]]]:
    """Tokenize ``prompt + response + eos`` for each response and cut all of them at one token-level boundary."""
    eos = _require_eos(tokenizer)
    prompt_ids = _ids(tokenizer, prompt)
    fulls = [_ids(tokenizer, prompt + add_eos(r, eos)) for r in responses]
    n_prompt = min(common_prefix_length(prompt_ids, full) for full in fulls)
    response_ids = [full[n_prompt:] for full in fulls]
    if max_length is not None:
        if n_prompt >= max_length:
            raise ValueError(
                f"the prompt has {n_prompt} tokens, which fills max_length={max_length}: no response token fits"
            )
        response_ids = [ids[: max_length - n_prompt] for ids in response_ids]
    return prompt_ids[:n_prompt], response_ids


def tokenize_pair(
    tokenizer, prompt: str, chosen: str, rejected: str, max_length: int | None = None
) -> dict[str, list[int]]:
    """Token ids of one preference pair: ``{"prompt_ids", "chosen_ids", "rejected_ids"}``.

    ``prompt_ids + chosen_ids`` is exactly ``tokenizer(prompt + chosen + eos)`` (same for rejected), and
    the response ids end with the EOS id. The prompt length is the smaller of its common token prefix
    with the two full sequences, so both responses start at the same position. With ``max_length``,
    each full sequence is cut to its first ``max_length`` tokens (TRL's ``keep_start``), the prompt is
    kept whole, and a pair whose prompt alone fills ``max_length`` raises ``ValueError`` (validate with
    ``max_prompt_length`` first).
    """
    prompt_ids, (chosen_ids, rejected_ids) = _split_responses(tokenizer, prompt, [chosen, rejected], max_length)
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def tokenize_sft_example(tokenizer, prompt: str, response: str, max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids of one SFT demonstration: ``{"prompt_ids", "response_ids"}``, same rules as a pair."""
    prompt_ids, (response_ids,) = _split_responses(tokenizer, prompt, [response], max_length)
    return {"prompt_ids": prompt_ids, "response_ids": response_ids}


def tokenize_pairs(tokenizer, pairs: list[dict[str, Any]], max_length: int | None = None) -> list[dict[str, list[int]]]:
    """:func:`tokenize_pair` over a list of ``{"prompt", "chosen", "rejected"}`` rows (tokenise once, up front)."""
    return [tokenize_pair(tokenizer, p["prompt"], p["chosen"], p["rejected"], max_length=max_length) for p in pairs]
