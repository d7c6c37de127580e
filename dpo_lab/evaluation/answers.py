"""Every model's answers to the evaluation prompts, generated once and cached on disk.

Generation is the slow part of evaluation. The cache key is (the model's checkpoint id, the prompts,
the generation settings): re-running notebook 04 after training one more beta generates only that
beta's answers, and a retrained model (a new checkpoint id) can never reuse stale answers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from ..run.layout import ANSWERS_DIR

CACHE_DIR = ANSWERS_DIR  # inside the run folder


def model_id(folder: str | Path) -> str:
    """The checkpoint id recorded in the folder's manifest (changes whenever the model is retrained)."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    return manifest["id"]


def base_model_id(config) -> str:
    """An id for the untrained base model: it is fully determined by the model settings and the seed."""
    fields = {
        k: getattr(config, k) for k in ("model_name", "vocab_size", "n_layer", "n_embd", "n_head", "seed", "max_length")
    }
    return "base-" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _digest(content: dict) -> str:
    """SHA-256 of a cache entry's content: an answer edited by hand (or damaged) is regenerated, never scored."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def cached_answers(
    model_key: str,
    load_model: Callable[[], Any],
    tokenizer,
    prompts: list[str],
    *,
    cache_dir: str | Path,
    device=None,
    progress: bool = False,
    **settings: Any,
) -> list[str]:
    """The model's answers to ``prompts`` (:func:`dpo_lab.evaluation.generation.generate` explains ``settings``),
    from the cache if there.

    ``load_model`` is called only on a cache miss. The cache file holds the prompts too, so a hash
    collision or a hand-edited file is detected instead of silently returning other answers.
    """
    from ..infra.atomic import atomic_write_text
    from .generation import generate

    if not prompts:
        raise ValueError("cached_answers() got an empty list of prompts")
    settings = dict(sorted(settings.items()))  # what decides the answers (device and progress do not)
    key = hashlib.sha256(
        json.dumps([model_key, prompts, settings], sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            content = {k: saved[k] for k in ("model", "settings", "prompts", "answers")}
            if saved["sha256"] != _digest(content):
                print(f"[answers] {path}：內容與它記錄的 SHA-256 不符（被改過或損壞），重新生成")
            elif saved["model"] == model_key and saved["prompts"] == prompts and saved["settings"] == settings:
                return saved["answers"]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # unreadable cache entry: regenerate and overwrite it
    model = load_model()
    answers = generate(model, tokenizer, prompts, device=device, progress=progress, **settings)
    payload = {"model": model_key, "settings": settings, "prompts": prompts, "answers": answers}
    payload["sha256"] = _digest(payload)
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")
    return answers


def collect_answers(
    models: dict[str, Path],
    tokenizer,
    prompts: list[str],
    *,
    run_dir: str | Path,
    base_config=None,
    device=None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, list[str]]:
    """``{model name: answers}`` for every saved model (and the untrained ``base`` if ``base_config`` is given), cached.

    Models are loaded one at a time and only when their answers are not cached yet.
    """
    from ..run.pipeline import build_base_model, load_eval_model

    cache_dir = Path(run_dir) / CACHE_DIR
    out: dict[str, list[str]] = {}
    if base_config is not None:
        out["base"] = cached_answers(
            base_model_id(base_config),
            lambda: build_base_model(base_config, tokenizer).eval(),
            tokenizer,
            prompts,
            cache_dir=cache_dir,
            device=device,
            progress=progress,
            **settings,
        )
    for name, folder in models.items():
        out[name] = cached_answers(
            model_id(folder),
            lambda folder=folder: load_eval_model(folder, device),
            tokenizer,
            prompts,
            cache_dir=cache_dir,
            device=device,
            progress=progress,
            **settings,
        )
    return out


def sanity_answers(
    sft_folder: Path,
    tokenizer,
    prompts: list[str],
    answers_sft: list[str],
    *,
    run_dir: str | Path,
    device=None,
    **settings: Any,
) -> tuple[str, list[str]]:
    """The sanity row's name and answers: SFT sampled again with the next seed (greedy: the same answers, all ties)."""
    if not settings.get("do_sample"):
        return "SFT", answers_sft
    again = collect_answers(
        {"SFT": sft_folder},
        tokenizer,
        prompts,
        run_dir=run_dir,
        device=device,
        **{**settings, "seed": settings["seed"] + 1},
    )["SFT"]
    return "SFT (another sample)", again
