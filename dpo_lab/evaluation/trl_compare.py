"""Run TRL's ``DPOTrainer`` and the lab's own loop on the same pairs with the same settings, step by step.

Notebook 03 shows this table to prove the hand-written DPO is the real thing; the parity test uses the
same function with a reference that DIFFERS from the policy. Settings that make the two identical
(measured with TRL 1.16): AdamW (0.9, 0.999, eps 1e-8, no weight decay), linear decay to 0 without
warmup, gradient clipping at 1.0, dropout off, batches in data order, fp32 on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ..core.tokenization import tokenize_pairs
from ..infra.device import pick_device
from ..infra.precision import Precision, choose_precision
from ..training.dpo import DPOArgs, dpo_train

METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


@contextlib.contextmanager
def _datasets_progress_off():
    """TRL tokenizes with ``datasets.map``, which draws a progress bar per step of its preprocessing."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


@dataclass
class TRLComparison:
    ours: list[dict[str, Any]]  # our loop's history, one row per step
    trl: list[dict[str, Any]]  # TRL's log_history rows, one per step
    seconds: dict[str, float]  # wall time of each run (training only)

    def table(self, metrics: tuple[str, ...] = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen")):
        """Per-step values side by side: ``<metric> (ours)``, ``<metric> (TRL)`` and the largest |difference|."""
        import pandas as pd

        rows = []
        for step, (a, b) in enumerate(zip(self.ours, self.trl), start=1):
            row: dict[str, Any] = {"step": step}
            for m in metrics:
                row[f"{m} (ours)"], row[f"{m} (TRL)"] = a[m], b[m]
            row["max |ours − TRL|"] = max(abs(a[m] - b[m]) for m in METRICS)
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def worst_abs_diff(self) -> float:
        return max(abs(a[m] - b[m]) for a, b in zip(self.ours, self.trl) for m in METRICS)

    def gaps(self) -> dict[str, float]:
        """The largest |ours − TRL| of each metric over the steps."""
        return {m: max(abs(a[m] - b[m]) for a, b in zip(self.ours, self.trl)) for m in METRICS}

    def accuracy_pairs_differing(self, batch_size: int) -> int:
        """The most pairs in one step judged right on one side and wrong on the other: accuracy is a count, so
        one pair whose margin is within rounding of 0 moves it by 1/batch (on a GPU in 16 bits that happens)."""
        return max(round(abs(a["rewards/accuracies"] - b["rewards/accuracies"]) * batch_size)
                   for a, b in zip(self.ours, self.trl))  # fmt: skip

    def summary(self, batch_size: int) -> str:
        """What notebook 03 prints: each continuous metric's largest gap, and the accuracy's as pairs, apart
        (one max over all metrics would report a flipped pair, 1/batch, as if the losses differed that much)."""
        g = self.gaps()
        relative = max(
            abs(a[m] - b[m]) / max(abs(b[m]), 1e-12)
            for a, b in zip(self.ours, self.trl)
            for m in ("logps/chosen", "logps/rejected")
        )
        flipped = self.accuracy_pairs_differing(batch_size)
        rewards = max(g["rewards/chosen"], g["rewards/rejected"], g["rewards/margins"])
        lines = [
            f"{len(self.ours)} 步中 |ours − TRL| 的最大值：loss {g['loss']:.1e} · rewards {rewards:.1e} · "
            f"log-prob {max(g['logps/chosen'], g['logps/rejected']):.1e}（相對 {relative:.1e}）",
            "rewards/accuracies：每一步都相同"
            if flipped == 0
            else f"rewards/accuracies：最多 {flipped} 個 pair（每個 1/{batch_size}）兩邊判定不同："
            "它們的 margin 接近 0，捨入就能讓正負號翻面",
        ]
        return "\n".join(lines)


@contextlib.contextmanager
def quiet_trl():
    """TRL/transformers print notices (deprecations, CPU training) and datasets draws progress bars: not the lesson
    here.
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _datasets_progress_off():
        warnings.simplefilter("ignore")
        yield


def parity_trl_trainer(
    policy,
    reference,
    tokenizer,
    rows: list[dict[str, str]],
    out_dir: str,
    *,
    beta: float,
    lr: float,
    batch_size: int,
    steps: int,
    max_length: int | None,
    cuda: bool,
    callbacks=(),
    precision: Precision | None = None,
    **extra,
):
    """A TRL ``DPOTrainer`` configured like the lab's loop (the settings in this module's docstring),
    without console output.

    ``extra`` goes to ``DPOConfig`` (e.g. ``precompute_ref_log_probs=True`` in the benchmark).
    """
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback

    config = trl.DPOConfig(
        output_dir=out_dir,
        beta=beta,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        logging_steps=1,
        use_cpu=not cuda,
        **(precision or choose_precision("cuda" if cuda else "cpu")).trl_flags(),  # bf16 / fp16 as our loops
        gradient_checkpointing=False,
        report_to="none",
        train_sampling_strategy="sequential",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        **({"max_length": max_length} if max_length is not None else {}),
        **extra,
    )
    trainer = trl.DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    return trainer


def _train_with_trl(policy, reference, tokenizer, pairs, **settings) -> tuple[list[dict[str, Any]], float]:
    """TRL's DPOTrainer on ``pairs`` (:func:`parity_trl_trainer`): its logged steps and its wall time."""
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    with tempfile.TemporaryDirectory() as out_dir, quiet_trl():
        trainer = parity_trl_trainer(policy, reference, tokenizer, rows, out_dir, **settings)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return [entry for entry in trainer.state.log_history if "rewards/margins" in entry], seconds


def parity_dpo_args(*, beta: float, lr: float, steps: int, batch_size: int, max_length, precision) -> DPOArgs:
    """Our loop set up as :func:`parity_trl_trainer` sets up TRL: one plain DPO run, nothing TRL does not do."""
    return DPOArgs(
        beta=beta,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        grad_accum=1,
        warmup_steps=0,
        schedule="linear",
        betas=(0.9, 0.999),
        max_grad_norm=1.0,
        average_logps=False,
        loss_type="sigmoid",
        label_smoothing=0.0,
        patience=0,
        save_every=0,
        seed=0,
        gradient_checkpointing=False,
        shuffle=False,
        bucket=False,
        eval_every=10**9,
        kl_limit=None,
        train_accuracy_limit=None,
        max_length=max_length,
        progress=False,
        precision=precision.name,
    )


def compare_with_trl(
    make_policy: Callable[[], Any],
    make_reference: Callable[[], Any],
    tokenizer,
    pairs: list[dict[str, Any]],
    *,
    beta: float,
    lr: float,
    steps: int,
    batch_size: int,
    max_length: int | None = None,
    device=None,
    precision: str = "auto",
) -> TRLComparison:
    """Train two fresh copies of the same policy for ``steps`` steps on ``pairs[: steps * batch_size]``:
    one with TRL, one with ours.

    ``make_policy`` / ``make_reference`` return a NEW model each call (each run needs its own copy;
    the reference must be a separate module). Returns both histories and their wall times. ``precision``:
    both runs use :func:`dpo_lab.infra.precision.choose_precision`'s choice (TRL through ``bf16`` / ``fp16``).
    """
    device = pick_device(device)
    chosen = choose_precision(device, precision)
    pairs = list(pairs[: steps * batch_size])
    if len(pairs) < steps * batch_size:
        raise ValueError(f"{steps} steps of {batch_size} pairs need {steps * batch_size} pairs, got {len(pairs)}")
    trl_log, trl_seconds = _train_with_trl(
        make_policy(), make_reference(), tokenizer, pairs, beta=beta, lr=lr, batch_size=batch_size, steps=steps,
        max_length=max_length, cuda=device.type == "cuda", precision=chosen,
    )  # fmt: skip
    args = parity_dpo_args(
        beta=beta, lr=lr, steps=steps, batch_size=batch_size, max_length=max_length, precision=chosen
    )
    t0 = time.perf_counter()
    result = dpo_train(
        make_policy(),
        make_reference(),
        tokenizer,
        tokenize_pairs(tokenizer, pairs, max_length=max_length),
        [],
        args,
        device=device,
    )
    ours_seconds = time.perf_counter() - t0
    if len(trl_log) != len(result.history):
        raise RuntimeError(
            f"TRL logged {len(trl_log)} steps, ours ran {len(result.history)}: the runs are not comparable"
        )
    return TRLComparison(ours=result.history, trl=trl_log, seconds={"ours": ours_seconds, "TRL": trl_seconds})
