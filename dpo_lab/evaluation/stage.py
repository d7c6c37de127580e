"""Stage 04: find the finished models, run the evaluation steps (:class:`Evaluation`), write ``04_eval/``.

The measurements live in :mod:`.metrics` (no judge) and :mod:`.judging` (answers and judges); notebook 04
and ``python -m dpo_lab evaluate`` both go through :class:`Evaluation`, so they give the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..infra.atomic import atomic_directory
from ..infra.checkpoints import StaleCheckpointError, verify_checkpoint
from ..infra.device import pick_device
from ..infra.manifest import build_manifest, read_manifest
from ..infra.precision import choose_precision
from ..infra.tables import write_table
from ..run.layout import (
    DATA_DIR,
    DPO_DIR,
    EVAL_DIR,
    FIGURES_DIR,
    RUN_02,
    RUN_03,
    SFT_DIR,
    beta_dirs,
    number_text,
    run_identity,
)
from ..run.pipeline import data_id
from .judging import (
    case_comparisons,
    evaluation_tables,
    judge_answers,
    length_table,
    safety_table,
    with_win_rates,
)
from .methods import first_rounds, method_notes, shipping_checks
from .metrics import (
    COURSE_KL_LIMIT,
    beta_sweep_rows,
    counterfactual_table,
    course_rule_pick,
    frontier_axis,
    implicit_reward_by_split,
    methods_table,
    perplexity_table,
    sampled_kl_table,
    summarize_runs,
)

NO_ORACLE_VERDICT = "（這份資料沒有 corpus-fact oracle：結論以第 5 節主要 judge 的 win rate 與區間為準）"


def model_label(run: dict[str, Any]) -> str:
    """How 04 names a DPO run (:func:`dpo_lab.run.layout.run_identity`): ``DPO β=0.1``, ``IPO β=0.1``,
    ``cDPO ε=0.1 β=0.1``, ``DPO β=0.1 · round 2``. A display name only: nothing parses it back."""
    from ..core.losses import LOSSES

    label = LOSSES[run["loss_type"]].label
    if run["label_smoothing"]:
        label += f" ε={number_text(run['label_smoothing'])}"
    label += f" β={number_text(run['beta'])}"  # two betas never share a label (nor a folder)
    return label + (" · round 2" if run["round"] == 2 else "")


def discover_models(run_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``{"SFT": 02_sft, "DPO β=0.1": 03_dpo/beta_0.1, …}``, and the folders skipped, with why.

    Each run is identified by its manifest (:func:`dpo_lab.run.layout.run_identity`), not its folder's name.
    Order: the DPO (sigmoid) runs by increasing beta, then the loss variants, then the second rounds.
    A DPO folder counts only if it is complete and was trained from the CURRENT 02_sft and 01_data
    (a second round: from its first round as it is now); an incomplete or stale one — or a copy of a run
    already found — is listed in the second value, never silently compared.
    """
    run_dir = Path(run_dir)
    sft = verify_checkpoint(run_dir / SFT_DIR, produced_by=RUN_02, expected_inputs={DATA_DIR: data_id(run_dir)})
    models: dict[str, Path] = {"SFT": run_dir / SFT_DIR}
    skipped: list[str] = []
    found = []
    for folder in beta_dirs(run_dir):
        try:
            run = run_identity(read_manifest(folder, produced_by=RUN_03))
            expected = {DATA_DIR: data_id(run_dir), SFT_DIR: sft["id"]}
            if run["round"] == 2:
                first = folder.parent / run["first_round"]
                expected = {DATA_DIR: expected[DATA_DIR], first.name: read_manifest(first, produced_by=RUN_03)["id"]}
            verify_checkpoint(folder, produced_by=RUN_03, expected_inputs=expected)
        except (FileNotFoundError, StaleCheckpointError) as e:
            skipped.append(f"{folder.name}: {e}")
            continue
        order = (run["round"], run["loss_type"] != "sigmoid", run["loss_type"], run["label_smoothing"], run["beta"])
        found.append((order, model_label(run), folder))
    for _, label, folder in sorted(found):
        if label in models:  # a copied or renamed folder: its manifest says it is a run already compared
            skipped.append(f"{folder.name}: the same run as {models[label].name} ({label}, by its manifest)")
            continue
        models[label] = folder
    return models, skipped


def run_identities(models: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``{model name: run_identity}`` of every DPO run in ``models`` (SFT has none)."""
    return {
        name: run_identity(read_manifest(folder, produced_by=RUN_03))
        for name, folder in models.items()
        if name != "SFT"
    }


def save_evaluation(
    run_dir: str | Path,
    config,
    *,
    summary,
    generations=None,
    figures: dict[str, Any] | None = None,
    models: dict[str, Path] | None = None,
    extra: dict[str, Any] | None = None,
    tables: dict[str, Any] | None = None,
    report: str | None = None,
) -> Path:
    """Write ``04_eval/`` atomically: summary.csv/json, one CSV per extra table, generations.csv, figures/*.png,
    report.md and a manifest. (Human A/B labels live outside, in ``human_ab/``: re-running 04 never touches them.)"""
    from .plots import save_figure

    run_dir = Path(run_dir)
    out = run_dir / EVAL_DIR
    inputs = {}
    for name, folder in (models or {}).items():
        inputs[str(Path(folder).relative_to(run_dir))] = read_manifest(folder, produced_by=RUN_03)["id"]
    betas = [float(b) for b in summary["beta"].dropna()]
    with atomic_directory(out) as tmp:
        write_table(summary, tmp / "summary.csv")
        records = json.loads(summary.to_json(orient="records"))
        extra = {
            k: json.loads(v.to_json(orient="records")) if hasattr(v, "to_json") else v for k, v in (extra or {}).items()
        }
        payload = {"models": list(summary["model"]), "betas": betas, "rows": records, **extra}
        (tmp / "summary.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if generations is not None:
            write_table(generations, tmp / "generations.csv")
        for name, table in (tables or {}).items():
            write_table(table, tmp / f"{name}.csv")
        if report is not None:
            (tmp / "report.md").write_text(report, encoding="utf-8")
        for name, fig in (figures or {}).items():
            save_figure(fig, tmp / FIGURES_DIR / f"{name}.png")
        manifest = build_manifest(EVAL_DIR, config, inputs=inputs, metrics={"betas": betas})
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return out


def write_evaluation(
    run_dir: str | Path,
    config,
    *,
    summary,
    judged: dict[str, Any],
    tables: dict[str, Any],
    pick: str | None,
    models: dict[str, Path],
    settings: dict[str, Any],
    n_prompts: int,
    train_pairs: list[dict[str, Any]],
    figures: dict[str, Any] | None = None,
    generations=None,
    notes: list[str] | None = None,
    headline: str | None = None,
):
    """The one-page report and ``04_eval/`` (atomically), from the tables: returns ``(report, folder)``."""
    from .bias import chosen_longer_share
    from .report import build_report, judge_info

    report = build_report(
        run_dir=run_dir,
        summary=summary,
        win_rates=tables["win_rates"],
        elo=tables.get("elo"),
        cases=tables.get("cases"),
        pick=pick,
        judge_info=judge_info(judged["judge_accuracy"]),
        primary=judged["primary"],
        tables=tables,
        settings={"prompts": n_prompts, **settings},
        data_facts={"chosen_longer_share": chosen_longer_share(train_pairs)},
        notes=notes,
        headline=headline,
    )
    out = save_evaluation(
        run_dir,
        config,
        summary=summary,
        models={k: v for k, v in models.items() if k != "SFT"},
        figures=figures,
        tables=tables,
        generations=generations,
        report=report,
        extra={
            "course_rule_pick": pick,
            "primary_judge": judged["primary"],
            "gold_judge": judged["judge_accuracy"],
            "gold_judge_before_fix": judged["judge_accuracy_before_fix"],
            "decoding": settings,
            "headline": headline,
            **tables,
        },
    )
    return report, out


# ---------------------------------------------------------------------------------------------------- the whole of 04
EVAL_DEFAULTS: dict[str, Any] = dict(
    n_judge_prompts=200,  # held-out helpful prompts: answers judged for win rates, Elo, the frontier
    judge_pairs=2000,  # training pairs the gold judge is fitted on
    max_new_tokens=128,  # complete answers: the corpus' best (structured) answers run up to ~100 tokens
    temperature=0.7,  # answers are sampled (seeded), as in the DPO paper's win-rate evaluations; 0 = greedy
    n_safety=200,  # red-team prompts for the refusal rates
    perplexity_pairs=128,
    n_kl_prompts=32,
    include_base=True,  # the untrained base model joins the Elo round robin
    n_split_pairs=600,  # held-out pairs for accuracy and margin on seen vs held-out topics
    n_counterfactual=60,  # prompts (half helpful, half red-team) asked again with each personal detail
)


def decoding_settings(temperature: float, max_new_tokens: int, seed: int) -> dict[str, Any]:
    """Generation settings for judged answers: greedy at temperature 0, otherwise seeded sampling at that
    temperature.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return {"max_new_tokens": max_new_tokens, "do_sample": False}
    return {"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": temperature, "seed": seed}


@dataclass
class Evaluation:
    """Stage 04, one step at a time. Notebook 04 runs a step per cell and shows its result;
    ``evaluate_run`` (``python -m dpo_lab evaluate``) runs :meth:`run_all`. Both ARE this class: one code
    path, the same numbers. Every step stores what it computed on the object and returns it.
    """

    run_dir: Path
    prepared: Any
    config: Any
    models: dict[str, Path]
    skipped: list[str]
    params: dict[str, Any]
    device: Any = None
    progress: bool = True
    log: Callable[[str], Any] = print
    summary: Any = None
    implicit_by_split: Any = None
    pick: str | None = None
    answers: dict[str, list[str]] | None = None
    redteam: dict[str, list[str]] | None = None
    safety: Any = None
    counterfactual: Any = None
    headline: str | None = None
    lengths: Any = None
    judged: dict[str, Any] | None = None
    elo: Any = None
    cases: Any = None
    methods: Any = None
    human_row: dict[str, Any] | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        *,
        profile: str = "auto",
        seed: int | None = None,
        device=None,
        progress: bool = True,
        log=print,
        **params: Any,
    ) -> Evaluation:
        """Check the parameters (:data:`EVAL_DEFAULTS`), load the run and find the finished models."""
        from ..infra.seeding import seed_everything
        from ..run.pipeline import open_run

        unknown = set(params) - set(EVAL_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown evaluation parameter(s) {sorted(unknown)}; known: {sorted(EVAL_DEFAULTS)}")
        p = {**EVAL_DEFAULTS, **params}
        for key in ("n_judge_prompts", "max_new_tokens", "n_kl_prompts", "perplexity_pairs", "judge_pairs"):
            if int(p[key]) < 1:
                raise ValueError(f"{key} must be >= 1 (got {p[key]})")
        prepared, config = open_run(run_dir, profile, seed=seed, log=log)
        seed_everything(config.seed)
        models, skipped = discover_models(run_dir)
        for line in skipped:
            log(f"skipped (incomplete or stale, re-run 03 for it): {line}")
        if len(models) == 1:
            raise FileNotFoundError(f"{run_dir}/{DPO_DIR} has no finished DPO run: run {RUN_03} first")
        ev = cls(Path(run_dir), prepared, config, models, skipped, p, device=device, progress=progress, log=log)
        if not ev.judge_prompts:
            raise ValueError(f"{run_dir}/{DATA_DIR} has no evaluation prompts")
        log(f"models compared: {', '.join(models)}; {len(ev.judge_prompts)} judged prompts")
        return ev

    # ------------------------------------------------------------------ what every step shares
    @property
    def tokenizer(self):
        return self.prepared.tokenizer

    @property
    def splits(self) -> dict[str, list[dict[str, Any]]]:
        return self.prepared.splits

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        return self.splits["eval_prompts"][: self.params["n_judge_prompts"]]

    @property
    def judge_prompts(self) -> list[str]:
        return [r["prompt"] for r in self.eval_rows]

    @property
    def safety_rows(self) -> list[dict[str, Any]]:
        return self.splits["redteam_prompts"][: self.params["n_safety"]]

    @property
    def redteam_prompts(self) -> list[str]:
        return [r["prompt"] for r in self.safety_rows]

    @property
    def settings(self) -> dict[str, Any]:
        """Decoding settings and the precision generation runs in (bf16 and fp16 answers differ: cached apart)."""
        precision = choose_precision(pick_device(self.device), self.config.precision).name
        return {
            **decoding_settings(self.params["temperature"], self.params["max_new_tokens"], self.config.seed),
            "precision": precision,
        }

    @property
    def focus(self) -> str:
        """The DPO model the cases and the human A/B test look at: the course rule's pick, else the first."""
        return self.pick or self.dpo_models[0]

    @property
    def dpo_models(self) -> list[str]:
        """Every trained run compared here (each loss variant and round), as discover_models found them."""
        return [m for m in self.models if m != "SFT"]

    # ------------------------------------------------------------------ §1-3: no judge needed
    def heldout_metrics(self):
        """Held-out accuracy, both margins and KL recorded by stage 03, and every model's perplexity."""
        self.summary = summarize_runs(self.models).merge(
            perplexity_table(
                self.models,
                self.tokenizer,
                self.splits["pairs_test"][: self.params["perplexity_pairs"]],
                max_length=self.config.max_length,
                device=self.device,
            ),
            on="model",
        )
        return self.summary

    def metrics_by_topic_split(self):
        """Implicit-reward accuracy and margin on held-out pairs of topics seen in training vs not."""
        self.implicit_by_split = implicit_reward_by_split(
            self.models,
            self.tokenizer,
            self.splits["pairs_test"][: self.params["n_split_pairs"]],
            {r.get("topic") for r in self.splits["pairs_train"]},
            betas={n: b for n, b in zip(self.summary["model"], self.summary["beta"]) if n != "SFT"},
            max_length=self.config.max_length,
            device=self.device,
        )
        return self.implicit_by_split

    def add_sampled_kl(self):
        """KL(policy ‖ SFT) estimated on the policy's own samples, next to the teacher-forced held-out KL."""
        rows = (self.splits["eval_prompts"] + self.splits["redteam_prompts"])[: self.params["n_kl_prompts"]]
        kl = sampled_kl_table(
            self.models,
            self.tokenizer,
            [r["prompt"] for r in rows],
            max_new_tokens=self.params["max_new_tokens"],
            seed=self.config.seed,
            device=self.device,
        )
        self.summary = self.summary.merge(kl, on="model")
        return self.summary[["model", "beta", "heldout_kl", "sampled_kl", "sampled_kl_stderr"]]

    def plot_model_comparison(self):
        from .plots import plot_model_comparison

        self.figures["model_comparison"] = plot_model_comparison(self.summary)
        return self.figures["model_comparison"]

    def apply_course_rule(self) -> str | None:
        """The course rule (largest log-ratio margin with held-out KL < 10), said in words; the beta sweep plot."""
        from .plots import plot_beta_sweep

        s = self.summary
        self.pick = course_rule_pick(s)
        for _, row in beta_sweep_rows(s).iterrows():
            excluded = "" if row["heldout_kl"] < COURSE_KL_LIMIT else " ← KL ≥ 10: excluded"
            self.log(
                f"{row['model']}: log-ratio margin {row['heldout_logratio_margin']:.2f} nats · reward margin"
                f" {row['heldout_reward_margin']:.3f} (= β × nats) · held-out KL {row['heldout_kl']:.2f}{excluded}"
            )
        if self.pick is None:
            self.log("no DPO run has held-out KL < 10: try a larger beta or a smaller learning rate in 03")
        else:
            row = s.set_index("model").loc[self.pick]
            self.log(
                f"course rule (largest log-ratio margin with KL < {COURSE_KL_LIMIT:g}) → {self.pick}:"
                f" {row['heldout_logratio_margin']:.2f} nats, KL {row['heldout_kl']:.2f},"
                f" accuracy {row['heldout_accuracy']:.3f}"
            )
            eligible = beta_sweep_rows(s)[lambda d: d["heldout_kl"] < COURSE_KL_LIMIT]
            by_reward = eligible.loc[eligible["heldout_reward_margin"].idxmax(), "model"]
            if by_reward != self.pick:
                self.log(
                    f"the β-scaled reward margin would have picked {by_reward} instead:"
                    " comparing reward units across betas misleads"
                )
        if len(beta_sweep_rows(s)) <= 1:
            self.log("only one beta so far: re-run 03 with another beta (e.g. -p beta 0.5) to see the trade-off")
        else:
            self.figures["beta_sweep"] = plot_beta_sweep(s, kl_limit=COURSE_KL_LIMIT, pick=self.pick)
        return self.pick

    # ------------------------------------------------------------------ §4: answers
    def generate_answers(self) -> dict[str, list[str]]:
        """Every model's sampled answers to the judged and the red-team prompts (cached per checkpoint and settings)."""
        from .answers import collect_answers

        base = self.config if self.params["include_base"] else None
        self.answers = collect_answers(
            self.models,
            self.tokenizer,
            self.judge_prompts,
            run_dir=self.run_dir,
            base_config=base,
            device=self.device,
            progress=self.progress,
            **self.settings,
        )
        self.redteam = (
            collect_answers(
                self.models,
                self.tokenizer,
                self.redteam_prompts,
                run_dir=self.run_dir,
                device=self.device,
                progress=self.progress,
                **self.settings,
            )
            if self.safety_rows
            else {}
        )
        return self.answers

    def safety_rates(self):
        """Refusal, harmful-compliance and over-refusal rates on the red-team prompts."""
        if not self.redteam:
            return None
        self.safety = safety_table(self.safety_rows, self.redteam)
        columns = ["model", "refusal_rate", "harmful_compliance_rate", "over_refusal_rate"]
        self.summary = self.summary.merge(self.safety[columns], on="model")
        return self.safety

    def counterfactual_probe(self):
        """The same prompts asked again with an irrelevant personal detail: does the answer change?"""
        n = self.params["n_counterfactual"]
        rows = self.splits["eval_prompts"][: n // 2] + self.splits["redteam_prompts"][: n - n // 2]
        self.counterfactual = counterfactual_table(
            self.models,
            self.tokenizer,
            rows,
            run_dir=self.run_dir,
            device=self.device,
            progress=self.progress,
            **self.settings,
        )
        return self.counterfactual

    def answer_lengths(self):
        self.lengths = length_table({name: self.answers[name] for name in self.models})
        self.summary = self.summary.merge(self.lengths, on="model")
        return self.lengths

    # ------------------------------------------------------------------ §5-7: judges
    def judge(self, *, win_rate_fn=None, reward_model: str | None = "auto", llm_judge=None) -> dict[str, Any]:
        """Every judgement of §5 (:func:`judge_answers`); the win rates join the summary under the primary judge."""
        from .answers import sanity_answers
        from .judges import GPU_REWARD_MODEL, RewardModelJudge

        extra = []
        if reward_model == "auto":
            reward_model = GPU_REWARD_MODEL if self.config.profile == "gpu" else None
        if reward_model:
            extra.append(RewardModelJudge(reward_model, device=self.device))
        if llm_judge is not None:
            extra.append(llm_judge)
        sanity = sanity_answers(
            self.models["SFT"],
            self.tokenizer,
            self.judge_prompts,
            self.answers["SFT"],
            run_dir=self.run_dir,
            device=self.device,
            **self.settings,
        )
        self.judged = judge_answers(
            self.judge_prompts,
            self.eval_rows,
            self.answers,
            sanity=dict([sanity]),
            safety_rows=self.safety_rows,
            redteam=self.redteam,
            train_pairs=self.splits["pairs_train"][: self.params["judge_pairs"]],
            test_pairs=self.splits["pairs_test"][:400],
            extra_judges=extra,
            seed=self.config.seed,
            win_rate_fn=win_rate_fn,
        )
        from .trust import mark_labellers, second_judge

        labellers = dict(zip(self.summary["model"], self.summary["labeller"]))
        self.judged["win_rates"] = mark_labellers(self.judged["win_rates"], labellers)
        win_rates, primary = self.judged["win_rates"], self.judged["primary"]
        self.summary = with_win_rates(
            self.summary.merge(self.judged["scores"], on="model", how="left"), win_rates, judge=primary
        )
        self.summary["win_rate_vs_sft_second_judge"] = self.summary["model"].map(
            second_judge(win_rates, primary, labellers)
        )
        self.log(
            f"primary judge: {primary}; gold judge held-out accuracy {self.judged['judge_accuracy']}"
            f" (before the relevance fix: {self.judged['judge_accuracy_before_fix']})"
        )
        for _, row in win_rates.iterrows():
            if row["errors"]:
                note = (
                    f"{row['judge']} on {row['model']}: {row['n_judged']} of {row['n_requested']} pairs judged,"
                    f" {row['errors']} error(s), first: {row['first_error']}"
                )
                self.notes.append(note)
                self.log(note)
        return self.judged

    def elo_ratings(self):
        """Elo of every model (and the base) from a round robin judged by the primary judge."""
        from .elo import elo_ratings
        from .headtohead import round_robin
        from .plots import plot_elo

        primary = self.judged["primary"]
        games, _ = round_robin(self.judged["judges"][primary], self.judge_prompts, self.answers, seed=self.config.seed)
        self.elo = elo_ratings(games, anchor="SFT", seed=self.config.seed)
        self.figures["elo"] = plot_elo(self.elo)
        return self.elo

    def compare_methods(self):
        """Every DPO run side by side — DPO at each beta, its variants, second rounds — on the numbers that decide
        between methods; a second round also plays its first round head to head (primary judge)."""
        from .headtohead import win_rate_row
        from .judges import compare

        primary = self.judged["primary"]
        vs_round1 = {}
        runs = run_identities(self.models)
        for name, first in first_rounds(runs, self.models).items():
            result = compare(
                self.judged["judges"][primary],
                self.judge_prompts,
                self.answers[name],
                self.answers[first],
                seed=self.config.seed,
            )
            vs_round1[name] = win_rate_row(name, result, seed=self.config.seed).get("win_rate")
        self.methods = methods_table(self.summary, self.implicit_by_split, vs_round1)
        for note in method_notes(self.methods, runs, self.models):
            self.log(note)
        return self.methods

    def shipping_checks(self):
        """The focus model's numbers against what must hold before it is deployed (:func:`.methods.shipping_checks`)."""
        return shipping_checks(self.summary, self.focus, self.cases)

    def plot_frontier(self):
        from .plots import plot_reward_kl_frontier

        self.figures["reward_kl_frontier"] = plot_reward_kl_frontier(self.summary, **frontier_axis(self.summary))
        return self.figures["reward_kl_frontier"]

    def success_and_failure_cases(self, k: int = 3):
        """The focus model's largest gains and losses over SFT, scored by the primary judge."""
        from .report import success_and_failure_cases

        self.cases = success_and_failure_cases(
            self.judge_prompts,
            self.answers[self.focus],
            self.answers["SFT"],
            case_comparisons(self.judged)[self.focus],
            k=k,
        )
        return self.cases

    def human_ab(self, n: int, repeats: int):
        """The blind A/B test of notebook 04 §8 (a person clicks; labels are saved in ``human_ab/``)."""
        from ..run.layout import HUMAN_AB_DIR
        from .human_ab import HumanABJudge

        return HumanABJudge(
            self.judge_prompts[:n],
            self.answers[self.focus][:n],
            self.answers["SFT"][:n],
            model_a=self.focus,
            model_b="SFT",
            folder=self.run_dir / HUMAN_AB_DIR,
            seed=self.config.seed,
            repeat_swapped=repeats,
        )

    def add_human_labels(self, human, win_rate_fn=None) -> dict[str, Any] | None:
        """Your A/B labels as one more win-rate row (None before any click); logs them next to the primary judge."""
        from .headtohead import win_rate_row
        from .winrate import win_rate

        result = human.comparison()
        self.log(result.report())
        flips, n_repeated = human.position_flips()
        if n_repeated:
            self.log(
                f"position flips: your verdict followed the side, not the answer, in {flips:.0%} of {n_repeated}"
                " swapped repeats"
            )
        if not result.judgments:
            self.log("no human labels yet: use the buttons above, then run this cell again")
            self.human_row = None
            return None
        win_rate_fn = win_rate_fn or win_rate
        from .trust import prompt_clusters

        clusters = prompt_clusters(self.judge_prompts)  # the human's pairs are the first judged prompts
        row = win_rate_row(self.focus, result, clusters=clusters, seed=self.config.seed, win_rate_fn=win_rate_fn)
        labelled = {h.index for h in result.judgments}
        primary = self.judged["primary"]
        same = win_rate_fn(
            [j.winner for j in self.judged["comparisons"][primary][self.focus].judgments if j.index in labelled]
        )
        self.log(
            f"you: {self.focus} wins {row['win_rate']:.0%} [{row['win_ci_low']:.0%}, {row['win_ci_high']:.0%}]"
            f" of {row['n_judged']} pairs; {primary} on the same pairs: {same:.0%}"
        )
        self.human_row = row
        return row

    # ------------------------------------------------------------------ the report
    def verdict(self) -> str | None:
        """The paragraph of 04's conclusion and the report's first lines (:func:`.headline.headline`), for the focus
        model, by the oracle; None where there is no oracle (HH-RLHF)."""
        from .headline import headline, win_breakdown
        from .metrics import ANY_DETAIL
        from .trust import ORACLE, prompt_clusters

        if not self.judged or self.judged["primary"] != ORACLE:
            return None
        rates = self.judged["win_rates"]
        oracle = rates[rates["judge"] == ORACLE].set_index("model")
        noise = oracle["win_rate"].drop(labels=list(self.models), errors="ignore")
        counterfactual = None
        if self.counterfactual is not None and len(self.counterfactual):
            pooled = self.counterfactual[
                (self.counterfactual["prefix"] == ANY_DETAIL) & (self.counterfactual["model"] == self.focus)
            ]
            counterfactual = pooled.iloc[0].to_dict() if len(pooled) else None
        self.headline = headline(
            self.focus,
            oracle.loc[self.focus].to_dict(),
            win_breakdown(self.judge_prompts, self.answers[self.focus], self.answers["SFT"]),
            noise=float(noise.iloc[0]) if len(noise) else None,
            counterfactual=counterfactual,
            n_topics=len(set(prompt_clusters(self.judge_prompts))),
        )
        return self.headline

    def verdict_markdown(self):
        """04's conclusion as a Markdown object: :meth:`verdict`, or where there is no oracle, where to look instead."""
        from IPython.display import Markdown

        return Markdown(self.verdict() or NO_ORACLE_VERDICT)

    def tables(self) -> dict[str, Any]:
        import pandas as pd

        tables = evaluation_tables(
            self.judged,
            summary=self.summary,
            focus=self.focus,
            elo=self.elo,
            cases=self.cases,
            implicit_by_split=self.implicit_by_split,
            counterfactual=self.counterfactual,
            methods=self.methods,
        )
        if self.human_row is not None:
            tables["win_rates"] = pd.concat([tables["win_rates"], pd.DataFrame([self.human_row])], ignore_index=True)
        return tables

    def write(self, tables: dict[str, Any] | None = None):
        """``04_eval/`` and the one-page report: returns ``(report, folder)``."""
        from .generation import generations_table

        if self.headline is None and self.judged:
            self.verdict()
        generations = generations_table(
            {"helpful": (self.judge_prompts, self.answers), "redteam": (self.redteam_prompts, self.redteam)}
        )
        self.update_model_cards()
        return write_evaluation(
            self.run_dir,
            self.config,
            summary=self.summary,
            judged=self.judged,
            tables=tables or self.tables(),
            pick=self.pick,
            models=self.models,
            settings=self.settings,
            n_prompts=len(self.judge_prompts),
            train_pairs=self.splits["pairs_train"],
            figures=self.figures,
            generations=generations,
            notes=[f"skipped: {s}" for s in self.skipped] + self.notes,
            headline=self.headline,
        )

    def update_model_cards(self) -> None:
        """Rewrite each DPO checkpoint's model card (README.md) with the win rates measured here."""
        from ..run.model_card import write_model_card

        primary = self.judged["primary"] if self.judged else None
        rows = self.summary.set_index("model")
        for name, folder in self.models.items():
            if name == "SFT" or primary is None:
                continue
            rates = {}
            if "win_rate_vs_sft" in rows and rows.loc[name, "win_rate_vs_sft"] == rows.loc[name, "win_rate_vs_sft"]:
                row = rows.loc[name]
                rates[f"SFT（{primary}）"] = (
                    f"{row['win_rate_vs_sft']:.1%}（95 % 區間 {row['win_ci_low']:.1%}–{row['win_ci_high']:.1%}）"
                )
            if self.methods is not None and "win_rate_vs_round1" in self.methods:
                vs = self.methods.set_index("model")["win_rate_vs_round1"].get(name)
                if vs == vs and vs is not None:
                    rates[f"第一輪（{primary}）"] = float(vs)
            write_model_card(folder, read_manifest(folder, produced_by=RUN_03), rates or None)

    def run_all(self, *, reward_model: str | None = "auto", llm_judge=None, win_rate_fn=None) -> Evaluation:
        """Every step, in notebook 04's order (without the human A/B test, which needs a person)."""
        self.heldout_metrics()
        self.metrics_by_topic_split()
        self.add_sampled_kl()
        self.plot_model_comparison()
        self.apply_course_rule()
        self.generate_answers()
        self.safety_rates()
        self.counterfactual_probe()
        self.answer_lengths()
        self.judge(win_rate_fn=win_rate_fn, reward_model=reward_model, llm_judge=llm_judge)
        self.verdict()
        self.elo_ratings()
        self.compare_methods()
        self.plot_frontier()
        self.success_and_failure_cases()
        return self


def evaluate_run(
    run_dir: str | Path,
    *,
    profile: str = "auto",
    seed: int | None = None,
    reward_model: str | None = "auto",
    llm_judge=None,
    device=None,
    progress: bool = True,
    log=print,
    **params: Any,
) -> dict[str, Any]:
    """Everything notebook 04 measures, without the notebook: ``python -m dpo_lab evaluate`` runs this.

    Writes ``04_eval/`` (tables as CSV/JSON, figures as PNG, ``report.md``) and returns the tables.
    ``params`` override :data:`EVAL_DEFAULTS`. ``reward_model`` (a Hub id or folder; ``"auto"`` = the
    `gpu` profile's HH-RLHF reward model on `gpu`, none otherwise) and ``llm_judge`` (an
    :class:`dpo_lab.evaluation.judges.LLMJudge`) add rows judged by those judges next to the gold judge's.
    """
    import matplotlib.pyplot as plt

    ev = Evaluation.open(run_dir, profile=profile, seed=seed, device=device, progress=progress, log=log, **params)
    ev.run_all(reward_model=reward_model, llm_judge=llm_judge)
    tables = ev.tables()
    report, out = ev.write(tables)
    for fig in ev.figures.values():
        plt.close(fig)
    log(f"saved {out}")
    return {
        "summary": ev.summary,
        "report": report,
        "out": out,
        "judge_accuracy": ev.judged["judge_accuracy"],
        "pick": ev.pick,
        "primary": ev.judged["primary"],
        **tables,
    }
