"""Train DPO variants from one finished run's SFT model, each in its own folder, for the experiments behind the
cpu profile's defaults (docs/results.md, "DPO 為什麼變差、改了什麼"); then score them with scripts/dpo_effect.py.

    python scripts/dpo_variants.py --from runs/cpu --to runs/exp/b05 '{"beta": 0.5}'
    python scripts/dpo_variants.py --from runs/cpu --to runs/exp/rpo '{"beta": 0.5, "rpo_alpha": 1.0}'
    python scripts/dpo_effect.py --run-dir runs/exp/rpo

The JSON holds :class:`dpo_lab.LabConfig` overrides for stage 03 (``beta``, ``dpo_steps``, ``dpo_lr`` …), plus
``rpo_alpha``: an experiment the lab does not ship — DPO + ``rpo_alpha`` × the mean NLL of the chosen tokens
(TRL's ``rpo_alpha``), which keeps the chosen answers' own likelihood up. It is added here by wrapping
``DPOLoop.compute_loss`` with one extra forward pass; it changed nothing the β change did not (docs/results.md).
``--to`` gets copies of ``01_data``, ``02_sft`` (with its reference cache) and the answer cache of ``--from``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def with_rpo(alpha: float) -> None:
    """Make every DPOLoop step minimise DPO + ``alpha`` × the chosen tokens' mean negative log-likelihood."""
    from dpo_lab.fast.scored_logprobs import batch_logprobs
    from dpo_lab.training import dpo

    original = dpo.DPOLoop.compute_loss

    def compute_loss(self, batch):
        loss, metrics = original(self, batch)
        chosen, _ = batch_logprobs(self.policy, batch)
        tokens = batch["loss_mask"][: chosen.shape[0], 1:].sum().clamp(min=1)
        nll = -chosen.sum() / tokens
        metrics["nll"] = float(nll.detach())
        return loss + alpha * nll, metrics

    dpo.DPOLoop.compute_loss = compute_loss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a run with 01_data and 02_sft")
    parser.add_argument("--to", type=Path, required=True, help="the variant's run folder (created)")
    parser.add_argument("overrides", help='stage-03 overrides as JSON, e.g. \'{"beta": 0.5, "rpo_alpha": 1.0}\'')
    args = parser.parse_args(argv)
    overrides = json.loads(args.overrides)
    if not args.to.exists():
        args.to.mkdir(parents=True)
        for name in ("01_data", "02_sft"):
            shutil.copytree(args.source / name, args.to / name)
        if (args.source / "cache").exists():
            shutil.copytree(args.source / "cache", args.to / "cache")  # SFT's answers are reused
    alpha = overrides.pop("rpo_alpha", 0.0)
    if alpha:
        with_rpo(alpha)
    from dpo_lab.run import pipeline

    t0 = time.perf_counter()
    out, result = pipeline.run_dpo_stage(args.to, progress=False, **overrides)
    print(json.dumps({"out": str(out), "seconds": round(time.perf_counter() - t0, 1), "rpo_alpha": alpha,
                      "final_eval": result.final_eval, "stop": result.stop_reason}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
