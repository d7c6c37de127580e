"""A blind human A/B test inside notebook 04: two answers, shown in a random order, and three buttons.

The person labelling never sees which model wrote which answer. Every click is saved at once (atomic
write) to a JSON file named after the two models and the exact answers compared, so re-running the
notebook continues where the labelling stopped and never overwrites labels of other answers. The
labels become a :class:`dpo_lab.evaluation.judges.Comparison`, counted exactly like any other judge's verdicts.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import time
from pathlib import Path

from ..infra.atomic import atomic_write_text
from .judges import Comparison, Judgment

CHOICES = {"left": "左邊較好 (A)", "right": "右邊較好 (B)", "tie": "差不多 (平手)"}


class HumanABJudge:
    """Blind A/B labelling of ``model_a`` vs ``model_b`` on the same prompts; labels saved under ``folder``."""

    def __init__(
        self,
        prompts: list[str],
        answers_a: list[str],
        answers_b: list[str],
        *,
        model_a: str,
        model_b: str,
        folder: str | Path,
        seed: int = 0,
        repeat_swapped: int = 0,
    ):
        """``repeat_swapped``: after the ``len(prompts)`` pairs, show the first k again with left and right swapped,
        so :meth:`position_flips` can measure position bias (a verdict that follows the side, not the answer)."""
        if not (len(prompts) == len(answers_a) == len(answers_b)):
            raise ValueError(
                f"{len(prompts)} prompts, {len(answers_a)} answers of {model_a}, {len(answers_b)} of {model_b}"
            )
        if not prompts:
            raise ValueError("HumanABJudge needs at least one prompt")
        self.prompts, self.answers_a, self.answers_b = prompts, answers_a, answers_b
        self.model_a, self.model_b = model_a, model_b
        task = hashlib.sha256(
            json.dumps([prompts, answers_a, answers_b], ensure_ascii=False).encode("utf-8")
        ).hexdigest()[:12]
        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{model_a}_vs_{model_b}")
        self.path = Path(folder) / f"{slug}_{task}.json"
        rng = random.Random(seed)
        n, repeats = len(prompts), max(0, min(int(repeat_swapped), len(prompts)))
        self.pair = list(range(n)) + list(range(repeats))  # shown item -> pair index (repeats come last)
        self.a_left = [rng.random() < 0.5 for _ in prompts]  # the blind order, fixed by the seed
        self.a_left += [not self.a_left[i] for i in range(repeats)]
        self.labels: dict[int, str] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.labels = {int(row["index"]): row["choice"] for row in saved["labels"]}
        self._widget = None

    # ------------------------------------------------------------------ labels
    def next_index(self) -> int | None:
        return next((i for i in range(len(self.pair)) if i not in self.labels), None)

    def record(self, index: int, choice: str) -> None:
        """Store one verdict (``left`` / ``right`` / ``tie`` as SHOWN on screen) and save the file atomically."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {list(CHOICES)}, got {choice!r}")
        if not 0 <= index < len(self.pair):
            raise IndexError(
                f"item {index} does not exist ({len(self.prompts)} prompts, {len(self.pair) - len(self.prompts)} "
                "repeats)"
            )
        self.labels[index] = choice
        rows = [
            {"index": i, "pair": self.pair[i], "choice": c, "model_left": self._left(i), "winner": self._winner(i, c)}
            for i, c in sorted(self.labels.items())
        ]
        payload = {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "n_prompts": len(self.prompts),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "labels": rows,
        }
        atomic_write_text(self.path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")

    def _left(self, i: int) -> str:
        return self.model_a if self.a_left[i] else self.model_b

    def _winner(self, i: int, choice: str) -> str:
        if choice == "tie":
            return "tie"
        return "A" if (choice == "left") == self.a_left[i] else "B"

    def comparison(self) -> Comparison:
        """The labels so far, in model terms (A = ``model_a``), like any judge's
        :func:`dpo_lab.evaluation.judges.compare`.
        """
        result = Comparison(judge="human A/B", n_requested=len(self.prompts))
        for i, choice in sorted(self.labels.items()):
            if i >= len(self.prompts):  # a swapped repeat: counted by position_flips(), not twice in the win rate
                continue
            result.judgments.append(
                Judgment(
                    index=i,
                    winner=self._winner(i, choice),
                    shown_first="A" if self.a_left[i] else "B",
                    score_a=None,
                    score_b=None,
                )
            )
        return result

    def position_flips(self) -> tuple[float | None, int]:
        """Share of repeated pairs whose winner (in MODEL terms) changed when left and right were swapped, and how many.

        A person who judges the answers gives the same winner both times (0 %); one who always clicks
        the left answer flips every time (100 %).
        """
        n = len(self.prompts)
        both = [
            (self._winner(j - n, self.labels[j - n]), self._winner(j, self.labels[j]))
            for j in range(n, len(self.pair))
            if j in self.labels and (j - n) in self.labels
        ]
        return (sum(a != b for a, b in both) / len(both) if both else None), len(both)

    # ------------------------------------------------------------------ the notebook widget
    def widget(self):
        """An ipywidgets panel: the prompt, the two answers side by side (blind), and A / B / tie buttons."""
        import ipywidgets as w

        status, question = w.HTML(), w.HTML()
        left, right = (w.HTML(layout=w.Layout(width="49%", border="1px solid #bbb", padding="6px")) for _ in range(2))
        buttons = [w.Button(description=label, layout=w.Layout(width="auto")) for label in CHOICES.values()]

        def show() -> None:
            i = self.next_index()
            done = len(self.labels)
            status.value = f"<b>已標註 {done} / {len(self.pair)}</b>（存於 <code>{html.escape(str(self.path))}</code>）"
            if i is None:
                question.value, left.value, right.value = "<b>全部完成，謝謝！</b>", "", ""
                for b in buttons:
                    b.disabled = True
                return
            p = self.pair[i]
            a, b = self.answers_a[p], self.answers_b[p]
            shown = (a, b) if self.a_left[i] else (b, a)
            question.value = f"<pre style='white-space:pre-wrap'>{html.escape(self.prompts[p].strip())}</pre>"
            left.value = f"<b>A</b><pre style='white-space:pre-wrap'>{html.escape(shown[0])}</pre>"
            right.value = f"<b>B</b><pre style='white-space:pre-wrap'>{html.escape(shown[1])}</pre>"

        def on_click(choice: str):
            def handler(_button) -> None:
                i = self.next_index()
                if i is not None:
                    self.record(i, choice)
                show()

            return handler

        for button, choice in zip(buttons, CHOICES):
            button.on_click(on_click(choice))
        show()
        self._widget = w.VBox([status, question, w.HBox([left, right]), w.HBox(buttons)])
        self._buttons = dict(zip(CHOICES, buttons))
        return self._widget


def human_win_rate_row(
    human, model: str, judged, primary: str, judge_prompts, *, seed: int, log=print, win_rate_fn=None
):
    """Your A/B labels of ``model`` as one more win-rate row (None before any click), logged next to what the
    primary judge (``judged``: its comparison of ``model`` with SFT) said on the very same pairs."""
    from .headtohead import win_rate_row
    from .trust import prompt_clusters
    from .winrate import win_rate

    result = human.comparison()
    log(result.report())
    flips, n_repeated = human.position_flips()
    if n_repeated:
        log(
            f"position flips: your verdict followed the side, not the answer, in {flips:.0%} of {n_repeated}"
            " swapped repeats"
        )
    if not result.judgments:
        log("no human labels yet: use the buttons above, then run this cell again")
        return None
    win_rate_fn = win_rate_fn or win_rate
    clusters = prompt_clusters(judge_prompts)  # the human's pairs are the first judged prompts
    row = win_rate_row(model, result, clusters=clusters, seed=seed, win_rate_fn=win_rate_fn)
    labelled = {h.index for h in result.judgments}
    same = win_rate_fn([j.winner for j in judged.judgments if j.index in labelled])
    log(
        f"you: {model} wins {row['win_rate']:.0%} [{row['win_ci_low']:.0%}, {row['win_ci_high']:.0%}]"
        f" of {row['n_judged']} pairs; {primary} on the same pairs: {same:.0%}"
    )
    return row
