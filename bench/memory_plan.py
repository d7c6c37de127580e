"""The memory planner's estimate (dpo_lab.run.memory) against the measured peak of real DPO steps.

    python bench/memory_plan.py                      # the CPU shapes below, each in its own process (~1 min)
    python bench/memory_plan.py --shapes cpu-profile --json out.json
    python bench/memory_plan.py --device cuda        # on a GPU: torch.cuda.max_memory_allocated (self-check)
    python bench/memory_plan.py --device cuda --card-gib 16 --json card.json   # a 16 GB card simulated on a big one

``--card-gib N`` simulates an N GiB card (``torch.cuda.set_per_process_memory_fraction`` on a larger one) and
runs the gpu profile's shapes there: GPT-2 small, random weights, max_length 512: SFT steps at the profile's
batch, DPO steps at the planner's recommended micro-batch, then one size up: twice that micro-batch (forced
past the planner), and the next GPT-2 the planner refuses (its error message, then the real step, to see
whether the card would indeed have run out).

Each shape runs in a fresh process: memory is read before the models exist, then two optimizer steps of
``DPOLoop.train_step`` run on full-length synthetic rows (so the padded length is the planned one), and
the peak over that (CPU: VmHWM, the resident high-water mark; CUDA: max_memory_allocated) is compared with
``estimate_dpo_memory(...).train_peak``. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from dpo_lab.infra.peak_memory import current_bytes, peak_bytes, reset_peak

# glibc raises its mmap threshold after each free of a large block, and then keeps freed tensors in the heap: the
# resident set would count memory torch already released. A fixed threshold makes every tensor over 64 KiB its
# own mapping, returned on free, so VmHWM is the peak of live tensors (what CUDA's max_memory_allocated counts).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}

SHAPES = {
    # GPT-2-shaped models: width, depth, vocabulary, pairs per micro-batch, tokens, scored tokens, options
    "cpu-profile": dict(n_embd=256, n_layer=4, vocab=4096, pairs=8, seq_len=256, response=128, reference="cached"),
    "wide-live-ref": dict(n_embd=512, n_layer=6, vocab=8192, pairs=4, seq_len=256, response=160, reference="live"),
    "long-checkpointed": dict(
        n_embd=768, n_layer=4, vocab=16384, pairs=2, seq_len=512, response=256, reference="cached", checkpointing=True
    ),
    "lora-adapters-off": dict(
        n_embd=512, n_layer=6, vocab=8192, pairs=4, seq_len=256, response=128, reference="adapters", lora_r=8
    ),
}
CPU_SHAPES = ["cpu-profile", "wide-live-ref", "long-checkpointed"]  # what the test and the closing note use
GPU_SHAPES = [*SHAPES, "gpt2-small"]
SHAPES["gpt2-small"] = dict(n_embd=768, n_layer=12, vocab=50257, pairs=8, seq_len=512, response=256, reference="cached")


def measure(name: str, device: str = "cpu", precision: str = "auto") -> dict:
    """One shape, in this process: estimated vs measured peak bytes of two DPO optimizer steps."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_lab.core.model_modes import disable_dropout
    from dpo_lab.infra.precision import choose_precision
    from dpo_lab.run.memory import estimate_dpo_memory, model_shape
    from dpo_lab.training.dpo import DPOLoop
    from dpo_lab.training.optim import build_optimizer, build_scheduler, enable_gradient_checkpointing

    spec = SHAPES[name]
    chosen = choose_precision(device, precision)
    config = GPT2Config(
        vocab_size=spec["vocab"], n_positions=spec["seq_len"], n_embd=spec["n_embd"], n_layer=spec["n_layer"],
        n_head=max(1, spec["n_embd"] // 64),
    )  # fmt: skip
    rows, length, response = 2 * spec["pairs"], spec["seq_len"], spec["response"]
    torch.manual_seed(0)
    batches = []
    for _ in range(2):
        batch = {
            "input_ids": torch.randint(0, spec["vocab"], (rows, length)),
            "attention_mask": torch.ones(rows, length, dtype=torch.long),
            "loss_mask": torch.zeros(rows, length, dtype=torch.long),
        }
        batch["loss_mask"][:, length - response :] = 1
        if spec["reference"] == "cached":
            batch["ref_chosen_logps"] = -torch.rand(spec["pairs"]) * 100
            batch["ref_rejected_logps"] = -torch.rand(spec["pairs"]) * 100
        batches.append(batch)

    if device == "cuda":
        torch.cuda.synchronize()
    before = current_bytes(device)
    reset_peak(device)
    policy = disable_dropout(GPT2LMHeadModel(config)).to(device)
    reference = None
    if spec["reference"] == "live":
        reference = disable_dropout(GPT2LMHeadModel(config)).to(device)
    if spec.get("lora_r"):
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(
            policy, LoraConfig(r=spec["lora_r"], lora_alpha=2 * spec["lora_r"], target_modules="all-linear",
                               lora_dropout=0.0, task_type="CAUSAL_LM")
        )  # fmt: skip
    if spec.get("checkpointing"):
        enable_gradient_checkpointing(policy)
    loop = DPOLoop(policy, reference, beta=0.1, precision=chosen)
    optimizer = build_optimizer(policy, 1e-5, (0.9, 0.95))
    scheduler = build_scheduler(optimizer, 0, 10)
    for step, batch in enumerate(batches, 1):
        loop.train_step([batch], optimizer, scheduler, 1.0, step, torch.device(device))
    if device == "cuda":
        torch.cuda.synchronize()
    measured = peak_bytes(device) - before

    estimate = estimate_dpo_memory(
        model_shape(config),
        pairs=spec["pairs"],
        seq_len=length,
        response_len=response,
        precision=chosen.name,
        lora_r=spec.get("lora_r"),
        reference=spec["reference"],
        gradient_checkpointing=bool(spec.get("checkpointing")),
    )
    return {
        "shape": name,
        "device": device,
        "precision": chosen.name,
        **{k: v for k, v in spec.items()},
        "estimated_mib": round(estimate.train_peak / 2**20, 1),
        "measured_mib": round(measured / 2**20, 1),
        "error": round(estimate.train_peak / measured - 1, 3),
        "parts_mib": {k: round(v / 2**20, 1) for k, v in estimate.parts.items()},
    }


# --card-gib: the gpu profile's model, and the one a size up the planner should refuse on a 16 GB card
CARD_MODELS = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12, vocab=50257),
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20, vocab=50257),
    "tiny": dict(n_embd=128, n_layer=2, n_head=2, vocab=4096),  # the CPU test's stand-ins
    "wide": dict(n_embd=512, n_layer=8, n_head=8, vocab=16384),
}


def _gpt2(spec: dict, seq_len: int, device: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_lab.core.model_modes import disable_dropout

    config = GPT2Config(vocab_size=spec["vocab"], n_positions=max(seq_len, 1024), n_embd=spec["n_embd"],
                        n_layer=spec["n_layer"], n_head=spec["n_head"], bos_token_id=spec["vocab"] - 1,
                        eos_token_id=spec["vocab"] - 1)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: GPT-2 large takes seconds, not a minute
        return disable_dropout(GPT2LMHeadModel(config)), config


def _rows(rows: int, length: int, vocab: int, response: int, device: str, cached_pairs: int = 0) -> dict:
    import torch

    batch = {
        "input_ids": torch.randint(0, vocab, (rows, length), device=device),
        "attention_mask": torch.ones(rows, length, dtype=torch.long, device=device),
        "loss_mask": torch.zeros(rows, length, dtype=torch.long, device=device),
    }
    batch["loss_mask"][:, length - response :] = 1
    if cached_pairs:
        batch["ref_chosen_logps"] = -torch.rand(cached_pairs, device=device) * 100
        batch["ref_rejected_logps"] = -torch.rand(cached_pairs, device=device) * 100
    return batch


def _steps(kind: str, model, pairs: int, seq_len: int, device: str, precision, steps: int = 2) -> dict:
    """``steps`` optimizer steps of the SFT loss or of ``DPOLoop.train_step``; the peak over them, or the OOM.

    Two at least: AdamW creates its moments at the first ``step()``, after that step's activations are freed,
    so only from the second step on do both live at once (one step under-reports the peak the planner sums)."""
    import torch

    from dpo_lab.training.dpo import DPOLoop
    from dpo_lab.training.optim import build_optimizer, build_scheduler, optimizer_step

    vocab, response = model.config.vocab_size, seq_len // 2
    if device == "cuda":
        torch.cuda.synchronize()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    before = current_bytes(device) - weights  # the estimate counts the weights: so does the measured peak
    reset_peak(device)
    try:
        optimizer = build_optimizer(model, 1e-5, (0.9, 0.95))
        scheduler = build_scheduler(optimizer, 0, 10)
        loop, scaler = DPOLoop(model, None, beta=0.1, precision=precision), precision.grad_scaler()
        for step in range(1, steps + 1):
            if kind == "sft":  # `pairs` = SFT examples here
                batch = _rows(pairs, seq_len, vocab, response, device)
                labels = batch["input_ids"].masked_fill(batch["loss_mask"] == 0, -100)
                optimizer.zero_grad(set_to_none=True)
                with precision.autocast():
                    loss = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
                    ).loss
                scaler.scale(loss).backward()
                optimizer_step(optimizer, list(model.parameters()), 1.0, scaler)
                scheduler.step()
            else:
                batch = _rows(2 * pairs, seq_len, vocab, response, device, cached_pairs=pairs)
                loop.train_step([batch], optimizer, scheduler, 1.0, step, torch.device(device))
        if device == "cuda":
            torch.cuda.synchronize()
        result = {"ran": True, "measured_mib": round((peak_bytes(device) - before) / 2**20, 1)}
    except torch.OutOfMemoryError as e:  # what the planner exists to prevent: recorded, not raised
        result = {"ran": False, "oom": str(e).splitlines()[0][:300]}
    finally:
        optimizer = scheduler = loop = batch = None
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    return result


def simulate_card(card_gib: float, device: str = "cuda", model: str = "gpt2", bigger: str = "gpt2-large",
                  seq_len: int = 512, sft_batch: int = 16, effective_batch: int = 16) -> dict:  # fmt: skip
    """The gpu profile's shapes on a card of ``card_gib`` GiB (a cap on this process's share of a bigger GPU)."""
    import torch

    from dpo_lab.infra.precision import choose_precision
    from dpo_lab.run.memory import (
        GIB,
        SAFETY_MARGIN,
        MemoryPlanError,
        device_budget,
        estimate_dpo_memory,
        model_shape,
        plan_dpo_batch,
        require_fit,
    )

    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib * GIB / total), 0)
        budget = device_budget("cuda")  # the planner reads the cap, as the DPO stage does
    else:  # the CPU test: no cap to set, only the planner's arithmetic and real (uncapped) steps
        budget = int(card_gib * GIB - SAFETY_MARGIN)
    precision = choose_precision(device)
    out = {"card_gib": card_gib, "device": device, "budget_mib": round(budget / 2**20), "precision": precision.name,
           "model": model, "seq_len": seq_len}  # fmt: skip

    policy, config = _gpt2(CARD_MODELS[model], seq_len, device)
    shape = model_shape(config)
    plan = plan_dpo_batch(shape, effective_batch=effective_batch, seq_len=seq_len, budget=budget,
                          precision=precision.name, reference="cached")  # fmt: skip
    out["plan"] = {"dpo_batch_size": plan.dpo_batch_size, "grad_accum": plan.grad_accum, "fits": plan.fits}
    out["sft"] = {"batch": sft_batch, **_steps("sft", policy, sft_batch, seq_len, device, precision)}
    dpo = _steps("dpo", policy, plan.dpo_batch_size, seq_len, device, precision)
    estimate = estimate_dpo_memory(shape, pairs=plan.dpo_batch_size, seq_len=seq_len, precision=precision.name,
                                   reference="cached").train_peak  # fmt: skip
    dpo["estimated_mib"] = round(estimate / 2**20, 1)
    if dpo.get("ran"):
        dpo["error"] = round(estimate / 2**20 / dpo["measured_mib"] - 1, 3)
    out["dpo"] = {"pairs": plan.dpo_batch_size, **dpo}

    up = 2 * plan.dpo_batch_size  # one size up, forced past the planner: would the card really run out?
    up_estimate = estimate_dpo_memory(shape, pairs=up, seq_len=seq_len, precision=precision.name, reference="cached")
    out["dpo_one_size_up"] = {
        "pairs": up,
        "estimated_mib": round(up_estimate.peak / 2**20, 1),
        "planner_fits": up_estimate.peak <= budget,
        **_steps("dpo", policy, up, seq_len, device, precision),
    }
    del policy
    if device == "cuda":
        torch.cuda.empty_cache()

    big, big_config = _gpt2(CARD_MODELS[bigger], seq_len, device) if device == "cuda" else (None, None)
    big_shape = model_shape(big_config or _gpt2(CARD_MODELS[bigger], seq_len, "meta")[1])
    big_plan = plan_dpo_batch(big_shape, effective_batch=effective_batch, seq_len=seq_len, budget=budget,
                              precision=precision.name, reference="cached")  # fmt: skip
    refused = {"model": bigger, "planner_fits": big_plan.fits}
    try:
        require_fit(big_plan, f"{card_gib:g} GiB（{bigger}）")
    except MemoryPlanError as e:
        refused["planner_error"] = str(e).splitlines()[0]
    if big is not None:  # the step the planner refused, run anyway under the cap: the OOM it prevents
        refused.update(_steps("dpo", big, 1, seq_len, device, precision))
    out["bigger_model"] = refused
    return out


def run_all(shapes: list[str], device: str = "cpu", precision: str = "auto") -> list[dict]:
    """Each shape in its own process (a fresh allocator, so one shape's peak cannot hide another's)."""
    results = []
    for name in shapes:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--device", device, "--precision", precision],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, **MALLOC_ENV},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| shape | precision | pairs × tokens | reference | estimated (MiB) | measured peak (MiB) | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        extra = (" + checkpointing" if r.get("checkpointing") else "") + (
            f" + LoRA r={r['lora_r']}" if r.get("lora_r") else ""
        )
        lines.append(
            f"| {r['shape']}{extra} | {r['precision']} | {r['pairs']} × {r['seq_len']} | {r['reference']} |"
            f" {r['estimated_mib']:,.0f} | {r['measured_mib']:,.0f} | {r['error']:+.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--card-gib", type=float, help="simulate a card of this many GiB (gpu profile's shapes)")
    parser.add_argument("--card-models", nargs=2, default=["gpt2", "gpt2-large"], metavar=("MODEL", "BIGGER"))
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.card_gib:
        result = simulate_card(args.card_gib, args.device, *args.card_models, seq_len=args.seq_len)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(result, ensure_ascii=False))
        return 0
    if args.worker:
        print(json.dumps(measure(args.worker, args.device, args.precision)))
        return 0
    shapes = args.shapes or (CPU_SHAPES if args.device == "cpu" else GPU_SHAPES)
    results = run_all(shapes, args.device, args.precision)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"max_abs_error": max(abs(r["error"]) for r in results), "shapes": len(results)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
