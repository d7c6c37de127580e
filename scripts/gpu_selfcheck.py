"""GPU self-check: run it once on the classroom GPU before the course (offline, under 8 minutes on a 16 GB card).

    python scripts/gpu_selfcheck.py                   # on a CUDA machine; exits 1 if any check fails
    python scripts/gpu_selfcheck.py --json out.json   # also write every number
    python scripts/gpu_selfcheck.py --device cpu      # the same checks on the CPU (small shapes; what CI runs)

Without CUDA (and without ``--device cpu``) it says so and exits 0 with status "skipped".

The checks, each pass/fail:

1. ``precision``: the policy chosen for this card (bf16 at compute capability >= 8.0, else fp16 + GradScaler)
   runs a scaled optimizer step with finite gradients.
2. ``smoke_chain``: the smoke profile end to end on this device: 01 data, 02 SFT, 03 DPO with the reference
   cache and with a live reference (step-0 loss ln 2; cached and live agree within the precision's tolerance),
   and generation from the DPO model.
3. ``trl_parity``: 3 steps of our DPO loop and of TRL's DPOTrainer on the same pairs, models and precision:
   loss and margins within 5e-3, log-probs within 0.1 % (on the CPU in bf16/fp16 autocast the gap measured
   1.6e-4 / 4.4e-5 in the loss; fp32 parity is 5e-5, tests/test_trl_parity.py).
4. ``memory_plan``: the planner's estimate vs the measured peak (``torch.cuda.max_memory_allocated``) of real
   DPO steps, including GPT-2 small at the gpu profile's 8 pairs x 512 tokens: within 30 % each.
5. ``dpo_step_bench``: seconds per step and peak memory, ours vs TRL (cached / precomputed reference and live),
   on the CPU bench's GPT-2-vocab config and GPT-2 small. Informational: it fails only if a variant fails.

The last line printed is one JSON object: status, device, capability, precision, each check, the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARITY_TOLERANCE = {"loss": 5e-3, "rewards/margins": 5e-3, "logps_relative": 1e-3}
PLAN_TOLERANCE = 0.30


def check_precision(device: str) -> dict:
    import torch

    from dpo_lab.infra.precision import choose_precision

    chosen = choose_precision(device)
    layer = torch.nn.Linear(64, 64).to(device)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    scaler = chosen.grad_scaler()
    with chosen.autocast():
        out = layer(torch.randn(8, 64, device=device))
    scaler.scale(out.float().pow(2).mean()).backward()
    scaler.unscale_(optimizer)
    finite = all(torch.isfinite(p.grad).all() for p in layer.parameters())
    scaler.step(optimizer)
    scaler.update()
    expected = torch.float32 if chosen.autocast_dtype is None else chosen.autocast_dtype
    return {"ok": bool(finite and out.dtype == expected), "precision": chosen.label, "reason": chosen.reason}


def check_smoke_chain(device: str) -> dict:
    import dpo_lab
    from dpo_lab.evaluation.generation import generate
    from dpo_lab.infra.precision import choose_precision
    from dpo_lab.run import pipeline
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    with tempfile.TemporaryDirectory(prefix="gpu_selfcheck_") as tmp:
        config = dpo_lab.get_config("smoke", run_dir=tmp)
        save_prepared_data(prepare_data(config), tmp)
        pipeline.run_sft_stage(tmp, device=device, progress=False)
        _, cached = pipeline.run_dpo_stage(tmp, beta=0.1, device=device, progress=False)
        folder, live = pipeline.run_dpo_stage(tmp, beta=0.1, use_cache=False, device=device, progress=False)
        tolerance = 10 * choose_precision(device).logits_atol
        losses = [(a["loss"], b["loss"]) for a, b in zip(cached.history, live.history)]
        agree = all(abs(a - b) <= tolerance for a, b in losses)
        step0 = live.initial_eval["eval_loss"]
        model, tok = pipeline.load_eval_model(folder, device), pipeline.load_prepared_data(tmp).tokenizer
        answers = generate(model, tok, ["Human: hello\n\nAssistant:"] * 2, max_new_tokens=8, device=device)
    finite = all(math.isfinite(r["loss"]) for r in cached.history + live.history)
    ok = finite and agree and abs(step0 - math.log(2)) < 1e-2 and len(answers) == 2
    return {
        "ok": ok,
        "step0_eval_loss": step0,
        "cached_vs_live_max_loss_gap": max(abs(a - b) for a, b in losses),
        "tolerance": tolerance,
    }


def check_trl_parity(device: str) -> dict:
    import torch
    from transformers import GPT2LMHeadModel

    import dpo_lab
    from dpo_lab.core.model_modes import disable_dropout
    from dpo_lab.evaluation.trl_compare import compare_with_trl
    from dpo_lab.run.models import gpt2_config

    tok = dpo_lab.corpus_tokenizer(seed=0, vocab_size=4096)
    pairs, _ = dpo_lab.load_preference_data("offline", split="train", max_pairs=200)
    config = gpt2_config(4096, 2, 128, 2, n_positions=256, tokenizer=tok)

    def model(seed):
        def make():
            torch.manual_seed(seed)
            return disable_dropout(GPT2LMHeadModel(config))

        return make

    result = compare_with_trl(
        model(0), model(1), tok, pairs, beta=0.1, lr=1e-4, steps=3, batch_size=4, max_length=256, device=device
    )
    gaps = {m: max(abs(a[m] - b[m]) for a, b in zip(result.ours, result.trl)) for m in ("loss", "rewards/margins")}
    gaps["logps_relative"] = max(
        abs(a[m] - b[m]) / abs(b[m])
        for a, b in zip(result.ours, result.trl)
        for m in ("logps/chosen", "logps/rejected")
    )
    return {"ok": all(gaps[k] <= PARITY_TOLERANCE[k] for k in gaps), "gaps": gaps, "tolerance": PARITY_TOLERANCE}


def _bench_script(name: str, args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()


def check_memory_plan(device: str, quick: bool) -> dict:
    shapes = ["cpu-profile"] if quick else (["cpu-profile", "long-checkpointed", "gpt2-small"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        _bench_script("memory_plan.py", ["--device", device, "--shapes", *shapes, "--json", str(out)])
        results = json.loads(out.read_text())
    rows = {r["shape"]: {"estimated_mib": r["estimated_mib"], "measured_mib": r["measured_mib"], "error": r["error"]}
            for r in results}  # fmt: skip
    return {"ok": all(abs(r["error"]) <= PLAN_TOLERANCE for r in results), "shapes": rows}


def check_dpo_step_bench(device: str, quick: bool) -> dict:
    configs = ["gpt2vocab"] if quick else ["gpt2vocab", "gpt2small"]
    variants = ["ours_cached", "trl_precompute"] if quick else ["ours_live", "ours_cached", "trl", "trl_precompute"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = ["--device", device, "--configs", *configs, "--variants", *variants, "--rounds", "1", "--json", str(out)]
        _bench_script("dpo_step.py", [*args, "--steps", "1" if quick else "3", "--warmup", "0" if quick else "1"])
        report = json.loads(out.read_text())
    rows = {}
    for config in report["configs"]:
        for variant, r in config["variants"].items():
            peak = max(run.get("cuda_peak_mb", run["step_peak_rss_mb"]) for run in config["runs"][variant])
            rows[f"{config['config']}/{variant}"] = {"s_per_step": r["s_per_step"], "peak_mb": round(peak, 1)}
    return {"ok": True, "variants": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="smaller shapes and one bench config (the CPU test)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("這個檢查需要 CUDA GPU：本機沒有可用的 GPU，略過（在上課用的 GPU 機器上執行）。")
        print(json.dumps({"status": "skipped", "reason": "no CUDA device"}))
        return 0
    from dpo_lab.infra.console import quiet_hf
    from dpo_lab.infra.precision import choose_precision

    quiet_hf()
    started = time.perf_counter()
    summary = {
        "device": args.device,
        "name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if args.device == "cuda" else None,
        "precision": choose_precision(args.device).label,
        "checks": {},
    }
    steps = [
        ("precision", lambda: check_precision(args.device)),
        ("smoke_chain", lambda: check_smoke_chain(args.device)),
        ("trl_parity", lambda: check_trl_parity(args.device)),
        ("memory_plan", lambda: check_memory_plan(args.device, args.quick)),
        ("dpo_step_bench", lambda: check_dpo_step_bench(args.device, args.quick)),
    ]
    for name, run in steps:
        t0 = time.perf_counter()
        try:
            result = run()
        except Exception as e:  # a crash is a failed check, with the traceback shown
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        summary["checks"][name] = result
        print(f"{'✅' if result['ok'] else '❌'} {name}（{result['seconds']} 秒）", flush=True)
    failed = [name for name, r in summary["checks"].items() if not r["ok"]]
    summary.update(status="fail" if failed else "pass", failed=failed, seconds=round(time.perf_counter() - started, 1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
