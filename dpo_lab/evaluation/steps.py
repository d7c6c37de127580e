"""Every step of stage 04, declared (:class:`dpo_lab.evaluation.step.Step`), and :data:`STEPS`, the registry.

Each function below computes one result from the read-only context and the results it declared; the
registry at the bottom says what each reads, what kind of result it is and where its report section goes.
Notebook 04 runs them one per cell (``ev.step("heldout")``); ``python -m dpo_lab evaluate`` runs them all, in
the order :func:`dpo_lab.evaluation.step.run_order` derives from the declarations.

Adding a metric: write a module with a ``STEP`` (see :mod:`dpo_lab.evaluation.counterfactual`) and add one
line to :data:`STEPS`.
"""

from __future__ import annotations

from typing import Any

from .counterfactual import STEP as COUNTERFACTUAL_STEP
from .counterfactual import pooled_row
from .judging import case_comparisons, judge_answers, length_table, safety_table, with_win_rates
from .methods import first_rounds, method_notes, shipping_checks
from .metrics import (
    beta_sweep_rows,
    course_rule_pick,
    frontier_axis,
    implicit_reward_by_split,
    methods_table,
    perplexity_table,
    sampled_kl_table,
    summarize_runs,
)
from .report import (
    cases_section,
    chosen_longer_section,
    elo_section,
    implicit_by_split_section,
    judged_sections,
    methods_section,
    targets_section,
)
from .runs import run_identities
from .step import SUMMARY, Context, Step, View


def _merge(summary, table):
    return summary.merge(table, on="model")


# ------------------------------------------------------------------ §1-3: no judge needed
def heldout(ctx: Context, view: View):
    """Held-out accuracy, both margins and KL recorded by stage 03, and every model's perplexity."""
    return summarize_runs(dict(ctx.models)).merge(
        perplexity_table(
            dict(ctx.models),
            ctx.tokenizer,
            ctx.splits["pairs_test"][: ctx.params["perplexity_pairs"]],
            max_length=ctx.config.max_length,
            device=ctx.device,
        ),
        on="model",
    )


def implicit_by_split(ctx: Context, view: View):
    """Implicit-reward accuracy and margin on held-out pairs of topics seen in training vs not."""
    table = view["heldout"]
    return implicit_reward_by_split(
        dict(ctx.models),
        ctx.tokenizer,
        ctx.splits["pairs_test"][: ctx.params["n_split_pairs"]],
        {r.get("topic") for r in ctx.splits["pairs_train"]},
        betas={n: b for n, b in zip(table["model"], table["beta"]) if n != "SFT"},
        max_length=ctx.config.max_length,
        device=ctx.device,
    )


def sampled_kl(ctx: Context, view: View):
    """KL(policy ‖ SFT) estimated on the policy's own samples, next to the teacher-forced held-out KL."""
    rows = (ctx.splits["eval_prompts"] + ctx.splits["redteam_prompts"])[: ctx.params["n_kl_prompts"]]
    return sampled_kl_table(
        dict(ctx.models),
        ctx.tokenizer,
        [r["prompt"] for r in rows],
        max_new_tokens=ctx.params["max_new_tokens"],
        seed=ctx.config.seed,
        device=ctx.device,
    )


def model_comparison(ctx: Context, view: View):
    from .plots import plot_model_comparison

    return plot_model_comparison(view.summary)


def course_rule(ctx: Context, view: View) -> str | None:
    """The course rule (largest log-ratio margin with held-out KL under the config's limit), said in words."""
    s, limit = view.summary, ctx.config.course_kl_limit
    pick = course_rule_pick(s, limit)
    for _, row in beta_sweep_rows(s).iterrows():
        excluded = "" if row["heldout_kl"] < limit else f" ← KL ≥ {limit:g}: excluded"
        ctx.log(
            f"{row['model']}: log-ratio margin {row['heldout_logratio_margin']:.2f} nats · reward margin"
            f" {row['heldout_reward_margin']:.3f} (= β × nats) · held-out KL {row['heldout_kl']:.2f}{excluded}"
        )
    if pick is None:
        ctx.log(f"no DPO run has held-out KL < {limit:g}: try a larger beta or a smaller learning rate in 03")
        return None
    row = s.set_index("model").loc[pick]
    ctx.log(
        f"course rule (largest log-ratio margin with KL < {limit:g}) → {pick}:"
        f" {row['heldout_logratio_margin']:.2f} nats, KL {row['heldout_kl']:.2f},"
        f" accuracy {row['heldout_accuracy']:.3f}"
    )
    eligible = beta_sweep_rows(s)[lambda d: d["heldout_kl"] < limit]
    by_reward = eligible.loc[eligible["heldout_reward_margin"].idxmax(), "model"]
    if by_reward != pick:
        ctx.log(
            f"the β-scaled reward margin would have picked {by_reward} instead: comparing reward units across betas"
            " misleads"
        )
    return pick


def beta_sweep(ctx: Context, view: View):
    """The beta sweep plot (None with a single beta: there is no trade-off to see yet)."""
    from .plots import plot_beta_sweep

    s = view.summary
    if len(beta_sweep_rows(s)) <= 1:
        ctx.log("only one beta so far: re-run 03 with another beta (e.g. -p beta 0.5) to see the trade-off")
        return None
    return plot_beta_sweep(s, kl_limit=ctx.config.course_kl_limit, pick=view.get("course_rule"))


# ------------------------------------------------------------------ §4: answers
def answers(ctx: Context, view: View) -> dict[str, list[str]]:
    """Every model's sampled answers to the judged prompts (cached per checkpoint and settings); the base model's
    too when ``include_base`` (it joins the Elo round robin)."""
    from .answers import collect_answers

    return collect_answers(
        dict(ctx.models),
        ctx.tokenizer,
        ctx.judge_prompts,
        run_dir=ctx.run_dir,
        base_config=ctx.config if ctx.params["include_base"] else None,
        device=ctx.device,
        progress=ctx.progress,
        **ctx.settings,
    )


def redteam_answers(ctx: Context, view: View) -> dict[str, list[str]]:
    """Every model's answers to the red-team prompts (empty without red-team prompts)."""
    from .answers import collect_answers

    if not ctx.safety_rows:
        return {}
    return collect_answers(
        dict(ctx.models),
        ctx.tokenizer,
        ctx.redteam_prompts,
        run_dir=ctx.run_dir,
        device=ctx.device,
        progress=ctx.progress,
        **ctx.settings,
    )


def safety(ctx: Context, view: View):
    """Refusal, harmful-compliance and over-refusal rates on the red-team prompts (None without any)."""
    redteam = view["redteam_answers"]
    return safety_table(ctx.safety_rows, redteam) if redteam else None


def _join_safety(summary, table):
    return summary.merge(table[["model", "refusal_rate", "harmful_compliance_rate", "over_refusal_rate"]], on="model")


def lengths(ctx: Context, view: View):
    return length_table({name: view["answers"][name] for name in ctx.models})


def _lengths_section(table, view: View) -> list[str]:
    from .bias import chosen_longer_share

    return chosen_longer_section(chosen_longer_share(view.ctx.splits["pairs_train"]))


# ------------------------------------------------------------------ §5-7: judges
def judged(
    ctx: Context, view: View, *, win_rate_fn=None, reward_model: str | None = "auto", llm_judge=None
) -> dict[str, Any]:
    """Every judgement of §5 (:func:`judge_answers`): win rates, scores, checks; ``notes`` for judge errors."""
    from .answers import sanity_answers
    from .judges import GPU_REWARD_MODEL, RewardModelJudge
    from .trust import mark_labellers

    extra = []
    if reward_model == "auto":
        reward_model = GPU_REWARD_MODEL if ctx.config.profile == "gpu" else None
    if reward_model:
        extra.append(RewardModelJudge(reward_model, device=ctx.device))
    if llm_judge is not None:
        extra.append(llm_judge)
    answers_ = view["answers"]
    sanity = sanity_answers(
        ctx.models["SFT"], ctx.tokenizer, ctx.judge_prompts, answers_["SFT"], run_dir=ctx.run_dir, device=ctx.device,
        **ctx.settings,
    )  # fmt: skip
    result = judge_answers(
        ctx.judge_prompts,
        ctx.eval_rows,
        answers_,
        sanity=dict([sanity]),
        safety_rows=ctx.safety_rows,
        redteam=view["redteam_answers"],
        train_pairs=ctx.splits["pairs_train"][: ctx.params["judge_pairs"]],
        test_pairs=ctx.splits["pairs_test"][:400],
        extra_judges=extra,
        seed=ctx.config.seed,
        win_rate_fn=win_rate_fn,
    )
    held = view["heldout"]
    result["win_rates"] = mark_labellers(result["win_rates"], dict(zip(held["model"], held["labeller"])))
    ctx.log(
        f"primary judge: {result['primary']}; gold judge held-out accuracy {result['judge_accuracy']}"
        f" (before the relevance fix: {result['judge_accuracy_before_fix']})"
    )
    result["notes"] = []
    for _, row in result["win_rates"].iterrows():
        if row["errors"]:
            note = (
                f"{row['judge']} on {row['model']}: {row['n_judged']} of {row['n_requested']} pairs judged,"
                f" {row['errors']} error(s), first: {row['first_error']}"
            )
            result["notes"].append(note)
            ctx.log(note)
    return result


def _join_judged(summary, result):
    from .trust import second_judge

    labellers = dict(zip(summary["model"], summary["labeller"]))
    win_rates, primary = result["win_rates"], result["primary"]
    summary = with_win_rates(summary.merge(result["scores"], on="model", how="left"), win_rates, judge=primary)
    summary["win_rate_vs_sft_second_judge"] = summary["model"].map(second_judge(win_rates, primary, labellers))
    return summary


def verdict(ctx: Context, view: View) -> str | None:
    """The paragraph of 04's conclusion and the report's first lines (:func:`.headline.headline`), for the focus
    model, by the oracle; None where there is no oracle (HH-RLHF)."""
    from .headline import headline, win_breakdown
    from .trust import ORACLE, prompt_clusters

    result = view["judged"]
    if result["primary"] != ORACLE:
        return None
    rates = result["win_rates"]
    oracle = rates[rates["judge"] == ORACLE].set_index("model")
    noise = oracle["win_rate"].drop(labels=list(ctx.models), errors="ignore")
    focus = view.focus
    return headline(
        focus,
        oracle.loc[focus].to_dict(),
        win_breakdown(ctx.judge_prompts, view["answers"][focus], view["answers"]["SFT"]),
        noise=float(noise.iloc[0]) if len(noise) else None,
        counterfactual=pooled_row(view.get("counterfactual"), focus),
        n_topics=len(set(prompt_clusters(ctx.judge_prompts))),
    )


def elo(ctx: Context, view: View):
    """Elo of every model (and the base) from a round robin judged by the primary judge."""
    from .elo import elo_ratings
    from .headtohead import round_robin

    result = view["judged"]
    games, _ = round_robin(
        result["judges"][result["primary"]], ctx.judge_prompts, view["answers"], seed=ctx.config.seed
    )
    return elo_ratings(games, anchor="SFT", seed=ctx.config.seed)


def elo_figure(ctx: Context, view: View):
    from .plots import plot_elo

    return plot_elo(view["elo"])


def methods(ctx: Context, view: View):
    """Every DPO run side by side — DPO at each beta, its variants, second rounds — on the numbers that decide
    between methods; a second round also plays its first round head to head (primary judge)."""
    from .headtohead import win_rate_row
    from .judges import compare

    result, answers_ = view["judged"], view["answers"]
    runs = run_identities(dict(ctx.models))
    vs_round1 = {}
    for name, first in first_rounds(runs, dict(ctx.models)).items():
        comparison = compare(
            result["judges"][result["primary"]],
            ctx.judge_prompts,
            answers_[name],
            answers_[first],
            seed=ctx.config.seed,
        )
        vs_round1[name] = win_rate_row(name, comparison, seed=ctx.config.seed).get("win_rate")
    table = methods_table(view.summary, view["implicit_by_split"], vs_round1)
    for note in method_notes(table, runs, dict(ctx.models)):
        ctx.log(note)
    return table


def frontier(ctx: Context, view: View):
    from .plots import plot_reward_kl_frontier

    return plot_reward_kl_frontier(view.summary, **frontier_axis(view.summary))


def cases(ctx: Context, view: View, *, k: int = 3):
    """The focus model's largest gains and losses over SFT, scored by the primary judge."""
    from .report import success_and_failure_cases

    focus = view.focus
    return success_and_failure_cases(
        ctx.judge_prompts, view["answers"][focus], view["answers"]["SFT"], case_comparisons(view["judged"])[focus], k=k
    )


def targets(ctx: Context, view: View):
    """The course's targets and GPT-2's expected numbers next to this run's (:func:`.trust.targets_table`)."""
    from .trust import targets_table

    return targets_table(view.summary, view.focus)


def shipping(ctx: Context, view: View):
    """The focus model's numbers against what must hold before it is deployed (:func:`.methods.shipping_checks`)."""
    return shipping_checks(view.summary, view.focus, view.get("cases"), kl_limit=ctx.config.course_kl_limit)


def _judged_tables(result: dict[str, Any]) -> dict[str, Any]:
    out = {"win_rates": result["win_rates"], "judge_checks": result["checks"]}
    return out | {k: result[k] for k in ("agreement", "splits", "ceiling") if k in result}


def _sampled_kl_shown(table, view: View):
    return view.summary[["model", "beta", "heldout_kl", "sampled_kl", "sampled_kl_stderr"]]


JUDGE_OPTIONS = ("win_rate_fn", "reward_model", "llm_judge")

STEPS: list[Step] = [
    Step("heldout", heldout, kind="table", joins_summary=_merge),
    Step(
        "implicit_by_split",
        implicit_by_split,
        reads=("heldout",),
        section=lambda t, v: implicit_by_split_section(t),
        section_order=15,
    ),  # fmt: skip
    Step("sampled_kl", sampled_kl, joins_summary=_merge, show=_sampled_kl_shown),
    Step("model_comparison", model_comparison, reads=("heldout", "sampled_kl"), kind="figure"),
    Step("course_rule", course_rule, reads=("heldout",), kind="value"),
    Step("beta_sweep", beta_sweep, reads=("heldout", "course_rule"), kind="figure"),
    Step("answers", answers, kind="value"),
    Step("redteam_answers", redteam_answers, kind="value"),
    Step("safety", safety, reads=("redteam_answers",), joins_summary=_join_safety),
    COUNTERFACTUAL_STEP,
    Step("lengths", lengths, reads=("answers",), joins_summary=_merge, section=_lengths_section, section_order=30),
    Step(
        "judged",
        judged,
        reads=("answers", "redteam_answers", "heldout"),
        kind="value",
        joins_summary=_join_judged,
        section=lambda r, v: judged_sections(r),
        section_order=10,
        options=JUDGE_OPTIONS,
        notes=lambda r: r["notes"],
        saves=_judged_tables,
    ),  # fmt: skip
    Step("verdict", verdict, reads=("judged", "answers", "course_rule"), uses=("counterfactual",), kind="value"),
    Step("elo", elo, reads=("judged", "answers"), section=lambda t, v: elo_section(t), section_order=120),
    Step("elo_figure", elo_figure, reads=("elo",), kind="figure", file="elo"),
    Step(
        "methods",
        methods,
        reads=(SUMMARY, "implicit_by_split", "judged", "answers"),
        section=lambda t, v: methods_section(t),
        section_order=110,
    ),  # fmt: skip
    Step("frontier", frontier, reads=(SUMMARY,), kind="figure", file="reward_kl_frontier"),
    Step(
        "cases",
        cases,
        reads=("judged", "answers", "course_rule"),
        section=lambda t, v: cases_section(t),
        section_order=130,
        options=("k",),
    ),  # fmt: skip
    Step("shipping_checks", shipping, reads=(SUMMARY, "course_rule", "cases"), kind="value"),
    Step("targets", targets, reads=(SUMMARY, "course_rule"), section=lambda t, v: targets_section(t), section_order=20),
]
"""Stage 04's steps. A step registered before what it reads is moved after it (:func:`.step.run_order`)."""
