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
3b. ``fp16_chain``: the smoke chain again with ``precision=fp16`` forced: the T4 / V100 path (fp16 autocast +
   GradScaler) on this card: finite losses, ln 2 at step 0, cached vs live within fp16's tolerance, the
   scaler's skipped steps and final scale reported.
4. ``memory_plan``: the planner's estimate vs the measured peak (``torch.cuda.max_memory_allocated``) of real
   DPO steps, including GPT-2 small at the gpu profile's 8 pairs x 512 tokens: within 30 % each.
4b. ``card_16gb``: a 16 GB card simulated on this one (``set_per_process_memory_fraction``): GPT-2 small, 512
   tokens: SFT steps at the profile's batch and DPO steps at the planner's recommended micro-batch run, the
   DPO peak within 30 % of the estimate; one size up, GPT-2 large is refused by the planner's message (and
   the same step is then run under the cap to see whether it would really have run out).
4c. ``four_bit_lora``: LoRA on a 4-bit NF4 base with bitsandbytes on this device: smoke 02 and 03, ln 2 at
   step 0, the adapter folder and the merged folder load and generate (skipped without bitsandbytes).
5. ``dpo_step_bench``: seconds per step, tokens/s, model-FLOPs utilisation and peak memory, ours vs TRL
   (cached / precomputed reference and live), on the CPU bench's GPT-2-vocab config and GPT-2 small at
   8 pairs x 512 tokens. Informational: it fails only if a variant fails. ``--profile-dir`` adds a
   ``torch.profiler`` table of one step of each variant.

``--only NAME ...`` runs some of the checks (a GPU session split in two runs, say).

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


def check_smoke_chain(device: str, precision: str = "auto") -> dict:
    import dpo_lab
    from dpo_lab.evaluation.generation import generate
    from dpo_lab.infra.precision import choose_precision
    from dpo_lab.run import pipeline
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    chosen = choose_precision(device, precision)
    with tempfile.TemporaryDirectory(prefix="gpu_selfcheck_") as tmp:
        config = dpo_lab.get_config("smoke", run_dir=tmp, precision=precision)  # 02 and 03 read it from 01_data
        save_prepared_data(prepare_data(config), tmp)
        _, sft = pipeline.run_sft_stage(tmp, device=device, progress=False)
        _, cached = pipeline.run_dpo_stage(tmp, beta=0.1, device=device, progress=False)
        folder, live = pipeline.run_dpo_stage(tmp, beta=0.1, use_cache=False, device=device, progress=False)
        tolerance = 10 * chosen.logits_atol
        losses = [(a["loss"], b["loss"]) for a, b in zip(cached.history, live.history)]
        agree = all(abs(a - b) <= tolerance for a, b in losses)
        step0 = live.initial_eval["eval_loss"]
        model, tok = pipeline.load_eval_model(folder, device), pipeline.load_prepared_data(tmp).tokenizer
        answers = generate(
            model, tok, ["Human: hello\n\nAssistant:"] * 2, max_new_tokens=8, device=device, precision=chosen.name
        )
    rows = sft.history + cached.history + live.history
    finite = all(math.isfinite(r["loss"]) for r in rows)
    ok = finite and agree and abs(step0 - math.log(2)) < 1e-2 and len(answers) == 2
    return {
        "ok": ok,
        "precision": chosen.label,
        "precision_used": cached.args.get("precision_used"),
        "step0_eval_loss": step0,
        "cached_vs_live_max_loss_gap": max(abs(a - b) for a, b in losses),
        "tolerance": tolerance,
        "losses_finite": finite,
        # fp16 only: the GradScaler's steps skipped on overflow, and its scale at the end of each stage
        "skipped_steps": {"sft": sum(bool(r.get("skipped_step")) for r in sft.history),
                          "dpo": sum(bool(r.get("skipped_step")) for r in cached.history + live.history)},
        "final_grad_scale": {"sft": sft.history[-1].get("grad_scale"), "dpo": cached.history[-1].get("grad_scale")},
    }  # fmt: skip


def check_fp16_chain(device: str) -> dict:
    """The T4 / V100 path (fp16 autocast + GradScaler) forced on this card: the same chain, the scaler's record."""
    result = check_smoke_chain(device, precision="fp16")
    result["ok"] = result["ok"] and "GradScaler" in (result["precision_used"] or "")
    return result


def check_card_16gb(device: str, quick: bool) -> dict:
    """The gpu profile's shapes on a simulated 16 GB card: SFT and DPO steps fit, and a size up is refused."""
    if device == "cuda":
        args = ["--card-gib", "16", "--card-models", "gpt2", "gpt2-large", "--seq-len", "512"]
    else:  # the CPU test: the same code on stand-in shapes and a 2 GiB "card"
        args = ["--card-gib", "2", "--card-models", "tiny", "gpt2", "--seq-len", "128"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "card.json"
        _bench_script("memory_plan.py", ["--device", device, *args, "--json", str(out)])
        card = json.loads(out.read_text())
    ok = (
        card["plan"]["fits"]
        and card["sft"]["ran"]
        and card["dpo"]["ran"]
        and "planner_error" in card["bigger_model"]
        and (device != "cuda" or abs(card["dpo"]["error"]) <= PLAN_TOLERANCE)
    )
    return {"ok": bool(ok), **card}


def check_four_bit(device: str) -> dict:
    """LoRA on a 4-bit NF4 base (bitsandbytes' kernels for this device): smoke 02 and 03, both save modes load
    and generate. Skipped (not failed) where bitsandbytes is not installed."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return {"ok": True, "skipped": "bitsandbytes is not installed"}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import dpo_lab
    from dpo_lab.evaluation.generation import generate
    from dpo_lab.run import pipeline
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    seen = {}
    original = pipeline.dpo_train

    def spy(policy, reference, *args, **kwargs):
        layers = [m for m in policy.modules() if isinstance(m, bnb.nn.Linear4bit)]
        seen.update(linear4bit=len(layers), on=str(layers[0].weight.device) if layers else None)
        trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
        seen.update(trainable=len(trainable), only_lora=bool(trainable) and all("lora_" in n for n in trainable))
        return original(policy, reference, *args, **kwargs)

    pipeline.dpo_train = spy
    prompts = ["Human: What is photosynthesis?\n\nAssistant:"] * 2
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_selfcheck_4bit_") as tmp:
            config = dpo_lab.get_config(  # 128 wide: bitsandbytes quantises in blocks of 64 inputs
                "smoke", run_dir=tmp, model_name="scratch", n_embd=128, lora=True, lora_r=8, load_in_4bit=True
            )
            save_prepared_data(prepare_data(config), tmp)
            _, sft = pipeline.run_sft_stage(tmp, device=device, progress=False)
            adapter, result = pipeline.run_dpo_stage(tmp, beta=0.1, device=device, progress=False, lora_save="adapter")
            merged, _ = pipeline.run_dpo_stage(tmp, beta=0.2, device=device, progress=False, lora_save="merged")
            tok = pipeline.load_prepared_data(tmp).tokenizer
            loaded = {
                "adapter, PeftModel on 02_sft": PeftModel.from_pretrained(
                    AutoModelForCausalLM.from_pretrained(Path(tmp) / "02_sft"), adapter
                ),
                "adapter, AutoModelForCausalLM": AutoModelForCausalLM.from_pretrained(adapter),
                "merged": AutoModelForCausalLM.from_pretrained(merged),
            }
            answers = {
                name: generate(model.to(device).eval(), tok, prompts, max_new_tokens=8, device=device)
                for name, model in loaded.items()
            }
            files = {
                "adapter": sorted(p.name for p in adapter.iterdir()),
                "merged": sorted(p.name for p in merged.iterdir()),
            }
    finally:
        pipeline.dpo_train = original
    step0 = result.initial_eval["eval_loss"]
    ok = (
        seen.get("linear4bit", 0) > 0
        and seen.get("on", "").startswith(device)
        and seen.get("only_lora")
        and abs(step0 - math.log(2)) < 1e-2
        and all(math.isfinite(r["loss"]) for r in sft.history + result.history)
        and "adapter_model.safetensors" in files["adapter"]
        and "model.safetensors" in files["merged"]
        and all(len(a) == 2 for a in answers.values())
    )
    return {
        "ok": bool(ok),
        "bitsandbytes": bnb.__version__,
        "linear4bit_layers": seen.get("linear4bit"),
        "weights_on": seen.get("on"),
        "trainable_tensors": seen.get("trainable"),
        "only_lora_trains": seen.get("only_lora"),
        "step0_eval_loss": step0,
        "final_dpo_loss": result.history[-1]["loss"],
        "files": files,
        "answers": {k: v[0][:60] for k, v in answers.items()},
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


def check_dpo_step_bench(device: str, quick: bool, profile_dir: Path | None = None) -> dict:
    configs = ["gpt2vocab"] if quick else ["gpt2vocab", "gpt2small"]
    variants = ["ours_cached", "trl_precompute"] if quick else ["ours_live", "ours_cached", "trl", "trl_precompute"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = ["--device", device, "--configs", *configs, "--variants", *variants, "--rounds", "1", "--json", str(out)]
        if profile_dir is not None:
            args += ["--profile-dir", str(profile_dir)]
        _bench_script("dpo_step.py", [*args, "--steps", "1" if quick else "5", "--warmup", "0" if quick else "2"])
        report = json.loads(out.read_text())
    rows = {}
    for config in report["configs"]:
        for variant, r in config["variants"].items():
            peak = max(run.get("cuda_peak_mb", run["step_peak_rss_mb"]) for run in config["runs"][variant])
            rows[f"{config['config']}/{variant}"] = {
                **{k: r[k] for k in ("s_per_step", "tokens_per_s", "mfu") if k in r},
                "peak_mb": round(peak, 1),
            }
        rows[f"{config['config']}/ratios"] = config["ratios"]
    return {"ok": True, "variants": rows, "peak_tflops": report.get("peak_tflops")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="smaller shapes and one bench config (the CPU test)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run these checks only (names as printed)")
    parser.add_argument("--profile-dir", type=Path, help="dpo_step_bench: also profile one step of each variant here")
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
        ("fp16_chain", lambda: check_fp16_chain(args.device)),
        ("trl_parity", lambda: check_trl_parity(args.device)),
        ("memory_plan", lambda: check_memory_plan(args.device, args.quick)),
        ("card_16gb", lambda: check_card_16gb(args.device, args.quick)),
        ("four_bit_lora", lambda: check_four_bit(args.device)),
        ("dpo_step_bench", lambda: check_dpo_step_bench(args.device, args.quick, args.profile_dir)),
    ]
    unknown = set(args.only or ()) - {name for name, _ in steps}
    if unknown:
        parser.error(f"--only: no check named {', '.join(sorted(unknown))}")
    for name, run in steps:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            result = run()
        except Exception as e:  # a crash is a failed check, with the traceback shown
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        summary["checks"][name] = result
        print(f"{'✅' if result['ok'] else '❌'} {name}（{result['seconds']} 秒）", flush=True)
        if args.json:  # after every check: a run cut short still leaves what it measured
            args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    failed = [name for name, r in summary["checks"].items() if not r["ok"]]
    summary.update(status="fail" if failed else "pass", failed=failed, seconds=round(time.perf_counter() - started, 1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
