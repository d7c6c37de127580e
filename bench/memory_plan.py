"""The memory planner's estimate (dpo_lab.run.memory) against the measured peak of real DPO steps.

    python bench/memory_plan.py                      # the CPU shapes below, each in its own process (~1 min)
    python bench/memory_plan.py --shapes cpu-profile --json out.json
    python bench/memory_plan.py --device cuda        # on a GPU: torch.cuda.max_memory_allocated (self-check)

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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
