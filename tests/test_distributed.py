"""The same loops under several processes (torchrun here, on CPUs over gloo; `accelerate launch` on GPUs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import dpo_lab
from dpo_lab.infra.checkpoints import verify_checkpoint
from dpo_lab.run.prepare import prepare_data, save_prepared_data

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*args, cwd=ROOT):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "dpo_lab", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_sft_and_dpo_run_on_two_processes(tmp_path):
    config = dpo_lab.get_config("smoke", run_dir=str(tmp_path))
    save_prepared_data(prepare_data(config), tmp_path)
    sft = _torchrun("sft", "--run-dir", str(tmp_path), "--quiet")
    assert sft.returncode == 0, sft.stderr[-3000:]
    manifest = verify_checkpoint(tmp_path / "02_sft", produced_by="02")
    assert manifest["train_args"]["world_size"] == 2
    dpo = _torchrun("dpo", "--run-dir", str(tmp_path), "--beta", "0.3", "--quiet")
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    manifest = verify_checkpoint(tmp_path / "03_dpo" / "beta_0.3", produced_by="03")
    assert manifest["train_args"]["world_size"] == 2 and manifest["metrics"]["steps_run"] == 4
    history = [
        json.loads(line) for line in (tmp_path / "03_dpo" / "beta_0.3" / "history.jsonl").read_text().splitlines()
    ]
    assert history[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # step 1: policy == reference on both processes
    assert not (tmp_path / ".state").exists()
