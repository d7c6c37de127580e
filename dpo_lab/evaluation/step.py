"""Stage 04 as declared steps: what a step reads, the one result it produces, the report section it renders.

A :class:`Step` is a declaration: ``compute(ctx, view)`` gets the read-only :class:`Context` (the run, its
data, the parameters) and a :class:`View` of exactly the results it declared in ``reads`` (required) and
``uses`` (optional: None when that step is not registered or has not run). The runner
(:class:`dpo_lab.evaluation.stage.Evaluation`) orders the steps from these declarations, keeps each result,
and saves and renders it: a table as ``04_eval/<file>.csv``, a figure as ``figures/<file>.png``, a
report section from ``section``. A step whose table is one row per model declares ``joins_summary``: the
summary table (``04_eval/summary.csv``) is the join of those, and ``reads=("summary",)`` means all of them.

Adding a metric = one module that defines its ``STEP`` + one line in :data:`dpo_lab.evaluation.steps.STEPS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

SUMMARY = "summary"  # the virtual result every summary-joining step feeds


@dataclass(frozen=True)
class Context:
    """What every step may read and none may change: the run, its data, the parameters, where to compute."""

    run_dir: Path
    prepared: Any  # dpo_lab.run.prepare.PreparedData
    config: Any  # dpo_lab.run.LabConfig
    models: Mapping[str, Path]  # "SFT" and every finished DPO run (discover_models), in 04's order
    params: Mapping[str, Any]  # the evaluation settings (run.config.eval_settings)
    device: Any = None
    progress: bool = True
    log: Callable[[str], Any] = print

    @property
    def tokenizer(self):
        return self.prepared.tokenizer

    @property
    def splits(self) -> dict[str, list[dict[str, Any]]]:
        return self.prepared.splits

    @property
    def dpo_models(self) -> list[str]:
        """Every trained run compared here (each loss variant and round), as discover_models found them."""
        return [m for m in self.models if m != "SFT"]

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
        from ..infra.device import pick_device
        from ..infra.precision import choose_precision

        precision = choose_precision(pick_device(self.device), self.config.precision).name
        return {
            **decoding_settings(self.params["temperature"], self.params["max_new_tokens"], self.config.seed),
            "precision": precision,
        }


def decoding_settings(temperature: float, max_new_tokens: int, seed: int) -> dict[str, Any]:
    """Generation settings for judged answers: greedy at temperature 0, otherwise seeded sampling at that
    temperature.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return {"max_new_tokens": max_new_tokens, "do_sample": False}
    return {"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": temperature, "seed": seed}


@dataclass(frozen=True)
class Step:
    """One step of stage 04, declared.

    ``kind``: ``"table"`` (saved as ``<file>.csv`` unless it joins the summary), ``"figure"`` (saved as
    ``figures/<file>.png``) or ``"value"`` (kept, not saved on its own). ``section(result, view)`` returns the
    report's lines for it, placed by ``section_order``. ``joins_summary(summary, result)`` adds its per-model
    columns to the summary. ``show(result, view)`` is what notebook 04's cell displays (default: the result), over
    every result so far.
    ``options``: keyword options the runner passes through (e.g. the judge's ``win_rate_fn``). ``notes``: lines
    for the report's notes; ``saves``: the tables a ``value`` result writes.
    """

    name: str
    compute: Callable[..., Any]
    reads: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    kind: str = "table"
    file: str | None = None
    section: Callable[[Any, View], list[str]] | None = None
    section_order: float = 100.0
    joins_summary: Callable[[Any, Any], Any] | None = None
    show: Callable[[Any, View], Any] | None = None
    options: tuple[str, ...] = ()
    notes: Callable[[Any], list[str]] | None = None
    saves: Callable[[Any], dict[str, Any]] | None = None  # the tables a "value" result saves (default: none)

    def saved_tables(self, result: Any) -> dict[str, Any]:
        """``{file name: table}`` this step's result adds to ``04_eval/`` (a per-model table goes into the summary)."""
        if result is None:
            return {}
        if self.saves is not None:
            return self.saves(result)
        if self.kind == "table" and self.joins_summary is None:
            return {self.file or self.name: result}
        return {}

    def __post_init__(self):
        if self.kind not in ("table", "figure", "value"):
            raise ValueError(f"step {self.name!r}: kind must be table, figure or value, got {self.kind!r}")


@dataclass(frozen=True)
class View:
    """The results a step declared, read-only; ``summary`` joins the summary-joining steps among them."""

    ctx: Context
    results: Mapping[str, Any]
    joiners: tuple[Step, ...] = field(default=())

    def __getitem__(self, name: str) -> Any:
        if name not in self.results:
            raise KeyError(f"{name!r} is not among the results this step declared ({', '.join(self.results)})")
        return self.results[name]

    def get(self, name: str, default: Any = None) -> Any:
        value = self.results.get(name)
        return default if value is None else value

    @property
    def summary(self):
        """One row per model: the first summary-joining step's table, joined with every later one read here."""
        summary = None
        for step in self.joiners:
            result = self.results.get(step.name)
            if result is None:
                continue
            summary = result if summary is None else step.joins_summary(summary, result)
        if summary is None:
            raise KeyError("no per-model table has been computed yet")
        return summary

    @property
    def focus(self) -> str:
        """The DPO run the cases, the verdict and the human A/B test look at: the course rule's pick, else the first."""
        return self.results.get("course_rule") or self.ctx.dpo_models[0]


def run_order(steps: list[Step]) -> list[Step]:
    """The steps ordered so that each comes after everything it reads or uses; otherwise as registered.

    Errors name a step that reads something no step produces, a name registered twice, or a cycle.
    """
    by_name: dict[str, Step] = {}
    for step in steps:
        if step.name in by_name or step.name == SUMMARY:
            raise ValueError(f"step name {step.name!r} is registered twice (or is reserved)")
        by_name[step.name] = step
    joiners = [s.name for s in steps if s.joins_summary is not None]

    def deps(step: Step) -> list[str]:
        out = []
        for name in step.reads + step.uses:
            if name == SUMMARY:
                out += [j for j in joiners if j != step.name]
            elif name in by_name:
                out.append(name)
            elif name in step.reads:
                raise ValueError(f"step {step.name!r} reads {name!r}, which no registered step produces")
        return out

    ordered: list[Step] = []
    done: set[str] = set()
    pending = list(steps)
    while pending:
        ready = next((s for s in pending if set(deps(s)) <= done), None)
        if ready is None:
            raise ValueError(f"the steps {[s.name for s in pending]} read each other in a cycle")
        ordered.append(ready)
        done.add(ready.name)
        pending.remove(ready)
    return ordered


def expand_reads(step: Step, steps: list[Step]) -> list[str]:
    """The names of the results ``step`` may see: its reads and uses, ``summary`` replaced by the joiners."""
    names: list[str] = []
    for name in step.reads + step.uses:
        if name == SUMMARY:
            names += [s.name for s in steps if s.joins_summary is not None and s.name != step.name]
        else:
            names.append(name)
    return list(dict.fromkeys(names))


def view_for(step: Step, steps: list[Step], ctx: Context, results: Mapping[str, Any]) -> View:
    names = expand_reads(step, steps)
    visible = {n: results.get(n) for n in names}
    joiners = tuple(s for s in steps if s.joins_summary is not None and s.name in visible)
    return View(ctx, MappingProxyType(visible), joiners)
