"""Stages 02 (SFT) and 03 (DPO) on a run folder (laid out in :mod:`dpo_lab.run.layout`): what notebooks 02/03 and the
CLI call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..core.hh_format import with_hh_chat_template
from ..core.losses import LOSSES
from ..core.losses import dpo_loss as package_dpo_loss
from ..core.tokenization import tokenize_pairs, tokenize_sft_example
from ..fast.reference_cache import attach_reference_logps, cache_key, ensure_reference_logps
from ..infra.atomic import remove_leftovers
from ..infra.checkpoints import (
    claim_training_state,
    load_model_checkpoint,
    save_model_checkpoint,
    verify_checkpoint,
)
from ..infra.console import quiet_hf
from ..infra.device import environment_report, pick_device
from ..infra.distributed import distributed, is_main_process
from ..infra.locks import stage_lock
from ..infra.manifest import build_manifest, read_manifest
from ..infra.precision import choose_precision
from ..training.dpo import DPOArgs, DPOResult, dpo_train
from ..training.sft import SFTArgs, SFTResult, sft_train
from .config import LabConfig, with_overrides
from .layout import DATA_DIR, DPO_DIR, ROUND2_PREFIX, RUN_01, RUN_02, RUN_03, SFT_DIR, dpo_run_dir, state_dir
from .lora import add_lora, is_quantized, model_to_save
from .memory import device_budget, fit_config_to_memory, model_shape, reference_mode, require_fit
from .model_card import model_card
from .prepare import PreparedData, load_prepared_data


def _remove_state(run_dir: Path, state: Path) -> None:
    """Drop a finished stage's training state, and the empty folders above it."""
    shutil.rmtree(state, ignore_errors=True)
    parent = state.parent
    while parent != run_dir and parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _start_stage(run_dir: Path, out: Path, state: Path, fingerprint: dict[str, Any]) -> None:
    """Before training: drop what a killed run of this stage left half-written, and any training state
    that was saved for a different run (printing why), so a resume can only continue the same run."""
    if is_main_process(distributed()):
        for leftover in remove_leftovers(out):
            print(f"[{out.name}] 已刪除上次中斷留下的暫存資料夾 {leftover}")
        reason = claim_training_state(state, fingerprint)
        if reason:
            print(f"[{out.name}] 不接續之前的訓練、從頭開始：{reason}")
    accelerator = distributed()
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _fingerprint(stage: str, inputs: dict[str, str], args, **more: Any) -> dict[str, Any]:
    train_args = {k: v for k, v in dataclasses.asdict(args).items() if k != "progress"}
    return {"stage": stage, "inputs": inputs, "train_args": train_args, **more}


# Each loop argument and the LabConfig field it comes from: the loops keep no default of their own for these
# (tests/test_models_and_config.py fails when one is given a default again or left out of this table).
SHARED_LOOP_FIELDS = {
    name: name
    for name in (
        "grad_accum",
        "warmup_steps",
        "schedule",
        "eval_every",
        "save_every",
        "seed",
        "max_length",
        "precision",
        "gradient_checkpointing",
    )
}
SFT_LOOP_FIELDS = SHARED_LOOP_FIELDS | {
    "steps": "sft_steps",
    "lr": "sft_lr",
    "batch_size": "sft_batch_size",
    "betas": "sft_adam_betas",
}
DPO_LOOP_FIELDS = SHARED_LOOP_FIELDS | {
    "steps": "dpo_steps",
    "lr": "dpo_lr",
    "batch_size": "dpo_batch_size",
    "betas": "dpo_adam_betas",
    "beta": "beta",
    "patience": "early_stopping_patience",
    "kl_limit": "kl_limit",
    "train_accuracy_limit": "train_accuracy_limit",
    "average_logps": "average_logps",
    "loss_type": "loss_type",
    "label_smoothing": "label_smoothing",
}


def _loop_fields(config: LabConfig, table: dict[str, str]) -> dict[str, Any]:
    return {arg: getattr(config, field) for arg, field in table.items()}


def sft_args(config: LabConfig, progress: bool = True) -> SFTArgs:
    return SFTArgs(**_loop_fields(config, SFT_LOOP_FIELDS), progress=progress)


def dpo_args(config: LabConfig, progress: bool = True) -> DPOArgs:
    fields = _loop_fields(config, DPO_LOOP_FIELDS)
    fields["average_logps"] |= LOSSES[config.loss_type].average_logps  # e.g. IPO: per-token means (as TRL)
    return DPOArgs(**fields, progress=progress)


def build_base_model(config: LabConfig, tokenizer):
    """The model SFT starts from: tiny random (smoke), a from-scratch decoder (cpu), or pretrained weights."""
    from .models import build_decoder, load_pretrained, tiny_random_model

    if config.model_name == "tiny-random":
        return tiny_random_model(tokenizer, seed=config.seed, n_positions=max(512, config.max_length))
    if config.model_name == "scratch":
        return build_decoder(
            tokenizer,
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            n_positions=max(512, config.max_length),
            seed=config.seed,
        )
    model, _ = load_pretrained(config.model_name)
    return model


def data_id(run_dir: Path) -> str:
    """The content id of ``01_data`` (what stages 02-04 record as their input)."""
    return read_manifest(run_dir / DATA_DIR, produced_by=RUN_01)["id"]


def stage_config(prepared_config: LabConfig, profile: str = "auto", **overrides: Any) -> LabConfig:
    """The config a later notebook trains with: the run folder's own (from 01_data), with the non-None overrides.

    A notebook asking for a profile other than the one its run folder was prepared with is an error
    (a ``smoke`` SFT model on ``cpu`` data would be a silent mix-up); ``"auto"`` accepts the folder's.
    """
    from .config import resolve_profile

    if profile != "auto" and resolve_profile(profile) != prepared_config.profile:
        raise ValueError(
            f"this run folder was prepared with profile '{prepared_config.profile}', but the notebook asks for"
            f" '{profile}': use profile='auto' or '{prepared_config.profile}', or another run_dir (and run 01 there)"
        )
    return with_overrides(prepared_config, **{k: v for k, v in overrides.items() if v is not None})


def open_run(
    run_dir: str | Path, profile: str = "auto", *, log=print, **overrides: Any
) -> tuple[PreparedData, LabConfig]:
    """The first step of notebooks 02-04 and of ``python -m dpo_lab evaluate``: one call, the same everywhere.

    Quiets transformers' per-call messages, loads stage 01's output (a clear error if notebook 01 has
    not run for `run_dir`), resolves the configuration with this notebook's parameters (None = the
    profile's default) and logs the one-line environment report (device, dtype, profile, versions).
    """
    quiet_hf()
    prepared = load_prepared_data(run_dir)
    config = stage_config(prepared.config, profile, **overrides)
    log(environment_report(config))
    return prepared, config


# -------------------------------------------------------------------------------------------- 02 SFT


def implementation_source(fn, reference) -> str:
    """'student' or 'reference': who wrote the function that ran (recorded in the stage's manifest)."""
    return "reference" if fn is None or fn is reference else "student"


def run_sft_stage(
    run_dir: str | Path,
    *,
    config: LabConfig | None = None,
    device=None,
    progress: bool = True,
    sequence_logprobs=None,
    **overrides: Any,
) -> tuple[Path, SFTResult]:
    """Train the SFT model on 01_data's demonstrations and save ``02_sft/`` (resumes an interrupted run).

    ``sequence_logprobs``: the function whose output IS the training loss (a student's, from notebook
    02); None or the package's own = the model's built-in loss (the same number). The manifest's
    ``implementations`` says which one trained the model.
    """
    from ..core.losses import sequence_logprobs as reference_logprobs_fn

    source = implementation_source(sequence_logprobs, reference_logprobs_fn)
    run_dir = Path(run_dir)
    prepared = load_prepared_data(run_dir)
    config = with_overrides(config or prepared.config, **overrides)
    tok = prepared.tokenizer
    train = [
        tokenize_sft_example(tok, r["prompt"], r["response"], config.max_length) for r in prepared.splits["sft_train"]
    ]
    held_out = [
        tokenize_sft_example(tok, p["prompt"], p["chosen"], config.max_length)
        for p in prepared.splits["pairs_test"][: config.eval_pairs]
    ]
    with stage_lock(run_dir / SFT_DIR, enabled=is_main_process(distributed())):  # one writer per folder
        inputs = {DATA_DIR: data_id(run_dir)}
        state = state_dir(run_dir, SFT_DIR)
        names = ("model_name", "n_layer", "n_embd", "n_head", "vocab_size", "load_in_4bit", "lora_r")
        model_fields = {k: getattr(config, k) for k in names}
        _start_stage(
            run_dir,
            run_dir / SFT_DIR,
            state,
            _fingerprint(
                SFT_DIR, inputs, sft_args(config), model=model_fields, implementations={"sequence_logprobs": source}
            ),
        )
        model = build_base_model(config, tok)
        base_source, precision = None, choose_precision(pick_device(device), config.precision)
        if config.load_in_4bit:  # LoRA on a 4-bit base here too: a 7B model cannot be fine-tuned in full on 16 GB
            from .lora import load_quantized

            base_source = _full_precision_source(config, model, state)
            model = add_lora(load_quantized(base_source, pick_device(device), precision), config.lora_r)
        t0 = time.perf_counter()
        result = sft_train(
            model,
            tok,
            train,
            held_out,
            sft_args(config, progress),
            device=device,
            state_dir=state,
            logprobs_fn=sequence_logprobs if source == "student" else None,
        )
        seconds = time.perf_counter() - t0
        metrics = _sft_metrics(result, model, train_examples=len(train), seconds=seconds, source=source)
        metrics["precision"] = precision.label
        if base_source is not None:  # 03 starts from (and loads in 4-bit) full weights: merge the adapters
            model = model_to_save(
                model, how="merged", base_source=base_source, dtype=precision.autocast_dtype or torch.float32
            )
            metrics.update(load_in_4bit=True, lora_r=config.lora_r)
        manifest = build_manifest(SFT_DIR, config, inputs=inputs, metrics=metrics)
        manifest["train_args"] = result.args
        out = _save_on_main(run_dir / SFT_DIR, model, tok, manifest, result.history, run_dir, state)
        return out, result


def _sft_metrics(result: SFTResult, model, *, train_examples: int, seconds: float, source: str) -> dict[str, Any]:
    """What 02's manifest records of the run: the best held-out loss (and perplexity), time, size, who wrote the
    loss."""
    evaluated = [r for r in result.history if "eval_loss" in r]
    best = result.best_eval_loss
    return {
        "best_step": result.best_step,
        "best_eval_loss": best,
        "best_eval_perplexity": None if best is None else float(torch.tensor(best).exp()),
        "first_eval_loss": evaluated[0]["eval_loss"] if evaluated else None,
        "train_seconds": seconds,
        "train_examples": train_examples,
        "parameters": sum(p.numel() for p in model.parameters()),
        "implementations": {"sequence_logprobs": source},
    }


def _full_precision_source(config: LabConfig, built, state: Path) -> str | Path:
    """Where 4-bit loading reads full-precision weights: the Hub id / folder, or the built model saved to
    ``state`` (tiny-random and scratch exist only in memory)."""
    if config.model_name not in ("tiny-random", "scratch"):
        return config.model_name
    folder = (state / "base_fp32").resolve()
    if not folder.exists():
        built.save_pretrained(folder)
    return folder


# -------------------------------------------------------------------------------------------- 03 DPO


def load_sft_checkpoint(run_dir: str | Path, device=None):
    """``(model, tokenizer, manifest)`` of ``02_sft/``, verified complete and built from the current 01_data."""
    run_dir = Path(run_dir)
    return load_model_checkpoint(
        run_dir / SFT_DIR, produced_by=RUN_02, expected_inputs={DATA_DIR: data_id(run_dir)}, device=device or "cpu"
    )


def _saved_config(folder: Path):
    """A checkpoint's model config, read without loading its weights (what the memory planner needs)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def load_reference_model(sft_folder: Path, device):
    """A second, separate copy of the SFT model: the frozen reference (hook point for tests)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(sft_folder, dtype=torch.float32).to(device)


def load_eval_model(folder: Path, device=None):
    """A saved model (SFT or a DPO beta) in eval mode, fp32 weights, on the lab's device."""
    return load_reference_model(folder, pick_device(device)).eval()


def run_dpo_stage(
    run_dir: str | Path,
    *,
    beta: float | None = None,
    config: LabConfig | None = None,
    use_cache: bool = True,
    device=None,
    progress: bool = True,
    dpo_loss=None,
    dpo_step=None,
    start_from: str | Path | None = None,
    train_pairs: list[dict[str, Any]] | None = None,
    extra_metrics: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[Path, DPOResult]:
    """DPO from ``02_sft/`` at one beta → ``03_dpo/beta_<b>/`` (a loss variant: ``03_dpo/<loss>_beta_<b>/``,
    see ``config.loss_type``). Other runs' folders are never touched.

    With ``use_cache`` the reference log-probs come from ``02_sft/ref_cache/`` (computed on the first run); a re-run
    with another beta then never loads or runs the reference model. ``dpo_loss`` / ``dpo_step``: the student's
    functions from notebook 03 (None or the package's own = the reference). A student's ``dpo_step`` does every
    optimizer step itself, so it gets a live reference model (the cache cannot answer arbitrary code); a student's
    ``dpo_loss`` is the loss of training and of the held-out evaluation. The manifest's ``implementations`` records
    who ran what.

    ``start_from`` + ``train_pairs``: a second, on-policy round (:mod:`dpo_lab.evaluation.onpolicy`).
    The policy starts from that finished ``03_dpo/<run>`` folder, which is also the frozen reference
    (live, no cache), trains on ``train_pairs`` and is saved to ``03_dpo/round2_<run>/``.
    """
    stage_start = time.perf_counter()
    run_dir = Path(run_dir)
    accelerator = distributed()
    device = accelerator.device if accelerator is not None else pick_device(device)
    prepared = load_prepared_data(run_dir)
    if beta is not None:
        overrides["beta"] = beta
    config = with_overrides(config or prepared.config, **overrides)
    sources, dpo_loss, dpo_step = _dpo_implementations(config, dpo_loss, dpo_step)
    dpo_args(config, progress)  # validates beta/lr before any heavy work
    out_dir = (
        run_dir / DPO_DIR / f"{ROUND2_PREFIX}{Path(start_from).name}"
        if start_from is not None
        else dpo_run_dir(run_dir, config.beta, config.loss_type, config.label_smoothing)
    )
    with stage_lock(out_dir, enabled=is_main_process(accelerator)):  # a second run at this beta fails, not overwrites
        precision = choose_precision(device, config.precision)
        run = _prepare_dpo_run(
            run_dir, out_dir, config, prepared, device, precision, use_cache, start_from, train_pairs, sources, progress
        )
        config, args = run.config, run.args
        if config.lora and dpo_step is not None:
            sources["dpo_step"] = (
                "reference (LoRA: the reference is the policy with its adapters off, which dpo_step cannot be given)"
            )
            dpo_step = None
        side = _reference_side(
            config, args, run.sft_folder, run.inputs.get(SFT_DIR), run.train, run.held_out, run.tok, device,
            run.use_cache, students_step=sources["dpo_step"],
        )  # fmt: skip
        t0 = time.perf_counter()
        result = dpo_train(
            run.policy, side.reference, run.tok, side.train, side.held_out, args, device=device, state_dir=run.state,
            ref_lm_head=side.lm_head, eval_ref_hidden=side.eval_hidden, loss_fn=dpo_loss or package_dpo_loss,
            step_fn=dpo_step,
        )  # fmt: skip
        timing = {"train_seconds": time.perf_counter() - t0, "stage_seconds": time.perf_counter() - stage_start}
        metrics = {
            "stop_reason": result.stop_reason,
            "steps_run": len(result.history),
            **timing,
            "reference_cache": side.cache_status,
            "initial_eval": result.initial_eval,
            "final_eval": result.final_eval,
            "implementations": sources,
            "precision": precision.label,
            **({"lora_save": config.lora_save, "load_in_4bit": config.load_in_4bit} if config.lora else {}),
            **({"round": 2, "first_round": run.sft_folder.name} if start_from is not None else {}),
            **(extra_metrics or {}),
        }
        return _save_dpo_run(run, out_dir, run_dir, run.policy, precision, result, metrics), result


@dataclasses.dataclass
class _DPORun:
    """Stage 03's inputs once resolved: the fitted config and loop arguments, the starting policy and its folder,
    the tokenized pairs, the stage's inputs (manifest ids) and its resumable-state folder."""

    config: LabConfig
    args: DPOArgs
    policy: Any
    tok: Any
    sft_folder: Path
    inputs: dict[str, str]
    state: Path
    use_cache: bool
    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]


def _prepare_dpo_run(
    run_dir, out_dir, config, prepared, device, precision, use_cache, start_from, train_pairs, sources, progress
) -> _DPORun:
    """Fit the micro-batch to the device, load the starting policy (LoRA adapters added), claim or discard a saved
    training state by its fingerprint, and tokenize the pairs."""
    config = _fit_to_device(run_dir, config, device, precision, use_cache, students_step=sources["dpo_step"])
    args = dpo_args(config, progress)
    policy, tok, sft_folder, inputs = _load_policy(run_dir, config, device, precision, start_from)
    use_cache = use_cache and start_from is None  # round 2: the first round's policy is a live reference
    if train_pairs is not None:  # pairs made after 01 (on-policy): their content is an input like any stage's
        pairs_json = json.dumps(train_pairs, sort_keys=True).encode("utf-8")
        inputs["train_pairs"] = hashlib.sha256(pairs_json).hexdigest()[:16]
    state = state_dir(run_dir, f"{DPO_DIR}/{out_dir.name}")
    lora = [config.lora, config.lora_r, config.load_in_4bit, config.lora_save]
    fingerprint = _fingerprint(DPO_DIR, inputs, args, lora=lora, reference_cache=use_cache, implementations=sources)
    _start_stage(run_dir, out_dir, state, fingerprint)
    train = tokenize_pairs(
        tok, prepared.splits["pairs_train"] if train_pairs is None else train_pairs, max_length=config.max_length
    )
    held_out = tokenize_pairs(tok, prepared.splits["pairs_test"][: config.eval_pairs], max_length=config.max_length)
    if not train:
        raise ValueError(f"{run_dir / DATA_DIR}: no training pairs")
    if config.lora:
        policy = add_lora(policy, config.lora_r)  # reference = the same weights with the adapters disabled
    return _DPORun(config, args, policy, tok, sft_folder, inputs, state, use_cache, train, held_out)


def _save_dpo_run(run: _DPORun, out_dir: Path, run_dir: Path, policy, precision, result, metrics) -> Path:
    """Save the trained policy with its manifest (LoRA: merged into a plain model, or the adapters alone)."""
    config = run.config
    if config.lora:  # merged: a plain model again, which 04 loads like any other; or the adapters alone
        policy = model_to_save(
            policy,
            how=config.lora_save,
            base_source=run.sft_folder.resolve(),
            dtype=(precision.autocast_dtype or torch.float32) if config.load_in_4bit else torch.float32,
        )
    manifest = build_manifest(DPO_DIR, config, inputs=run.inputs, metrics=metrics)
    manifest["train_args"] = result.args
    return _save_on_main(out_dir, policy, run.tok, manifest, result.history, run_dir, run.state)


def _dpo_implementations(config: LabConfig, dpo_loss, dpo_step):
    """Who wrote what trains: ``{"dpo_loss": ..., "dpo_step": ...}`` ("student" / "reference") for the manifest,
    and the student's functions to train with (None: the package's). A loss variant trains with the package's
    :func:`~dpo_lab.core.losses.preference_loss`, whatever a student wrote."""
    from ..core import losses
    from ..training.dpo import dpo_step as reference_dpo_step

    sources = {
        "dpo_loss": implementation_source(dpo_loss, losses.dpo_loss),
        "dpo_step": implementation_source(dpo_step, reference_dpo_step),
    }
    if config.loss_type != "sigmoid" and "student" in sources.values():
        print(
            f"loss_type={config.loss_type}：這個變體用套件的 preference_loss 訓練；"
            "你的 dpo_loss / dpo_step 實作的是 sigmoid（DPO）loss，這次不使用。"
        )
        return {name: f"reference (loss_type={config.loss_type})" for name in sources}, None, None
    return (
        sources,
        dpo_loss if sources["dpo_loss"] == "student" else None,
        dpo_step if sources["dpo_step"] == "student" else None,
    )


def _fit_to_device(run_dir: Path, config: LabConfig, device, precision, use_cache: bool, students_step: str):
    """On a GPU, before any weights move: the config with the micro-batch the memory planner fits (same effective
    batch), or a stop with the plan when not even one pair fits. Elsewhere: ``config`` unchanged."""
    budget = device_budget(device)
    if budget is None or not (run_dir / SFT_DIR / "config.json").is_file():
        return config
    mode = reference_mode(config, use_cache, students_step=students_step == "student")
    shape = model_shape(_saved_config(run_dir / SFT_DIR))
    config, plan = fit_config_to_memory(config, shape, budget, precision.name, mode)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"記憶體規劃（{card}，reference {mode}）：{plan.summary()}")
    require_fit(plan, f"{card}（{config.model_name}，max_length {config.max_length}）")
    return config


def _load_policy(run_dir: Path, config: LabConfig, device, precision, start_from):
    """The policy DPO starts from — the SFT model, or a first round's policy for round 2 — with its tokenizer, the
    folder it came from (the reference's weights too) and the stage's inputs (their manifest ids)."""
    if start_from is not None and (Path(start_from) / "adapter_config.json").exists():
        raise ValueError(
            f"{start_from} holds LoRA adapters only (lora_save='adapter'): a second round starts from full"
            " weights. Re-run its first round with lora_save='merged'."
        )
    if config.load_in_4bit:  # the 7B path: never materialise the full-precision weights on the device
        from transformers import AutoTokenizer

        from .lora import load_quantized

        sft_manifest = verify_checkpoint(
            run_dir / SFT_DIR, produced_by=RUN_02, expected_inputs={DATA_DIR: data_id(run_dir)}
        )
        tok = AutoTokenizer.from_pretrained(run_dir / SFT_DIR)
        base = Path(start_from) if start_from else run_dir / SFT_DIR
        policy = load_quantized(base.resolve(), device, precision)
    else:
        policy, tok, sft_manifest = load_sft_checkpoint(run_dir, device)
    inputs = {DATA_DIR: data_id(run_dir), SFT_DIR: sft_manifest["id"]}
    if start_from is None:
        return policy, tok, run_dir / SFT_DIR, inputs
    first_folder = Path(start_from)  # round 2: start from (and stay close to) the first round's policy
    first = verify_checkpoint(first_folder, produced_by=RUN_03, expected_inputs={DATA_DIR: inputs[DATA_DIR]})
    if not config.load_in_4bit:
        policy = load_reference_model(first_folder, device)
    return policy, tok, first_folder, {DATA_DIR: inputs[DATA_DIR], first_folder.name: first["id"]}


@dataclasses.dataclass
class ReferenceSide:
    """What the DPO loop gets for the reference: a live model, or cached log-probs attached to the pairs (with the
    cached LM head and held-out hidden states for the KL), and how the cache was used."""

    reference: Any
    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    cache_status: str = "off"
    lm_head: dict | None = None
    eval_hidden: list | None = None


def _reference_side(
    config, args, sft_folder: Path, sft_id: str | None, train, held_out, tok, device, use_cache, students_step: str
):
    """The reference of this run: none (LoRA: the adapters-off policy), the live SFT model, or the cache in
    ``02_sft/ref_cache/`` filled — once, over the batches the loop's own plan visits — and attached to the pairs."""
    if config.lora:
        return ReferenceSide(None, train, held_out)
    if not use_cache or students_step == "student":
        status = "off: your dpo_step runs the reference model itself" if use_cache else "off"
        return ReferenceSide(load_reference_model(sft_folder, device), train, held_out, status)
    accelerator = distributed()
    world = accelerator.num_processes if accelerator is not None else 1
    visited = args.visited(train, world)  # the loop's own plan: the batches it will train on
    key = cache_key(
        sft_id,
        average=args.average_logps,
        max_length=args.max_length,
        precision=choose_precision(device, config.precision).cache_tag,
    )

    def fill_cache():
        return ensure_reference_logps(
            sft_folder,
            key,
            [train[i] for i in visited],
            held_out,
            lambda: load_reference_model(sft_folder, device),
            tokenizer=tok,
            batch_size=args.batch_size,
            device=device,
            average=args.average_logps,
            max_length=args.max_length,
            precision=config.precision,
        )

    cached = fill_cache() if is_main_process(accelerator) else None  # one process computes, the others read
    if accelerator is not None:
        accelerator.wait_for_everyone()
        cached = cached or fill_cache()
    train = list(train)
    for i, ex in zip(visited, attach_reference_logps([train[i] for i in visited], cached["train"])):
        train[i] = ex
    reference = None
    if cached["held_out_hidden"] is None:  # this architecture's logits are not hidden @ W.T: the KL needs the model
        reference = cached["reference"] or load_reference_model(sft_folder, device)
    return ReferenceSide(
        reference,
        train,
        attach_reference_logps(held_out, cached["held_out"]),
        f"computed {cached['computed']} pairs" if cached["computed"] else "hit",
        cached["lm_head"],
        cached["held_out_hidden"],
    )


def _save_on_main(folder: Path, model, tok, manifest, history, run_dir: Path, state: Path) -> Path:
    """Only the main process writes (all processes hold the same weights); the others wait for it."""
    accelerator = distributed()
    if is_main_process(accelerator):
        model = model if is_quantized(model) else model.cpu()  # a 4-bit model stays where bitsandbytes put it
        save_model_checkpoint(folder, model, with_hh_chat_template(tok), manifest, history, card=model_card)
        _remove_state(run_dir, state)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return folder
