"""Stage 04: the runner of the declared steps (:data:`dpo_lab.evaluation.steps.STEPS`), and ``04_eval/``.

Notebook 04 runs one step per cell (``ev.step("heldout")``) and ``python -m dpo_lab evaluate`` runs them all
(:meth:`Evaluation.run_all`): one code path, the same numbers. The runner knows no metric by name: it orders
the steps from what they read, keeps their results, joins the per-model tables into the summary, and saves
and renders what each step declares. The models compared are :func:`dpo_lab.evaluation.runs.discover_models`'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..infra.atomic import atomic_directory
from ..infra.manifest import build_manifest, read_manifest
from ..infra.tables import write_table
from ..run.config import eval_settings
from ..run.layout import DATA_DIR, DPO_DIR, EVAL_DIR, FIGURES_DIR, RUN_03
from .runs import discover_models, model_label, run_identities
from .step import Context, Step, View, decoding_settings, expand_reads, run_order, view_for
from .steps import STEPS

__all__ = [
    "Evaluation",
    "decoding_settings",
    "discover_models",
    "evaluate_run",
    "model_label",
    "run_identities",
    "save_evaluation",
]

NO_ORACLE_VERDICT = "（這份資料沒有 corpus-fact oracle：結論以第 5 節主要 judge 的 win rate 與區間為準）"


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


# ---------------------------------------------------------------------------------------------------- the whole of 04
class Evaluation:
    """Stage 04 over one read-only :class:`~dpo_lab.evaluation.step.Context`: runs declared steps, keeps results.

    ``results`` holds each step's result by name; :attr:`summary` joins the per-model ones; :meth:`write`
    saves ``04_eval/`` and the one-page report. ``steps``: the registry (default :data:`.steps.STEPS`).
    """

    def __init__(self, ctx: Context, skipped: list[str], steps: list[Step] | None = None):
        self.ctx = ctx
        self.skipped = skipped
        self.steps = run_order(list(STEPS if steps is None else steps))
        self._by_name = {s.name: s for s in self.steps}
        self.results: dict[str, Any] = {}
        self.human_row: dict[str, Any] | None = None

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
        steps: list[Step] | None = None,
        **params: Any,
    ) -> Evaluation:
        """Load the run, apply ``params`` to its evaluation settings (the LabConfig fields named in
        :data:`dpo_lab.run.config.EVAL_FIELDS`) and find the finished models."""
        from ..infra.seeding import seed_everything
        from ..run.pipeline import open_run

        prepared, config = open_run(run_dir, profile, seed=seed, log=log)
        p = eval_settings(config, **params)
        seed_everything(config.seed)
        models, skipped = discover_models(run_dir)
        for line in skipped:
            log(f"skipped (incomplete or stale, re-run 03 for it): {line}")
        if len(models) == 1:
            raise FileNotFoundError(f"{run_dir}/{DPO_DIR} has no finished DPO run: run {RUN_03} first")
        ctx = Context(Path(run_dir), prepared, config, models, p, device=device, progress=progress, log=log)
        if not ctx.judge_prompts:
            raise ValueError(f"{run_dir}/{DATA_DIR} has no evaluation prompts")
        log(f"models compared: {', '.join(models)}; {len(ctx.judge_prompts)} judged prompts")
        return cls(ctx, skipped, steps)

    # ------------------------------------------------------------------ running steps
    def step(self, name: str, **options: Any):
        """Run step ``name`` — first any step it reads that has not run yet — and return what notebook 04 shows."""
        if name not in self._by_name:
            raise KeyError(f"no step named {name!r}; the steps: {', '.join(self._by_name)}")
        step = self._by_name[name]
        unknown = set(options) - set(step.options)
        if unknown:
            raise TypeError(f"step {name!r} takes no option(s) {sorted(unknown)} (it takes: {list(step.options)})")
        needed = [n for n in expand_reads(step, self.steps) if n not in step.uses or n == name]
        for dep in needed:
            if dep in self._by_name and dep not in self.results:
                self.step(dep)
        view = view_for(step, self.steps, self.ctx, self.results)
        self.results[name] = step.compute(self.ctx, view, **options)
        return step.show(self.results[name], self._view()) if step.show else self.results[name]

    def run_all(self, **options: Any) -> Evaluation:
        """Every step, in the order their declarations give (without the human A/B test, which needs a person).
        ``options`` go to the steps that take them (the judge's ``win_rate_fn``, ``reward_model``, ``llm_judge``)."""
        for step in self.steps:
            self.step(step.name, **{k: v for k, v in options.items() if k in step.options})
        return self

    def _view(self) -> View:
        joiners = tuple(s for s in self.steps if s.joins_summary is not None)
        return View(self.ctx, self.results, joiners)

    # ------------------------------------------------------------------ what the notebook reads
    @property
    def config(self):
        return self.ctx.config

    @property
    def models(self) -> dict[str, Path]:
        return dict(self.ctx.models)

    @property
    def splits(self):
        return self.ctx.splits

    @property
    def judge_prompts(self) -> list[str]:
        return self.ctx.judge_prompts

    @property
    def redteam_prompts(self) -> list[str]:
        return self.ctx.redteam_prompts

    @property
    def dpo_models(self) -> list[str]:
        return self.ctx.dpo_models

    @property
    def focus(self) -> str:
        """The DPO run the cases, the verdict and the human A/B test look at: the course rule's pick, else the first."""
        return self._view().focus

    @property
    def summary(self):
        """One row per model: every per-model table computed so far, joined."""
        return self._view().summary

    @property
    def figures(self) -> dict[str, Any]:
        return {
            s.file or s.name: self.results[s.name]
            for s in self.steps
            if s.kind == "figure" and self.results.get(s.name) is not None
        }

    def tables(self) -> dict[str, Any]:
        """Every table the steps computed so far save (one CSV each, and in summary.json), with your A/B row."""
        import pandas as pd

        tables: dict[str, Any] = {}
        for step in self.steps:
            if step.name in self.results:
                tables.update(step.saved_tables(self.results[step.name]))
        if self.human_row is not None and "win_rates" in tables:
            tables["win_rates"] = pd.concat([tables["win_rates"], pd.DataFrame([self.human_row])], ignore_index=True)
        return tables

    def human_ab(self, n: int, repeats: int):
        """The blind A/B test of notebook 04 §8 (a person clicks; labels are saved in ``human_ab/``)."""
        from ..run.layout import HUMAN_AB_DIR
        from .human_ab import HumanABJudge

        return HumanABJudge(
            self.judge_prompts[:n],
            self.results["answers"][self.focus][:n],
            self.results["answers"]["SFT"][:n],
            model_a=self.focus,
            model_b="SFT",
            folder=self.ctx.run_dir / HUMAN_AB_DIR,
            seed=self.config.seed,
            repeat_swapped=repeats,
        )

    def add_human_labels(self, human, win_rate_fn=None) -> dict[str, Any] | None:
        """Your A/B labels as one more win-rate row (None before any click); logs them next to the primary judge."""
        from .human_ab import human_win_rate_row

        judged = self.results["judged"]
        self.human_row = human_win_rate_row(
            human, self.focus, judged["comparisons"][judged["primary"]][self.focus], judged["primary"],
            self.judge_prompts,
            seed=self.config.seed, log=self.ctx.log, win_rate_fn=win_rate_fn,
        )  # fmt: skip
        return self.human_row

    # ------------------------------------------------------------------ the report
    def verdict_markdown(self):
        """04's conclusion as a Markdown object: the verdict step's, or where there is no oracle, where to look."""
        from IPython.display import Markdown

        return Markdown(self.results.get("verdict") or NO_ORACLE_VERDICT)

    def report(self, tables: dict[str, Any] | None = None) -> str:
        """The one-page report: the verdict first, then each computed step's section in its declared order."""
        from .report import build_report, judge_info, models_section, report_head

        judged = self.results.get("judged")
        tables = self.tables() if tables is None else tables
        view = self._view()
        head = report_head(
            headline=self.results.get("verdict"),
            win_rates=tables.get("win_rates") if judged else _empty_win_rates(),
            trained=self.dpo_models,
            primary=judged["primary"] if judged else None,
            pick=self.results.get("course_rule"),
            kl_limit=self.config.course_kl_limit,
            settings={"prompts": len(self.judge_prompts), **self.ctx.settings},
            judge_info=judge_info(judged["judge_accuracy"]) if judged else None,
        )
        ranked = sorted(
            (s.section_order, i, s) for i, s in enumerate(self.steps) if s.section and s.name in self.results
        )
        sections = [s.section(self._reported(s.name, tables), view) for _, _, s in ranked]
        sections.insert(sum(order < 100 for order, _, _ in ranked), models_section(self.summary))
        return build_report(self.ctx.run_dir, head, sections, notes=self.notes())

    def _reported(self, name: str, tables: dict[str, Any]) -> Any:
        """A step's result as the report shows it: the win rates with your A/B row (:meth:`add_human_labels`)."""
        result = self.results[name]
        return {**result, "win_rates": tables["win_rates"]} if name == "judged" else result

    def notes(self) -> list[str]:
        lines = [f"skipped: {s}" for s in self.skipped]
        for step in self.steps:
            if step.notes and self.results.get(step.name) is not None:
                lines += step.notes(self.results[step.name])
        return lines

    def write(self, tables: dict[str, Any] | None = None):
        """``04_eval/`` and the one-page report: returns ``(report, folder)``. Any step not run yet runs first (with
        its defaults), so a notebook with a skipped cell still writes a complete report."""
        from .generation import generations_table

        for step in self.steps:
            if step.name not in self.results:
                self.step(step.name)
        tables = self.tables() if tables is None else tables
        report = self.report(tables)
        helpful = (self.judge_prompts, self.results.get("answers") or {})
        redteam = (self.redteam_prompts, self.results.get("redteam_answers") or {})
        update_model_cards(self.models, self.summary, self.results.get("judged"), self.results.get("methods"))
        judged = self.results.get("judged") or {}
        out = save_evaluation(
            self.ctx.run_dir,
            self.config,
            summary=self.summary,
            models={k: v for k, v in self.models.items() if k != "SFT"},
            figures=self.figures,
            tables=tables,
            generations=generations_table({"helpful": helpful, "redteam": redteam}),
            report=report,
            extra={
                "course_rule_pick": self.results.get("course_rule"),
                "primary_judge": judged.get("primary"),
                "gold_judge": judged.get("judge_accuracy"),
                "gold_judge_before_fix": judged.get("judge_accuracy_before_fix"),
                "decoding": {"prompts": len(self.judge_prompts), **self.ctx.settings},
                "headline": self.results.get("verdict"),
                **tables,
            },
        )
        return report, out


def update_model_cards(models: dict[str, Path], summary, judged: dict[str, Any] | None, methods) -> None:
    """Rewrite each DPO checkpoint's model card (README.md) with the win rates measured here (the primary judge's
    against SFT and, for a second round, against its first round)."""
    from ..run.model_card import write_model_card

    primary = judged["primary"] if judged else None
    rows = summary.set_index("model")
    for name, folder in models.items():
        if name == "SFT" or primary is None:
            continue
        rates = {}
        if "win_rate_vs_sft" in rows and rows.loc[name, "win_rate_vs_sft"] == rows.loc[name, "win_rate_vs_sft"]:
            row = rows.loc[name]
            rates[f"SFT（{primary}）"] = (
                f"{row['win_rate_vs_sft']:.1%}（95 % 區間 {row['win_ci_low']:.1%}–{row['win_ci_high']:.1%}）"
            )
        if methods is not None and "win_rate_vs_round1" in methods:
            vs = methods.set_index("model")["win_rate_vs_round1"].get(name)
            if vs == vs and vs is not None:
                rates[f"第一輪（{primary}）"] = float(vs)
        write_model_card(folder, read_manifest(folder, produced_by=RUN_03), rates or None)


def _empty_win_rates():
    import pandas as pd

    return pd.DataFrame(columns=["model", "judge", "win_rate"])


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
    ``params`` override the run config's evaluation fields (:data:`dpo_lab.run.config.EVAL_FIELDS`).
    ``reward_model`` (a Hub id or folder; ``"auto"`` = the `gpu` profile's HH-RLHF reward model on `gpu`, none
    otherwise) and ``llm_judge`` (an :class:`dpo_lab.evaluation.judges.LLMJudge`) add rows judged by those judges
    next to the gold judge's.
    """
    import matplotlib.pyplot as plt

    ev = Evaluation.open(run_dir, profile=profile, seed=seed, device=device, progress=progress, log=log, **params)
    ev.run_all(reward_model=reward_model, llm_judge=llm_judge)
    tables = ev.tables()
    report, out = ev.write(tables)
    for fig in ev.figures.values():
        plt.close(fig)
    log(f"saved {out}")
    judged = ev.results["judged"]
    return {
        "summary": ev.summary,
        "report": report,
        "out": out,
        "judge_accuracy": judged["judge_accuracy"],
        "pick": ev.results.get("course_rule"),
        "primary": judged["primary"],
        **tables,
    }
