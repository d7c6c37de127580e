"""Profiles and the lab configuration: one place for every knob a notebook can override.

A profile is a named set of defaults (`gpu`, `cpu`, `smoke`); `auto` picks `gpu` when CUDA is
available and `cpu` otherwise (or what the environment variable ``DPO_LAB_PROFILE`` names). Every
field of :class:`LabConfig` can be overridden by keyword, so a notebook's `parameters` cell or the CLI
changes exactly one value without touching the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from ..data.sources import OFFLINE_SOURCE

PROFILES = ("gpu", "cpu", "smoke")


@dataclass(frozen=True)
class LabConfig:
    """Every value the lab's stages read. Frozen: derive a new one with `dataclasses.replace`."""

    profile: str
    # --- model ---
    model_name: str  # a Hub id or a local folder ("gpt2"), or "scratch" (built in 02) / "tiny-random"
    # --- data ---
    dataset: str  # "Anthropic/hh-rlhf", a local file/folder, or "offline"
    dataset_subsets: tuple[str, ...]  # HH-RLHF data_dir values, or offline subsets
    max_pairs: int | None  # cap on training pairs (None = all)
    max_length: int  # prompt + response tokens, as TRL's max_length
    max_prompt_length: int  # prompts at or over this many tokens are rejected / skipped
    # --- SFT ---
    sft_steps: int
    sft_lr: float
    sft_batch_size: int
    # --- DPO ---
    beta: float
    dpo_steps: int
    dpo_lr: float
    dpo_batch_size: int
    grad_accum: int
    warmup_steps: int
    # --- iterative DPO (round 2) ---
    round2_prompts: int  # training prompts sampled from, two answers each
    round2_steps: int  # DPO steps of the second round
    # --- run ---
    dpo_adam_betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas of the course text
    sft_adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW's own defaults
    schedule: str = "cosine"
    eval_every: int = 25  # steps between held-out evaluations (SFT and DPO)
    eval_pairs: int = 128  # held-out pairs (and SFT examples) used by those evaluations
    save_every: int = 50  # steps between resumable training states
    early_stopping_patience: int = 0  # DPO: evaluations without a lower held-out loss before stopping (0 = off)
    kl_limit: float | None = 20.0  # DPO stops when the held-out KL exceeds this (over-optimisation); None = never
    train_accuracy_limit: float | None = 0.95  # DPO stops when the moving train accuracy exceeds this; None = never
    average_logps: bool = False  # True: length-normalised log-probs (divides each log-ratio by the length)
    loss_type: str = "sigmoid"  # DPO ("sigmoid") or a variant: "ipo", "hinge", "conservative", "robust" (TRL's names)
    label_smoothing: float = 0.0  # conservative / robust: the share of flipped labels they assume (0 < ε < 0.5)
    lora: bool = False  # train LoRA adapters; the reference is the base with adapters disabled
    lora_r: int = 16
    load_in_4bit: bool = False  # DPO policy base in 4-bit NF4 (bitsandbytes; needs lora=True): the 7B path
    lora_save: str = "merged"  # LoRA runs save "merged" weights (a plain model) or the "adapter" alone
    precision: str = "auto"  # fp32 / bf16 / fp16; auto: bf16 on GPUs with capability >= 8.0, fp16 below, CPU fp32
    gradient_checkpointing: bool = False  # both loops: recompute activations in backward (less memory, slower)
    seed: int = 42
    data_seed: int = 0  # the offline corpus' seed: kept apart so training seeds share one data set
    run_dir: str = "runs/default"
    # --- the `cpu` profile's from-scratch decoder and tokenizer ---
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    # --- 04: the evaluation (notebook 04's parameters; `dpo-lab evaluate --param`) ---
    n_judge_prompts: int = 200  # held-out helpful prompts: answers judged for win rates, Elo, the frontier
    judge_pairs: int = 2000  # training pairs the gold judge is fitted on
    max_new_tokens: int = 128  # complete answers: the corpus' best (structured) answers run up to ~100 tokens
    temperature: float = 0.7  # answers are sampled (seeded), as in the DPO paper's win-rate evaluations; 0 = greedy
    n_safety: int = 200  # red-team prompts for the refusal rates
    perplexity_pairs: int = 128
    n_kl_prompts: int = 32
    include_base: bool = True  # the untrained base model joins the Elo round robin
    n_split_pairs: int = 600  # held-out pairs for accuracy and margin on seen vs held-out topics
    n_counterfactual: int = 60  # prompts (half helpful, half red-team) asked again with each personal detail
    course_kl_limit: float = 10.0  # the course rule: among runs with held-out KL below this, the largest margin
    # --- iterative DPO (round 2): on-policy pairs sampled from a first-round run ---
    round2_temperature: float = 1.0  # sampling temperature of the on-policy answers (diverse pairs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)


_PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpu": dict(
        model_name="gpt2",
        dataset="Anthropic/hh-rlhf",
        dataset_subsets=("helpful-base", "harmless-base"),
        max_pairs=20_000,
        max_length=512,
        max_prompt_length=256,
        sft_steps=2_000,
        sft_lr=5e-5,
        sft_batch_size=16,
        beta=0.1,
        dpo_steps=1_000,
        dpo_lr=5e-6,
        dpo_batch_size=8,
        grad_accum=2,
        warmup_steps=100,
        round2_prompts=2000,
        round2_steps=250,
    ),
    "cpu": dict(
        model_name="scratch",
        dataset=OFFLINE_SOURCE,
        dataset_subsets=("helpful", "harmless"),
        max_pairs=None,
        max_length=256,
        max_prompt_length=128,
        # held-out SFT loss still fell at 600 (best = last step); 1500 converges (best ~1350) and fixes the
        # off-topic answers DPO cannot
        sft_steps=1500,
        sft_lr=1e-3,
        sft_batch_size=16,
        # 0.1 (the course's first example) pushes this model's answers off their openings: 8.5 % start mid-sentence,
        # 13 % go off-topic and the oracle's win rate vs SFT is 40 %; from 0.5 up the answers keep SFT's openings and
        # win 57 % (docs/results.md, "DPO 為什麼變差、改了什麼"). The course calls 0.5 the conservative end of its
        # range.
        beta=0.5,
        dpo_steps=200,
        dpo_lr=5e-5,
        dpo_batch_size=8,
        grad_accum=1,
        warmup_steps=20,
        # 400 prompts → 2 × 400 sampled answers, then at most 100 steps of 8 pairs (measured: 80 s in all)
        round2_prompts=400,
        round2_steps=100,
    ),
    "smoke": dict(
        model_name="tiny-random",
        dataset=OFFLINE_SOURCE,
        dataset_subsets=("helpful", "harmless"),
        max_pairs=64,
        max_length=128,
        max_prompt_length=64,
        sft_steps=4,
        sft_lr=1e-3,
        sft_batch_size=4,
        beta=0.1,
        dpo_steps=4,
        dpo_lr=1e-4,
        dpo_batch_size=2,
        grad_accum=1,
        warmup_steps=1,
        eval_every=2,
        eval_pairs=8,
        save_every=2,
        vocab_size=512,
        n_layer=2,
        n_embd=32,
        n_head=2,
        round2_prompts=8,
        round2_steps=2,
    ),
}


# notebook 04's parameters: the fields the evaluation reads (Evaluation.open(**params) overrides them)
EVAL_FIELDS = (
    "n_judge_prompts",
    "judge_pairs",
    "max_new_tokens",
    "temperature",
    "n_safety",
    "perplexity_pairs",
    "n_kl_prompts",
    "include_base",
    "n_split_pairs",
    "n_counterfactual",
)


def eval_settings(config: LabConfig, **params: Any) -> dict[str, Any]:
    """Notebook 04's parameters: ``config``'s evaluation fields with ``params`` applied (checked like ``--set``)."""
    unknown = sorted(set(params) - set(EVAL_FIELDS))
    if unknown:
        raise ValueError(f"unknown evaluation parameter(s) {unknown}; known: {sorted(EVAL_FIELDS)}")
    cfg = with_overrides(config, **params)
    return {name: getattr(cfg, name) for name in EVAL_FIELDS}


PROFILE_ENV = "DPO_LAB_PROFILE"  # what `auto` means when set: `DPO_LAB_PROFILE=smoke jupyter lab` for a dry run


def resolve_profile(profile: str = "auto") -> str:
    """Map `auto` to $DPO_LAB_PROFILE when set, else `gpu` when CUDA is available, else `cpu`; validate names.

    The variable steers every notebook left at ``profile = "auto"`` without editing a cell (an instructor's
    quick dry run in class); a profile written explicitly in a notebook is never overridden.
    """
    if profile == "auto":
        chosen = os.environ.get(PROFILE_ENV, "").strip()
        if chosen:
            if chosen not in PROFILES:
                raise ValueError(f"{PROFILE_ENV}={chosen!r}: choose one of {', '.join(PROFILES)}")
            return chosen
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)} or 'auto'")
    return profile


def get_config(profile: str = "auto", **overrides: Any) -> LabConfig:
    """The configuration of `profile` with `overrides` applied (unknown keys are an error, not ignored).

    >>> get_config("smoke", beta=0.5).beta
    0.5
    """
    name = resolve_profile(profile)
    values = dict(_PROFILE_DEFAULTS[name])
    values.update(_typed(overrides))
    cfg = LabConfig(profile=name, **values)
    _validate(cfg)
    return cfg


def with_overrides(config: LabConfig, **overrides: Any) -> LabConfig:
    """`config` with `overrides` applied, type-checked and validated like :func:`get_config` (what the later
    stages use on the config they read back from 01_data)."""
    cfg = dataclasses.replace(config, **_typed(overrides))
    _validate(cfg)
    return cfg


_KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "int | None": "an integer or null",
    "float | None": "a number or null",
    "tuple[str, ...]": "a list of strings",
    "tuple[float, float]": "a list of two numbers",
}


def _typed(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides checked against LabConfig's field types: a wrong value names its field (``--set beta=abc``)."""
    fields = {f.name: f.type for f in dataclasses.fields(LabConfig) if f.name != "profile"}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"unknown config field(s) {unknown}; known fields: {sorted(fields)}")
    out = {}
    for name, value in overrides.items():
        kind = str(fields[name])
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "tuple[str, ...]" and isinstance(value, str):
            value = (value,)
        if kind in ("float", "float | None") and number:
            value = float(value)
        elif (
            kind in ("int", "int | None")
            and isinstance(value, float)
            and value.is_integer()
            and not isinstance(value, bool)
        ):
            value = int(value)
        elif kind == "tuple[str, ...]" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        elif (
            kind == "tuple[float, float]"
            and isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            value = tuple(float(v) for v in value)
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, float),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "int | None": value is None or (isinstance(value, int) and not isinstance(value, bool)),
            "float | None": value is None or isinstance(value, float),
            "tuple[str, ...]": isinstance(value, tuple),
            "tuple[float, float]": isinstance(value, tuple),
        }.get(kind, True)
        if not ok:
            raise ValueError(f"config field {name} must be {_KINDS.get(kind, kind)}, got {value!r}")
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ValueError(f"config field {name} must be a finite number, got {value!r}")
        out[name] = value
    return out


def _validate(cfg: LabConfig) -> None:
    from ..core.losses import check_beta, check_loss_type

    check_beta(cfg.beta)
    check_loss_type(cfg.loss_type, cfg.label_smoothing)
    for name in (
        "sft_steps",
        "dpo_steps",
        "sft_batch_size",
        "dpo_batch_size",
        "grad_accum",
        "eval_every",
        "eval_pairs",
        "n_judge_prompts",
        "max_new_tokens",
        "n_kl_prompts",
        "perplexity_pairs",
        "judge_pairs",
        "round2_prompts",
        "round2_steps",
    ):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1 (got {getattr(cfg, name)})")
    for name in ("sft_lr", "dpo_lr"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be > 0 (got {getattr(cfg, name)})")
    from ..infra.precision import PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {cfg.precision!r})")
    if cfg.load_in_4bit and not cfg.lora:
        raise ValueError("load_in_4bit=true trains LoRA adapters on a frozen 4-bit base: also set lora=true")
    if cfg.lora_save not in ("merged", "adapter"):
        raise ValueError(f"lora_save must be 'merged' or 'adapter' (got {cfg.lora_save!r})")
    if cfg.max_prompt_length >= cfg.max_length:
        raise ValueError(
            f"max_prompt_length ({cfg.max_prompt_length}) must be smaller than max_length ({cfg.max_length}),"
            " or no response token would fit"
        )
