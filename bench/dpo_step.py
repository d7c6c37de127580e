"""Seconds per DPO step: the lab's step vs TRL 1.16's DPOTrainer vs a plain cross-entropy floor, side by side.

    python bench/dpo_step.py                 # 3 configs × 5 variants, 2 alternated rounds (about 12 min on 2 CPU cores)
    python bench/dpo_step.py --quick         # GPT-2-vocab config only, 1 round, 1 timed step, no warm-up (< 1 min)
    python bench/dpo_step.py --configs vocab512 --steps 3 --rounds 1 --json out.json

Every measurement runs in its own process (``--worker``), variants alternate within a round and reverse
order between rounds, and all variants see the same seed, model and batches:

* ``ours_live``      — ``dpo_lab.training.dpo.DPOLoop.train_step`` with a live frozen reference (inference mode);
* ``ours_cached``    — the same step with the reference log-probs precomputed (what notebook 03 does);
* ``trl``            — TRL ``DPOTrainer``, fp32, ``use_cpu`` on CPU, no gradient checkpointing;
* ``trl_precompute`` — the same with ``precompute_ref_log_probs=True``;
* ``floor``          — one policy forward + backward over the same 2B sequences with the model's own
                       cross-entropy loss (every position through the LM head), clipping and AdamW.

Reported per variant: median s/step over all timed steps, tokens/s (non-padding tokens of the 2B rows),
the process's peak RSS, and the step's own peak (RSS high-water mark reset after setup). On CUDA also the
model-FLOPs utilisation: the policy's forward + backward FLOPs of those tokens (PaLM's 6N + 12·L·d·T per
token, the LM head counted in full whatever a variant skips, the reference not counted: the same work for
every variant, so MFU ratios are speed ratios) over the card's dense 16-bit peak. ``--profile-dir`` runs one
more step of each variant under ``torch.profiler`` and writes its top operators there. Prints a
Markdown table per config, writes JSON, and ends with one JSON line for the GPT-2-vocab config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dpo_lab.infra.peak_memory import current_bytes, peak_bytes, reset_peak, rss_mb

CONFIGS = {
    # name: model shape, sequence layout and batch; "tokenizer" says which offline tokenizer feeds it
    "vocab512": dict(
        vocab=512, n_layer=6, n_embd=256, n_head=4, max_length=256, pairs=4, data="long", tokenizer="fixture"
    ),
    "gpt2vocab": dict(
        vocab=50257, n_layer=6, n_embd=256, n_head=4, max_length=256, pairs=4, data="long", tokenizer="corpus"
    ),
    "cpu-profile": dict(
        vocab=4096, n_layer=4, n_embd=256, n_head=4, max_length=256, pairs=8, data="corpus", tokenizer="corpus"
    ),
    # GPT-2 small's shape at the gpu profile's 8 pairs x 512 tokens: for CUDA (scripts/gpu_selfcheck.py)
    "gpt2small": dict(
        vocab=50257, n_layer=12, n_embd=768, n_head=12, max_length=512, pairs=8, data="long", tokenizer="corpus"
    ),
}
CPU_CONFIGS = ["vocab512", "gpt2vocab", "cpu-profile"]  # the default run on a CPU
VARIANTS = ["ours_live", "ours_cached", "trl", "trl_precompute", "floor"]
HEADLINE = "gpt2vocab"


# ----------------------------------------------------------------------------------------------- shared setup


def _tokenizer(kind: str, cache: Path):
    from transformers import AutoTokenizer

    path = cache / f"tokenizer-{kind}"
    if not path.exists():
        if kind == "fixture":
            from dpo_lab.course.grading_fixture import fixture_tokenizer

            tok = fixture_tokenizer()
        else:
            from dpo_lab.run.tokenizers import corpus_tokenizer

            tok = corpus_tokenizer(seed=0, vocab_size=4096)
        tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def _pairs(cfg: dict, tokenizer, n: int) -> list[dict[str, str]]:
    """``n`` pairs: the corpus' own (``data="corpus"``) or corpus text stitched to fill ``max_length`` ("long")."""
    from dpo_lab.data.corpus import build_corpus
    from dpo_lab.data.sources import extract_prompt

    corpus = [
        dict(zip(("prompt", "chosen", "rejected"), extract_prompt(r["chosen"], r["rejected"])))
        for r in build_corpus(0)["pairs_train"][: max(4 * n, 400)]
    ]
    if cfg["data"] == "corpus":
        return corpus[:n]
    out, i = [], 0
    budget = cfg["max_length"]
    for _ in range(n):
        prompt, chosen, rejected = "", "", ""
        while len(tokenizer(prompt)["input_ids"]) < budget * 0.35:  # prompts about a third of the sequence
            prompt += corpus[i % len(corpus)]["prompt"].replace("\n\nAssistant:", "")
            i += 1
        while len(tokenizer(prompt + chosen)["input_ids"]) < budget:  # chosen fills the rest (cut at max_length)
            chosen += corpus[i % len(corpus)]["chosen"]
            i += 1
        while len(tokenizer(prompt + rejected)["input_ids"]) < budget * (
            0.75 + 0.05 * (len(out) % 4)
        ):  # shorter: padding
            rejected += corpus[i % len(corpus)]["rejected"]
            i += 1
        out.append({"prompt": prompt + "\n\nAssistant:", "chosen": chosen, "rejected": rejected})
    return out


def _models(cfg: dict, tokenizer):
    import torch
    from transformers import GPT2LMHeadModel

    from dpo_lab.core.model_modes import disable_dropout
    from dpo_lab.run.models import gpt2_config

    config = gpt2_config(
        cfg["vocab"], cfg["n_layer"], cfg["n_embd"], cfg["n_head"], n_positions=cfg["max_length"], tokenizer=tokenizer
    )
    models = []
    for seed in (0, 1):  # the reference differs from the policy
        torch.manual_seed(seed)
        models.append(disable_dropout(GPT2LMHeadModel(config)))
    return models


# --------------------------------------------------------------------------------------------- one variant, one process


def run_variant(
    variant: str, cfg: dict, steps: int, warmup: int, cache: Path, device: str = "cpu", profile: Path | None = None
) -> dict:
    import torch

    import dpo_lab

    torch.manual_seed(0)
    tokenizer = _tokenizer(cfg["tokenizer"], cache)
    total = warmup + steps + (1 if profile else 0)  # the profiled step comes last and is not timed
    pairs_file = cache / f"pairs-{cfg['data']}-{cfg['tokenizer']}-{cfg['max_length']}-{total * cfg['pairs']}.json"
    if not pairs_file.exists():  # built by the first variant, read by the others: every variant sees the same pairs
        pairs_file.write_text(json.dumps(_pairs(cfg, tokenizer, total * cfg["pairs"])), encoding="utf-8")
    pairs = json.loads(pairs_file.read_text(encoding="utf-8"))
    policy, reference = _models(cfg, tokenizer)
    if device == "cuda":  # TRL moves its models itself; ours run where the batches are
        policy, reference = policy.to(device), reference.to(device)
    examples = dpo_lab.tokenize_pairs(tokenizer, pairs, max_length=cfg["max_length"])
    collate = dpo_lab.PreferenceDataCollator(tokenizer, max_length=cfg["max_length"])
    batches = [
        {k: v.to(device) for k, v in collate(examples[i * cfg["pairs"] : (i + 1) * cfg["pairs"]]).items()}
        for i in range(total)
    ]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    times: list[float] = []
    profiler = _Profiler(profile, total - 1, device) if profile else None
    if variant.startswith("trl"):
        times = _run_trl(
            policy,
            reference,
            tokenizer,
            pairs,
            cfg,
            total,
            precompute=variant == "trl_precompute",
            device=device,
            profiler=profiler,
        )
    else:
        _run_ours_or_floor(variant, policy, reference, batches, times, device=device, profiler=profiler)
    if profiler is not None:
        profiler.write(f"{cfg.get('name', 'config')}-{variant}")  # noqa: E501
    timed = times[warmup : warmup + steps]
    return {
        "variant": variant,
        "seconds": timed,
        "tokens": tokens[warmup : warmup + steps],
        "model_flops_per_token": model_flops_per_token(policy.config, cfg["max_length"]),
        "peak_rss_mb": rss_mb("VmHWM"),
        "step_peak_rss_mb": _STEP_PEAK.get("mb"),
        **({"cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device == "cuda" else {}),
        "setup_rss_mb": _STEP_PEAK.get("setup_mb"),
    }


_STEP_PEAK: dict[str, float] = {}


def model_flops_per_token(config, seq_len: int) -> float:
    """The policy's training FLOPs per token (PaLM, appendix B): 6 x (layer matmul weights + the LM head) for
    forward + backward, plus 12 x layers x width x sequence length for attention's two matmuls."""
    from dpo_lab.run.memory import model_shape

    shape = model_shape(config)
    return 6 * (shape.linear_params + shape.hidden * shape.vocab) + 12 * shape.n_layer * shape.hidden * seq_len


class _Profiler:
    """``torch.profiler`` around one step (``step`` = its index): the operators by self time, as a text table."""

    def __init__(self, folder: Path, step: int, device: str):
        import torch

        self.folder, self.step, self.device = Path(folder), step, device
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.prof = torch.profiler.profile(activities=activities)

    def start(self, step: int) -> None:
        if step == self.step:
            self.prof.start()

    def stop(self, step: int) -> None:
        if step == self.step:
            self.prof.stop()

    def write(self, name: str) -> None:
        sort = "self_cuda_time_total" if self.device == "cuda" else "self_cpu_time_total"
        self.folder.mkdir(parents=True, exist_ok=True)
        table = self.prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)
        (self.folder / f"profile-{name}.txt").write_text(table + "\n", encoding="utf-8")


def _run_ours_or_floor(variant, policy, reference, batches, times, device: str = "cpu", profiler=None) -> None:
    import torch

    from dpo_lab.fast.scored_logprobs import reference_logprobs
    from dpo_lab.training.dpo import DPOLoop
    from dpo_lab.training.optim import build_optimizer, build_scheduler

    device = torch.device(device)
    optimizer = build_optimizer(policy, lr=1e-5)
    scheduler = build_scheduler(optimizer, 0, len(batches), kind="linear")
    if variant == "ours_cached":  # computed once before training, as notebook 03's cache does
        for b in batches:
            b["ref_chosen_logps"], b["ref_rejected_logps"] = (t.clone() for t in reference_logprobs(reference, b))
        reference = None
    trainer = DPOLoop(policy, reference, beta=0.1) if variant != "floor" else None
    _STEP_PEAK["setup_mb"] = current_bytes(device) / 2**20  # VmRSS; on CUDA: allocated
    reset_peak(device)
    for step, batch in enumerate(batches):
        if profiler is not None:
            profiler.start(step)
        t0 = time.perf_counter()
        if trainer is not None:
            trainer.train_step([batch], optimizer, scheduler, 1.0, step, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
        else:  # the floor: a plain LM loss over every position of the same 2B rows
            policy.train()
            optimizer.zero_grad(set_to_none=True)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if profiler is not None:
            profiler.stop(step)
    _STEP_PEAK["mb"] = peak_bytes(device) / 2**20


def _run_trl(
    policy, reference, tokenizer, pairs, cfg, total: int, precompute: bool, device: str = "cpu", profiler=None
) -> list[float]:
    import torch
    from transformers import TrainerCallback

    from dpo_lab.evaluation.trl_compare import parity_trl_trainer, quiet_trl

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            _STEP_PEAK["setup_mb"] = current_bytes(device) / 2**20
            reset_peak(device)

        def on_step_begin(self, args, state, control, **kwargs):
            if profiler is not None:
                profiler.start(state.global_step)
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)
            if profiler is not None:
                profiler.stop(state.global_step - 1)  # TRL counts the step done before this callback

    with tempfile.TemporaryDirectory() as out, quiet_trl():
        trainer = parity_trl_trainer(
            policy,
            reference,
            tokenizer,
            pairs,
            out,
            beta=0.1,
            lr=1e-5,
            batch_size=cfg["pairs"],
            steps=total,
            max_length=cfg["max_length"],
            cuda=device == "cuda",
            callbacks=[StepTimer()],
            precompute_ref_log_probs=precompute,
        )
        trainer.train()
    _STEP_PEAK["mb"] = peak_bytes(device) / 2**20
    return times


# ----------------------------------------------------------------------------------------------- the driver


def _summary(name: str, runs: dict[str, list[dict]], peak_tflops: float | None = None) -> dict:
    rows = {}
    for variant, results in runs.items():
        seconds = [s for r in results for s in r["seconds"]]
        tokens = [t for r in results for t in r["tokens"]]
        median = statistics.median(seconds)
        tokens_per_s = statistics.mean(tokens) / median
        flops = results[0].get("model_flops_per_token")
        rows[variant] = {
            "s_per_step": round(median, 4),
            "tokens_per_s": round(tokens_per_s, 1),
            **({"mfu": round(tokens_per_s * flops / (peak_tflops * 1e12), 4)} if peak_tflops and flops else {}),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
            "step_peak_rss_mb": round(max(r["step_peak_rss_mb"] for r in results), 1),
            "step_extra_mb": round(max(r["step_peak_rss_mb"] - r["setup_rss_mb"] for r in results), 1),
            "n_steps": len(seconds),
        }
    ratios = {}
    if {"trl", "ours_live"} <= rows.keys():
        ratios["speedup_vs_trl"] = round(rows["trl"]["s_per_step"] / rows["ours_live"]["s_per_step"], 2)
        ratios["peak_memory_ratio_vs_trl"] = round(rows["ours_live"]["peak_rss_mb"] / rows["trl"]["peak_rss_mb"], 3)
        ratios["step_memory_ratio_vs_trl"] = round(
            rows["ours_live"]["step_extra_mb"] / max(rows["trl"]["step_extra_mb"], 1.0), 3
        )
    if {"trl_precompute", "ours_cached"} <= rows.keys():
        ratios["speedup_vs_trl_precompute"] = round(
            rows["trl_precompute"]["s_per_step"] / rows["ours_cached"]["s_per_step"], 2
        )
        ratios["peak_memory_ratio_vs_trl_precompute"] = round(
            rows["ours_cached"]["peak_rss_mb"] / rows["trl_precompute"]["peak_rss_mb"], 3
        )
    cuda = all("cuda_peak_mb" in r for results in runs.values() for r in results)
    for ours, theirs in (("ours_live", "trl"), ("ours_cached", "trl_precompute")):
        if cuda and {ours, theirs} <= rows.keys():  # on a GPU the peak that matters is the card's, not RSS
            peak = {v: max(r["cuda_peak_mb"] for r in runs[v]) for v in (ours, theirs)}
            ratios[f"cuda_peak_ratio_{ours}_vs_{theirs}"] = round(peak[ours] / peak[theirs], 3)
    if "floor" in rows:
        for variant in ("ours_cached", "ours_live"):
            if variant in rows:
                key = "ratio_to_floor" if variant == "ours_cached" else "ratio_to_floor_live"
                ratios[key] = round(rows[variant]["s_per_step"] / rows["floor"]["s_per_step"], 3)
    return {"config": name, **CONFIGS[name], "variants": rows, "ratios": ratios}


def _markdown(summary: dict) -> str:
    c = summary
    lines = [
        f"### {c['config']}: vocab {c['vocab']:,}, {c['n_layer']} layers × {c['n_embd']}, max_length {c['max_length']},"
        f" {c['pairs']} pairs per step",
        "",
        "| variant | s / step (median) | tokens / s | peak RSS (MB) | step's own peak over setup (MB) |",
        "|---|---|---|---|---|",
    ]
    for variant, r in c["variants"].items():
        lines.append(
            f"| {variant} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
            f"{r['step_extra_mb']:,.0f} |"
        )
    lines += ["", "ratios: " + ", ".join(f"{k} {v}" for k, v in c["ratios"].items()), ""]
    return "\n".join(lines)


FULL_RESULTS = "bench/dpo_step.json"  # committed: the README's numbers come from it
PARTIAL_RESULTS = "bench/dpo_step.partial.json"


def default_output(
    quick: bool, configs: list[str], variants: list[str], steps: int, warmup: int, rounds: int, device: str = "cpu"
) -> str:
    """Only the full default CPU run may replace the committed results; any other run writes beside them."""
    full = (
        not quick
        and device == "cpu"
        and list(configs) == CPU_CONFIGS
        and list(variants) == list(VARIANTS)
        and (steps, warmup, rounds) == (4, 1, 2)
    )
    return FULL_RESULTS if full else PARTIAL_RESULTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="GPT-2-vocab config, 1 round, 1 timed step, no warm-up (rough)")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default 4; --quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per process (default 1; --quick 0)")
    p.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 2; --quick 1)")
    p.add_argument(
        "--json",
        default=None,
        help=f"where to write every measurement (default: {FULL_RESULTS} for the full "
        f"default run, {PARTIAL_RESULTS} for --quick or any other setting, so the committed results stay)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: step memory is max_memory_allocated")
    p.add_argument("--profile-dir", default=None, help="also profile one step of each variant (torch.profiler) here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    if args.worker:  # one measurement in this process
        cfg = {**CONFIGS[args.config], "name": args.config}
        profile = Path(args.profile_dir) if args.profile_dir else None
        result = run_variant(args.worker, cfg, args.steps, args.warmup or 0, Path(args.cache), args.device, profile)
        print("RESULT " + json.dumps(result))
        return 0

    configs = args.configs or ([HEADLINE] if args.quick else CPU_CONFIGS)
    steps = args.steps or (1 if args.quick else 4)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    rounds = args.rounds or (1 if args.quick else 2)
    output = args.json or default_output(args.quick, configs, args.variants, steps, warmup, rounds, args.device)
    summaries, t_start = [], time.perf_counter()
    peak_tflops = dense_16bit_peak_tflops() if args.device == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="dpo_bench_") as cache:
        for name in configs:
            runs: dict[str, list[dict]] = {v: [] for v in args.variants}
            for r in range(rounds):
                order = args.variants if r % 2 == 0 else list(reversed(args.variants))
                for variant in order:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--worker",
                        variant,
                        "--config",
                        name,
                        "--steps",
                        str(steps),
                        "--warmup",
                        str(warmup),
                        "--cache",
                        cache,
                        "--device",
                        args.device,
                        *(["--profile-dir", args.profile_dir] if args.profile_dir else []),
                    ]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    if proc.returncode != 0 or line is None:
                        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                        raise SystemExit(f"{name}/{variant} failed (exit {proc.returncode})")
                    runs[variant].append(json.loads(line[len("RESULT ") :]))
                    print(
                        f"[{name} round {r + 1}/{rounds}] {variant}: "
                        f"{statistics.median(runs[variant][-1]['seconds']):.3f} s/step",
                        file=sys.stderr,
                        flush=True,
                    )
            summary = _summary(name, runs, peak_tflops)
            summary["runs"] = runs
            summaries.append(summary)
            print(_markdown(summary), flush=True)
    versions = _versions()
    out = {
        "configs": summaries,
        "peak_tflops": peak_tflops,
        **({"matmul_tflops_measured": measured_matmul_tflops()} if args.device == "cuda" else {}),
        "versions": versions,
        "quick": args.quick,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    from dpo_lab.infra.atomic import atomic_write_text

    atomic_write_text(output, json.dumps(out, indent=2) + "\n")
    print(f"measurements -> {output}", file=sys.stderr)
    headline = next((s for s in summaries if s["config"] == HEADLINE), summaries[-1])
    print(
        json.dumps(
            {
                "config": headline["config"],
                **headline["ratios"],
                **{f"{v}_s_per_step": r["s_per_step"] for v, r in headline["variants"].items()},
                "seconds": out["seconds"],
            }
        )
    )
    return 0


# Dense bf16/fp16 tensor-core peaks from the vendors' datasheets (TFLOP/s), by a substring of the device name
DATASHEET_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def dense_16bit_peak_tflops() -> float | None:
    """The card's dense 16-bit peak from :data:`DATASHEET_TFLOPS` (None for a card not listed: no MFU then)."""
    import torch

    name = torch.cuda.get_device_name(0)
    return next((v for k, v in DATASHEET_TFLOPS.items() if k in name), None)


def measured_matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """What one large bf16 matmul reaches on this card: the ceiling MFU is read against in practice."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return round(2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12, 1)


def _versions() -> dict:
    import platform

    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
