"""Training-curve figures for notebooks 02 and 03 (inputs: the loops' history lists, or history.jsonl).

Each panel has a title, labelled axes and, where the course gives one, the reference line a student
should compare against (ln 2 at step 0, KL 10 "ideal" / 20 "over-optimised", accuracy 95 %).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .metrics import beta_sweep_rows


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in history if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_sft_history(history: list[dict[str, Any]], title: str = "SFT training"):
    """Train loss (raw and smoothed), held-out loss, and held-out perplexity."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    steps, loss = _series(history, "loss")
    ax_loss.plot(steps, loss, color="tab:blue", alpha=0.25, label="train (per step)")
    ax_loss.plot(steps, _smooth(loss, 20), color="tab:blue", label="train (20-step mean)")
    e_steps, e_loss = _series(history, "eval_loss")
    ax_loss.plot(e_steps, e_loss, "o-", color="tab:orange", label="held-out")
    ax_loss.set(title="Loss on response tokens", xlabel="optimizer step", ylabel="cross-entropy (nats/token)")
    ax_loss.legend()
    p_steps, ppl = _series(history, "eval_perplexity")
    ax_ppl.plot(p_steps, ppl, "o-", color="tab:orange")
    ax_ppl.set(title="Held-out perplexity", xlabel="optimizer step", ylabel="perplexity", yscale="log")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_dpo_history(
    history: list[dict[str, Any]],
    beta: float | None = None,
    window: int = 10,
    initial_eval: dict[str, float] | None = None,
):
    """Six panels: loss, implicit rewards, margin, accuracy, KL, policy log-probs (train = smoothed, held-out = dots).

    ``initial_eval`` (``DPOResult.initial_eval``, or the manifest's ``metrics.initial_eval``) adds the
    held-out point at step 0, where the policy IS the reference: loss ln 2, rewards 0, KL 0.
    """
    import matplotlib.pyplot as plt

    if initial_eval:
        history = [{"step": 0, **initial_eval}] + list(history)

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), constrained_layout=True)
    (ax_loss, ax_rew, ax_margin), (ax_acc, ax_kl, ax_logp) = axes

    def train_and_eval(ax, key, label, color):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, _smooth(values, window), color=color, label=f"{label} (train, {window}-step mean)")
        e_steps, e_values = _series(history, f"eval_{key}")
        if e_steps:
            ax.plot(e_steps, e_values, "o--", color=color, alpha=0.8, label=f"{label} (held-out)")

    train_and_eval(ax_loss, "loss", "loss", "tab:blue")
    ax_loss.axhline(math.log(2), color="gray", ls=":", label="ln 2 (policy = reference)")
    ax_loss.set(title="DPO loss", xlabel="optimizer step", ylabel="loss")
    train_and_eval(ax_rew, "rewards/chosen", "chosen", "tab:green")
    train_and_eval(ax_rew, "rewards/rejected", "rejected", "tab:red")
    ax_rew.axhline(0, color="gray", ls=":")
    ax_rew.set(title="Implicit rewards β·log(π/π_ref)", xlabel="optimizer step", ylabel="reward")
    train_and_eval(ax_margin, "rewards/margins", "margin", "tab:purple")
    ax_margin.axhline(0, color="gray", ls=":")
    ax_margin.set(
        title="Reward margin β·(Δ log-ratio), chosen − rejected",
        xlabel="optimizer step",
        ylabel="reward units (÷ β = nats)",
    )
    train_and_eval(ax_acc, "rewards/accuracies", "accuracy", "tab:olive")
    ax_acc.axhline(0.95, color="tab:red", ls="--", label="95 %: over-fitting the preferences")
    ax_acc.axhline(0.6, color="tab:green", ls=":", label="60 %: course target")
    ax_acc.set(
        title="Reward accuracy (chosen reward > rejected)",
        xlabel="optimizer step",
        ylabel="share of pairs",
        ylim=(-0.02, 1.02),
    )
    k_steps, kl = _series(history, "eval_kl")
    ax_kl.plot(k_steps, kl, "o-", color="tab:brown", label="held-out KL")
    ax_kl.axhline(10, color="tab:orange", ls="--", label="10: keep below")
    ax_kl.axhline(20, color="tab:red", ls="--", label="20: over-optimised")
    ax_kl.set(title="KL(policy ‖ reference), held-out", xlabel="optimizer step", ylabel="nats per response")
    train_and_eval(ax_logp, "logps/chosen", "chosen", "tab:green")
    train_and_eval(ax_logp, "logps/rejected", "rejected", "tab:red")
    ax_logp.set(
        title="Policy log-probs log π(y|x) (both may fall)", xlabel="optimizer step", ylabel="sum of token log-probs"
    )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("DPO training" + (f" (β = {beta:g})" if beta is not None else ""))
    return fig


def plot_overoptimization(
    history: list[dict[str, Any]],
    initial_eval: dict[str, float] | None = None,
    beta: float | None = None,
    window: int = 20,
):
    """The course's three over-optimisation signs on one figure.

    (1) held-out margin against held-out KL along training — the reward the policy buys with its
    distance from the reference (KL > 10 is the caution zone, > 20 over-optimised); (2) train loss
    falling while the held-out loss rises = the preferences are memorised, not learned; (3) the
    ``window``-step train accuracy that the > 95 % rule watches.
    """
    import matplotlib.pyplot as plt

    evals = ([{"step": 0, **initial_eval}] if initial_eval else []) + [r for r in history if "eval_loss" in r]
    fig, (ax_front, ax_gap, ax_acc) = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)

    kl_rows = [r for r in evals if "eval_kl" in r]
    if kl_rows:
        kl = [r["eval_kl"] for r in kl_rows]
        margin = [r["eval_rewards/margins"] / beta if beta else r["eval_rewards/margins"] for r in kl_rows]
        ax_front.plot(kl, margin, "o-", color="tab:purple", label="held-out evaluations")
        for r, x, y in zip(kl_rows, kl, margin):
            if r is kl_rows[0] or r is kl_rows[-1]:
                ax_front.annotate(f"step {r['step']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        right = max(25.0, max(kl) * 1.1)
        ax_front.axvspan(10, 20, color="tab:orange", alpha=0.12, label="KL 10–20: caution")
        ax_front.axvspan(20, right, color="tab:red", alpha=0.12, label="KL > 20: over-optimised")
        ax_front.set_xlim(left=min(0.0, min(kl)), right=right)
        ax_front.legend(fontsize=8)
    else:
        ax_front.text(0.5, 0.5, "no KL measured", ha="center", va="center", transform=ax_front.transAxes)
    ax_front.set(
        title="Margin bought with KL (held-out)",
        xlabel="KL(policy ‖ reference), nats per response",
        ylabel="log-ratio margin, nats" if beta else "reward margin (β-scaled)",
    )

    steps, loss = _series(history, "loss")
    ax_gap.plot(steps, _smooth(loss, window), color="tab:blue", label=f"train ({window}-step mean)")
    ax_gap.plot(
        [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o--", color="tab:orange", label="held-out"
    )
    ax_gap.axhline(math.log(2), color="gray", ls=":", label="ln 2")
    ax_gap.set(title="Train vs held-out DPO loss", xlabel="optimizer step", ylabel="loss")
    ax_gap.legend(fontsize=8)

    steps, acc = _series(history, "rewards/accuracies")
    ax_acc.plot(steps, _smooth(acc, window), color="tab:olive", label=f"train accuracy ({window}-step mean)")
    ax_acc.axhline(0.95, color="tab:red", ls="--", label="95 %: stop (over-fitting)")
    ax_acc.set(
        title="The > 95 % train-accuracy rule", xlabel="optimizer step", ylabel="share of pairs", ylim=(-0.02, 1.02)
    )
    ax_acc.legend(fontsize=8, loc="lower right")
    for ax in (ax_front, ax_gap, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle("Over-optimisation check" + (f" (β = {beta:g})" if beta is not None else ""))
    return fig


def plot_model_comparison(table):
    """Bars per model (SFT and each DPO beta) for held-out accuracy, margin, KL and perplexity (``summarize_runs``
    output).
    """
    import matplotlib.pyplot as plt

    panels = [
        ("heldout_accuracy", "Held-out reward accuracy", "share of pairs", (0.6, "course target: > 0.6")),
        (
            "heldout_reward_margin",
            "Reward margin (TRL's, β-scaled)",
            "β·Δ log-ratio, reward units",
            (0.5, "course target: > 0.5"),
        ),
        ("heldout_logratio_margin", "Log-ratio margin (comparable across β)", "Δ log-ratio, nats", None),
        ("heldout_kl", "KL(policy ‖ SFT), held-out", "nats per response", (10.0, "keep below 10")),
        ("perplexity", "Perplexity on held-out chosen", "perplexity", None),
    ]
    panels = [p for p in panels if p[0] in table.columns]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows), constrained_layout=True, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    labels = list(table["model"])
    colors = ["tab:gray" if m == "SFT" else "tab:blue" for m in labels]
    for ax, (col, title, ylabel, target) in zip(axes.flat, panels):
        values = [float("nan") if v is None else v for v in table[col]]
        bars = ax.bar(labels, values, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        if target is not None:
            ax.axhline(target[0], color="tab:red", ls="--", lw=1, label=target[1])
            ax.legend(fontsize=8, loc="upper left")  # above the SFT bar, which is 0 on these panels
        ax.set(title=title, xlabel="model", ylabel=ylabel)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("SFT vs DPO at each beta")
    return fig


def plot_beta_sweep(table, kl_limit: float = 10.0, pick: str | None = None):
    """The beta sweep in both margin units: why the course rule must compare log-ratio margins.

    Left: log-ratio margin (nats) against held-out KL (nats), one point per beta, the KL < ``kl_limit``
    zone shaded and the rule's pick circled. Right: the same runs with TRL's β-scaled reward margin,
    which grows with β itself. ``table`` is :func:`dpo_lab.evaluation.metrics.summarize_runs` output.
    """
    import matplotlib.pyplot as plt

    dpo = beta_sweep_rows(table).dropna(subset=["heldout_kl", "heldout_reward_margin"]).sort_values("beta")
    fig, (ax_nats, ax_reward) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = (
        (ax_nats, "heldout_logratio_margin", "Log-ratio margin vs KL (the course rule)", "log-ratio margin, nats"),
        (
            ax_reward,
            "heldout_reward_margin",
            "Reward margin vs KL (β-scaled: not comparable)",
            "reward margin = β × nats",
        ),
    )
    right = max(kl_limit * 1.3, float(dpo["heldout_kl"].max()) * 1.15) if len(dpo) else kl_limit * 1.3
    for ax, column, title, ylabel in panels:
        ax.plot(dpo["heldout_kl"], dpo[column], ":", color="tab:blue", alpha=0.6)
        ax.scatter(dpo["heldout_kl"], dpo[column], color="tab:blue", zorder=3)
        for _, row in dpo.iterrows():
            ax.annotate(
                f"β={row['beta']:g}",
                (row["heldout_kl"], row[column]),
                textcoords="offset points",
                xytext=(10, 6),
                fontsize=9,
            )
            if row["model"] == pick and column == "heldout_logratio_margin":
                ax.scatter(
                    [row["heldout_kl"]],
                    [row[column]],
                    s=260,
                    facecolors="none",
                    edgecolors="tab:green",
                    lw=2,
                    label="course rule's pick",
                    zorder=4,
                )
        ax.axvspan(0, kl_limit, color="tab:green", alpha=0.08, label=f"KL < {kl_limit:g}: allowed")
        ax.set(title=title, xlabel="held-out KL(policy ‖ SFT), nats per response", ylabel=ylabel, xlim=(0, right))
        if len(dpo):  # room above the highest point for its label and the pick's circle
            ax.set_ylim(min(0.0, float(dpo[column].min()) * 1.2), max(0.1, float(dpo[column].max()) * 1.22))
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("Beta sweep: the margin each beta reached, and the KL it cost")
    return fig


def plot_reward_kl_frontier(table, reward: str = "gold_reward", label: str = "gold-judge reward (mean over prompts)"):
    """Gold reward against sampled KL(policy ‖ SFT), one point per model: what each beta buys with its distance.

    ``table`` needs ``model``, ``sampled_kl`` and the ``reward`` column (and optionally the ``*_stderr``
    columns). The DPO paper's Figure 2 draws the same frontier with its known reward; on the
    offline corpus that is the oracle's quality (``reward="oracle_helpfulness_1_5"``). Up-and-left is better.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    for _, row in table.iterrows():
        color = "tab:gray" if row["model"] == "SFT" else ("tab:brown" if row["model"] == "base" else "tab:blue")
        ax.errorbar(
            row["sampled_kl"],
            row[reward],
            xerr=row.get("sampled_kl_stderr", 0) or 0,
            yerr=row.get(f"{reward}_stderr", 0) or 0,
            fmt="o",
            color=color,
            capsize=3,
        )
        ax.annotate(
            row["model"], (row["sampled_kl"], row[reward]), textcoords="offset points", xytext=(6, 4), fontsize=9
        )
    ordered = table[table["model"] != "base"].sort_values("sampled_kl")
    ax.plot(ordered["sampled_kl"], ordered[reward], ":", color="tab:blue", alpha=0.6)
    ax.axvline(10, color="tab:red", ls="--", lw=1, label="KL 10 (course limit)")
    ax.set(title="Reward vs KL frontier", xlabel="sampled KL(policy ‖ SFT), nats per response", ylabel=label)
    ax.set_xlim(
        left=min(-0.5, float(table["sampled_kl"].min()) - 0.5), right=max(11.0, float(table["sampled_kl"].max()) * 1.15)
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_elo(table):
    """Elo ratings with their bootstrap intervals, best model on top (``dpo_lab.evaluation.elo.elo_ratings`` output)."""
    import matplotlib.pyplot as plt

    ordered = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(table) + 1.6), constrained_layout=True)
    low = (ordered["elo"] - ordered["elo_ci_low"]).clip(lower=0)
    high = (ordered["elo_ci_high"] - ordered["elo"]).clip(lower=0)
    ax.errorbar(ordered["elo"], range(len(ordered)), xerr=[low, high], fmt="o", color="tab:blue", capsize=4)
    for y, value in enumerate(ordered["elo"]):
        ax.annotate(f"{value:.0f}", (value, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_yticks(range(len(ordered)), list(ordered["model"]))
    ax.axvline(1000, color="gray", ls=":", lw=1)
    ax.set(title="Elo ratings (95 % bootstrap interval; SFT = 1000)", xlabel="Elo rating", ylabel="model")
    ax.set_ylim(-0.6, len(ordered) - 0.4)
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_loss_variants(beta: float = 0.1, label_smoothing: float = 0.1, span: float | None = None):
    """Each loss variant of :func:`dpo_lab.core.losses.preference_loss` against the log-ratio margin h, and its slope.

    The slope (−dL/dh) is how hard a pair still pushes: DPO's never reaches 0 (it keeps widening every
    margin), hinge's stops at 1/β, conservative DPO's reaches 0 at the finite margin ln((1−ε)/ε)/β —
    what limits the damage a flipped label can do — and robust DPO's stays above DPO's. IPO is left
    out, as is every variant defined on length-averaged log-probs: a PER-TOKEN margin is another axis altogether.
    """
    import matplotlib.pyplot as plt
    import torch

    from ..core.losses import LOSSES, preference_loss

    span = span or 4.0 / beta
    h = torch.linspace(-span, span, 401, requires_grad=True)
    zero = torch.zeros_like(h)
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, variant in LOSSES.items():
        if variant.average_logps:  # another axis (per-token margins): see the docstring
            continue
        eps = label_smoothing if variant.smoothed else 0.0
        loss = preference_loss(h, zero, zero, zero, beta, kind, label_smoothing=eps)[0]
        (grad,) = torch.autograd.grad(loss.sum(), h)
        label = kind + (f" (ε={eps:g})" if eps else "")
        ax_loss.plot(h.detach(), loss.detach(), label=label)
        ax_grad.plot(h.detach(), -grad, label=label)
    ax_loss.set(title=f"Loss per pair (β = {beta:g})", xlabel="log-ratio margin h (nats)", ylabel="loss")
    ax_grad.set(
        title="How hard the pair still pushes: −dL/dh",
        xlabel="log-ratio margin h (nats)",
        ylabel="−dL/dh",
    )
    ax_grad.axhline(0, color="grey", lw=0.8)
    for ax in (ax_loss, ax_grad):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    fig.suptitle("DPO and its variants as functions of the same margin")
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> Path:
    """Save a figure as PNG atomically (a half-written image never replaces a good one)."""
    import io
    from pathlib import Path

    from ..infra.atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buf.getvalue())
