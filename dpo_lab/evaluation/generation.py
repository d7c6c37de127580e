"""Text generation for many prompts at once: what notebooks 02 and 04 use to look at the models' answers.

Decoder-only models continue the LAST token of each row, so a batch of prompts of different
lengths is padded on the LEFT for generation (training pads on the right: there, the loss mask
decides what counts). Greedy decoding is deterministic; sampling is seeded per batch, so the same
call gives the same answers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..infra.console import track
from ..infra.device import autocast, pick_device


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    device=None,
    progress: bool = False,
    precision: str = "auto",
) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, new_ids)`` per prompt: the tokens the model produced, up to and INCLUDING its first EOS.

    Prompts are tokenized with the same rules as training (``add_special_tokens=True``) and left-padded
    in batches. ``do_sample=False`` is greedy decoding; with ``do_sample=True`` (``top_k`` off, so
    ``temperature=1, top_p=1`` samples the model's own distribution) batch ``i`` is drawn with
    ``torch.manual_seed(seed + i)``.
    """
    if not prompts:
        raise ValueError("generate() got an empty list of prompts")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    device = pick_device(device)
    was_training = model.training
    model.to(device).eval()
    eos = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    batches = range(0, len(prompts), batch_size)
    bar = track(progress, total=len(batches), desc="generate", announce=False)
    results: list[tuple[list[int], list[int]]] = []
    for i, start in enumerate(batches):
        rows = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts[start : start + batch_size]]
        width = max(len(r) for r in rows)
        if limit is not None and width + max_new_tokens > limit:
            raise ValueError(
                f"prompt of {width} tokens + max_new_tokens={max_new_tokens} exceeds the model's {limit} positions"
            )
        input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)  # LEFT padding
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        sampling: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            torch.manual_seed(seed + i)
            sampling.update(temperature=temperature, top_p=top_p, top_k=0)
        with autocast(device, precision):
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos,
                **sampling,
            )
        for prompt_ids, new in zip(rows, out[:, width:].tolist()):
            if eos in new:
                new = new[: new.index(eos) + 1]  # what follows the first EOS is padding
            results.append((prompt_ids, new))
        if bar is not None:
            bar.step()
    if bar is not None:
        bar.close()
    model.train(was_training)
    return results


def generate(model, tokenizer, prompts: list[str], **kwargs) -> list[str]:
    """The model's answer to each prompt: new text only, EOS and special tokens removed, surrounding spaces stripped.

    Same arguments as :func:`generate_ids` (``max_new_tokens``, ``do_sample``, ``seed``, ``batch_size`` …).
    """
    return [
        tokenizer.decode(new, skip_special_tokens=True).strip()
        for _, new in generate_ids(model, tokenizer, prompts, **kwargs)
    ]


def side_by_side(prompts: list[str], answers: dict[str, list[str]], *, prompt_chars: int = 160):
    """A table with one row per prompt and one column per model, for reading generations next to each other."""
    import pandas as pd

    for name, texts in answers.items():
        if len(texts) != len(prompts):
            raise ValueError(f"{name}: {len(texts)} answers for {len(prompts)} prompts")
    short = [p.strip().removeprefix("Human:").removesuffix("Assistant:").strip() for p in prompts]
    table = {"prompt": [s if len(s) <= prompt_chars else s[: prompt_chars - 1] + "…" for s in short]}
    table.update(answers)
    return pd.DataFrame(table)


def generations_table(groups: dict[str, tuple[list[str], dict[str, list[str]]]]):
    """What ``04_eval/generations.csv`` holds: one row per prompt, the prompt exactly as the models saw it, one
    column per model, and ``kind`` (the group's name). Nothing is cut, so anyone can re-score it
    (:func:`dpo_lab.infra.tables.read_text_table` reads it back exactly)."""
    import pandas as pd

    frames = []
    for kind, (prompts, answers) in groups.items():
        for name, texts in answers.items():
            if len(texts) != len(prompts):
                raise ValueError(f"{kind} / {name}: {len(texts)} answers for {len(prompts)} prompts")
        frames.append(pd.DataFrame({"prompt": list(prompts), **{k: list(v) for k, v in answers.items()}, "kind": kind}))
    return pd.concat(frames, ignore_index=True)


def show_table(df, *, width_px: int = 320):
    """A pandas Styler that wraps long text (for notebooks: a DataFrame's default display cuts it)."""
    return df.style.hide(axis="index").set_properties(
        **{
            "white-space": "pre-wrap",
            "text-align": "left",
            "vertical-align": "top",
            "min-width": f"{width_px // 2}px",
            "max-width": f"{width_px}px",
        }
    )
