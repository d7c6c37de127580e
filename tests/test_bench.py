"""bench/dpo_step.py runs every variant in its own process and reports what the README and the issue ask for.

Timings are not asserted (2 shared CPU cores are noisy): only that every variant ran, the numbers are
positive and the ratios are the ratios of the reported medians.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dpo_lab.course.notebooks import repo_root

VARIANTS = ["ours_live", "ours_cached", "trl", "trl_precompute", "floor"]


@pytest.mark.slow
def test_bench_reports_every_variant_and_the_headline_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(repo_root() / "bench" / "dpo_step.py"),
            "--configs",
            "vocab512",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("speedup_vs_trl", "peak_memory_ratio_vs_trl", "ratio_to_floor"):
        assert last[key] > 0, key
    assert "| ours_cached |" in proc.stdout and "| trl_precompute |" in proc.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    (config,) = report["configs"]
    rows = config["variants"]
    assert list(rows) == VARIANTS and all(
        r["n_steps"] == 1 and r["s_per_step"] > 0 and r["peak_rss_mb"] > 100 for r in rows.values()
    )
    assert last["speedup_vs_trl"] == round(rows["trl"]["s_per_step"] / rows["ours_live"]["s_per_step"], 2)
    assert last["ratio_to_floor"] == round(rows["ours_cached"]["s_per_step"] / rows["floor"]["s_per_step"], 3)
    assert report["versions"]["trl"] == "1.16.0"


def test_a_quick_or_partial_run_never_replaces_the_committed_results():
    # issue 15: `--quick` used to overwrite bench/dpo_step.json, whose full results the README quotes
    sys.path.insert(0, str(repo_root() / "bench"))
    try:
        import dpo_step
    finally:
        sys.path.pop(0)
    every = dpo_step.CPU_CONFIGS
    assert dpo_step.default_output(False, every, VARIANTS, 4, 1, 2) == dpo_step.FULL_RESULTS == "bench/dpo_step.json"
    assert dpo_step.default_output(True, [dpo_step.HEADLINE], VARIANTS, 1, 0, 1) == dpo_step.PARTIAL_RESULTS
    assert dpo_step.default_output(False, every[:1], VARIANTS, 4, 1, 2) == dpo_step.PARTIAL_RESULTS
    assert dpo_step.default_output(False, every, VARIANTS, 2, 1, 2) == dpo_step.PARTIAL_RESULTS
    assert dpo_step.default_output(False, every, VARIANTS, 4, 1, 2, "cuda") == dpo_step.PARTIAL_RESULTS
