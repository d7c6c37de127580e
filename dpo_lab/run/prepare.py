"""Stage 01 — prepare the preference data and hand it to the next notebooks in ``runs/<run>/01_data/``.

The folder holds validated, prompt-split JSONL files, the tokenizer every later stage uses, the
statistics and the skip report, and a manifest. It is written atomically: an interrupted run leaves
the previous ``01_data`` (or nothing), never half a folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.hh_format import with_hh_chat_template
from ..data.sources import SkipReport, count_prompt_tokens, load_preference_data, split_by_prompt
from ..data.stats import statistics_summary
from ..infra.atomic import atomic_directory
from ..infra.manifest import build_manifest, file_hashes, read_manifest, verify_files, write_manifest
from ..infra.tables import write_table
from .config import OFFLINE_SOURCE, LabConfig
from .layout import DATA_DIR, RUN_01

STAGE_DIR = DATA_DIR  # this stage's folder
DATA_FILES = ("pairs_train", "pairs_test", "sft_train", "eval_prompts", "redteam_prompts")


@dataclass
class PreparedData:
    """Everything stage 01 produces, in memory."""

    config: LabConfig
    tokenizer: Any
    splits: dict[str, list[dict[str, Any]]]
    reports: dict[str, SkipReport]

    @property
    def summary(self):
        return statistics_summary(self.splits["pairs_train"], self.tokenizer)


def get_tokenizer(config: LabConfig):
    """The tokenizer of the profile: trained on the offline corpus, or the Hub model's own."""
    from .tokenizers import corpus_tokenizer, ensure_pad_token

    if config.model_name in ("scratch", "tiny-random"):
        return with_hh_chat_template(corpus_tokenizer(seed=config.data_seed, vocab_size=config.vocab_size))
    from transformers import AutoTokenizer

    from .smollm2 import SMOLLM2_ALIAS, convert_smollm2

    name = str(convert_smollm2()) if config.model_name == SMOLLM2_ALIAS else config.model_name
    return with_hh_chat_template(ensure_pad_token(AutoTokenizer.from_pretrained(name)))


def _offline_extras(config: LabConfig, tokenizer) -> dict[str, list[dict[str, Any]]]:
    from ..data.corpus import build_corpus

    corpus = build_corpus(config.data_seed)
    wanted = set(config.dataset_subsets)
    fits = lambda r: count_prompt_tokens(tokenizer, r["prompt"]) < config.max_prompt_length  # noqa: E731
    out = {
        name: [dict(r) for r in corpus[name] if r["subset"] in wanted and fits(r)]
        for name in ("sft_train", "eval_prompts", "redteam_prompts")
    }
    if config.max_pairs is not None:
        out["sft_train"] = out["sft_train"][: config.max_pairs]
        out["eval_prompts"] = out["eval_prompts"][: max(8, config.max_pairs // 4)]
        out["redteam_prompts"] = out["redteam_prompts"][: max(8, config.max_pairs // 4)]
    return out


def _hub_extras(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """HH-RLHF has no SFT split or prompt sets: SFT on the chosen responses; prompts from the test split."""
    sft = [{"prompt": p["prompt"], "response": p["chosen"], "source": p["source"]} for p in train]
    prompts = list({p["prompt"]: p for p in test}.values())
    eval_prompts = [{"prompt": p["prompt"], "source": p["source"]} for p in prompts if "harmless" not in p["source"]]
    redteam = [
        {"prompt": p["prompt"], "source": p["source"], "should_refuse": True}
        for p in prompts
        if "harmless" in p["source"]
    ]
    return {"sft_train": sft, "eval_prompts": eval_prompts, "redteam_prompts": redteam}


def prepare_data(config: LabConfig, *, errors: str = "skip", tokenizer=None) -> PreparedData:
    """Load, validate and split the profile's data (nothing written; see :func:`save_prepared_data`)."""
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer(config)
    common = dict(
        subsets=config.dataset_subsets,
        errors=errors,
        tokenizer=tokenizer,
        max_prompt_length=config.max_prompt_length,
        seed=config.data_seed,
    )
    test_cap = None if config.max_pairs is None else max(16, config.max_pairs // 4)
    if Path(config.dataset).is_file():  # one file has no splits: hold out 10 % of its prompts
        pairs, train_report = load_preference_data(config.dataset, **common)
        train, test = split_by_prompt(pairs, test_share=0.1, seed=config.data_seed)
        train, test = train[: config.max_pairs], test[:test_cap]
        test_report = SkipReport(total=len(test), kept=len(test))
    else:
        train, train_report = load_preference_data(config.dataset, split="train", max_pairs=config.max_pairs, **common)
        test, test_report = load_preference_data(config.dataset, split="test", max_pairs=test_cap, **common)
    extras = _offline_extras(config, tokenizer) if config.dataset == OFFLINE_SOURCE else _hub_extras(train, test)
    leaked = {p["prompt"] for p in train} & {p["prompt"] for p in test}
    if leaked:
        raise ValueError(f"{len(leaked)} prompts appear in both train and test, e.g. {next(iter(leaked))[:80]!r}")
    splits = {"pairs_train": train, "pairs_test": test, **extras}
    return PreparedData(
        config=config, tokenizer=tokenizer, splits=splits, reports={"train": train_report, "test": test_report}
    )


def save_prepared_data(prepared: PreparedData, run_dir: str | Path | None = None) -> Path:
    """Write ``runs/<run>/01_data/`` atomically: JSONL splits, tokenizer, statistics, skip report, manifest."""
    run_dir = Path(run_dir or prepared.config.run_dir)
    out = run_dir / STAGE_DIR
    with atomic_directory(out) as tmp:
        for name in DATA_FILES:
            rows = prepared.splits[name]
            text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
            (tmp / f"{name}.jsonl").write_text(text, encoding="utf-8", newline="\n")
        prepared.tokenizer.save_pretrained(tmp / "tokenizer")
        write_table(prepared.summary, tmp / "statistics.csv")
        frames = []
        for split, report in prepared.reports.items():
            df = report.to_frame()
            df.insert(0, "split", split)
            frames.append(df)
        import pandas as pd

        write_table(pd.concat(frames), tmp / "skip_report.csv")
        metrics = {f"{name}_rows": len(prepared.splits[name]) for name in DATA_FILES}
        metrics.update({f"skipped_{split}": dict(r.skipped) for split, r in prepared.reports.items()})
        # the id covers the CONTENT (every file's SHA-256): other data → another id → later stages are stale
        write_manifest(tmp, build_manifest(STAGE_DIR, prepared.config, metrics=metrics, files=file_hashes(tmp)))
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({e}); re-run {RUN_01}.") from None
    return rows


def load_prepared_data(run_dir: str | Path) -> PreparedData:
    """Read ``runs/<run>/01_data/`` back (the start of notebooks 02 and 03)."""
    from transformers import AutoTokenizer

    from .config import get_config

    folder = Path(run_dir) / STAGE_DIR
    manifest = read_manifest(folder, produced_by=RUN_01)
    verify_files(folder, manifest, produced_by=RUN_01)  # an edited, truncated or half-copied file is named here
    cfg = manifest["config"]
    cfg.pop("extras", None)  # a field that was never read (always {}), in folders written before it was removed
    config = get_config(cfg.pop("profile"), **cfg)
    splits = {name: _read_jsonl(folder / f"{name}.jsonl") for name in DATA_FILES}
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return PreparedData(config=config, tokenizer=tokenizer, splits=splits, reports={})
