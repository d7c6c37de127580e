"""The default lab's headline numbers over training seeds and sampling seeds: how much of the DPO effect is luck.

    python scripts/seed_study.py                                   # training seeds 42 43, sampling seeds 42 43 44
    python scripts/seed_study.py --train-seeds 42 43 44 --sample-seeds 42 43 44 45 --out runs/seeds

For each training seed it runs notebooks 01 → 02 → 03 with that seed (``python -m dpo_lab run --only 01 02 03
--seed S``: the SFT and DPO initialisation and batch order change; the corpus does not), then
``scripts/dpo_effect.py`` on the DPO run for every sampling seed. It prints, for the oracle win rate vs SFT, the
length-controlled win rate, the counterfactual win rate and the answer shares, the mean and the spread over all
(training seed, sampling seed) combinations, and writes every number to ``seed_study.json`` in ``--out``.
Not part of the default lab command: about 15 minutes per training seed on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

KEYS = ("win", "win_low", "lc_win", "counterfactual_win", "mid_sentence", "off_topic", "wrong", "mean_score")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--sample-seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"))
    args = parser.parse_args(argv)

    from dpo_effect import measure

    from dpo_lab.course.notebooks import run_lab

    results = []
    for train_seed in args.train_seeds:
        run_dir = args.out / f"seed_{train_seed}"
        if not list((run_dir / "03_dpo").glob("*/manifest.json")):
            run_lab(args.profile, run_dir, seed=train_seed, only=["01", "02", "03"], progress=False)
        runs = sorted(p.parent.name for p in (run_dir / "03_dpo").glob("*/manifest.json"))
        for sample_seed in args.sample_seeds:
            measured = measure(run_dir, runs, sample_seed)
            for name, row in measured["runs"].items():
                results.append({"train_seed": train_seed, "sample_seed": sample_seed, "run": name, **row,
                                "sft": measured["SFT"]})  # fmt: skip
                print(f"train seed {train_seed} · sample seed {sample_seed} · {name}: win {row['win']:.3f} "
                      f"({row['win_low']:.3f}–{row['win_high']:.3f}) · lc {row['lc_win']:.3f} · "
                      f"counterfactual {row['counterfactual_win']:.3f}", flush=True)  # fmt: skip
    summary = {}
    for key in KEYS:
        values = [r[key] for r in results]
        summary[key] = {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "min": min(values), "max": max(values)}  # fmt: skip
    for key in ("mid_sentence", "off_topic", "wrong", "mean_score"):
        values = [r["sft"][key] for r in results]
        summary[f"sft_{key}"] = {"mean": statistics.mean(values), "min": min(values), "max": max(values)}
    print(json.dumps({k: {s: round(v, 3) for s, v in d.items()} for k, d in summary.items()}, ensure_ascii=False))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_study.json").write_text(
        json.dumps({"results": results, "summary": summary}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
