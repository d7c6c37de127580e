"""Results never change or vanish without a word (issue 29 §3): each case below used to pass silently or end in a
library's stack trace.

- one edited number in the reference cache was used and changed the trained weights;
- two ``dpo`` runs at the same beta both exited 0, and one checkpoint was lost;
- ``--beta 0.1000001`` replaced ``03_dpo/beta_0.1``;
- a SIGKILL between the two renames of a save left no ``02_sft``, and the next start deleted both copies;
- a 0xFF byte in a data file named no file and no line, and ``--errors skip`` stopped too;
- a full disk said ``enforce fail at inline_container.cc:672``;
- ``--beta inf`` trained and ended in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import loop_args, make_smoke_run

from dpo_lab.cli import main
from dpo_lab.infra.atomic import atomic_directory, recover_interrupted_save, remove_leftovers
from dpo_lab.infra.locks import file_lock, lock_path
from dpo_lab.run import pipeline
from dpo_lab.run.layout import dpo_run_name, number_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_smoke_run(tmp_path_factory.mktemp("run") / "run", betas=(0.1,))


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# ------------------------------------------------------------------------------------------- the reference cache
def test_one_edited_number_in_the_reference_cache_is_caught_and_rebuilt(run, tmp_path, capsys):
    clean, edited = _copy(run, tmp_path / "clean"), _copy(run, tmp_path / "edited")
    (cache,) = (edited / "02_sft" / "ref_cache").glob("*.pt")
    stored = torch.load(cache, weights_only=True)
    name, (chosen, _) = next(iter(stored["logps"].items()))
    data = bytearray(cache.read_bytes())
    at = data.find(struct.pack(">d", chosen))  # the pickled float of one reference log-prob
    assert at > 0
    data[at + 1] ^= 0x10  # one byte: the number changes by orders of magnitude, the file still loads
    cache.write_bytes(bytes(data))
    assert torch.load(cache, weights_only=True)["logps"][name][0] != chosen

    pipeline.run_dpo_stage(clean, beta=0.3, progress=False)
    capsys.readouterr()
    pipeline.run_dpo_stage(edited, beta=0.3, progress=False)
    printed = capsys.readouterr().out
    assert str(cache) in printed and "SHA-256" in printed and "重新計算" in printed
    assert cache.with_name(cache.name + ".damaged").exists()
    assert torch.load(cache, weights_only=True)["logps"][name][0] == pytest.approx(chosen, abs=1e-4)
    # the edited number was not used: the same weights as the run on the untouched copy
    a, b = _weights(clean / "03_dpo" / "beta_0.3"), _weights(edited / "03_dpo" / "beta_0.3")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_an_edited_training_state_is_not_resumed(tmp_path, monkeypatch, capsys):
    from conftest import Interrupted, interrupt_after

    import dpo_lab
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    for name in ("edited", "clean"):
        save_prepared_data(prepare_data(dpo_lab.get_config("smoke", run_dir=str(tmp_path / name))))
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 7)  # the state of step 6 is on disk (save_every=2)
        with pytest.raises(Interrupted):
            pipeline.run_sft_stage(tmp_path / "edited", progress=False, sft_steps=12)
    state = tmp_path / "edited" / ".state" / "02_sft" / "train_state" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a saved tensor: torch.load would accept it
    state.write_bytes(bytes(data))
    capsys.readouterr()
    pipeline.run_sft_stage(tmp_path / "edited", progress=False, sft_steps=12)
    assert "SHA-256" in capsys.readouterr().out  # said, and trained from scratch instead
    pipeline.run_sft_stage(tmp_path / "clean", progress=False, sft_steps=12)
    a, b = _weights(tmp_path / "edited" / "02_sft"), _weights(tmp_path / "clean" / "02_sft")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_edited_cached_answer_is_regenerated_not_scored(tokenizer, tmp_path, capsys):
    from dpo_lab.evaluation.answers import cached_answers
    from dpo_lab.run.models import tiny_random_model

    prompts = ["\n\nHuman: What is a rainbow?\n\nAssistant:", "\n\nHuman: How do magnets work?\n\nAssistant:"]
    loads = []

    def load():
        loads.append(1)
        return tiny_random_model(tokenizer, seed=0)

    kwargs = dict(cache_dir=tmp_path, max_new_tokens=6, do_sample=False)
    first = cached_answers("model-1", load, tokenizer, prompts, **kwargs)
    (path,) = tmp_path.glob("*.json")
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["answers"][0] = "A perfect answer, typed in by hand."
    path.write_text(json.dumps(saved), encoding="utf-8")
    assert cached_answers("model-1", load, tokenizer, prompts, **kwargs) == first and len(loads) == 2
    assert "SHA-256" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- one writer per folder
def test_a_second_run_into_the_same_folder_fails_at_once_and_the_first_one_is_kept(run, tmp_path):
    copy = _copy(run, tmp_path)
    out = copy / "03_dpo" / "beta_0.2"
    command = [sys.executable, "-m", "dpo_lab", "dpo", "--run-dir", str(copy), "--beta", "0.2", "--quiet"]
    first = subprocess.Popen(
        [*command, "--set", "dpo_steps=400", "--set", "dpo_lr=0.0001"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:  # wait until the first run holds the folder's lock
        with file_lock(lock_path(out), wait=False) as free:
            pass
        if not free:
            break
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second = subprocess.run(
        [*command, "--set", "dpo_lr=0.0003"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 2, second.stderr
    assert "正由另一個執行中的 run 寫入" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["dpo_lr"] == 0.0001 and manifest["metrics"]["steps_run"] > 0
    # once the first has finished, the folder is free again
    assert main(["dpo", "--run-dir", str(copy), "--beta", "0.2", "--set", "dpo_lr=0.0003", "--quiet"]) == 0


def test_distinct_betas_never_share_a_folder_or_a_label(run, tmp_path):
    from dpo_lab.evaluation.stage import discover_models

    assert number_text(0.1) == number_text(0.10) == "0.1" and number_text(1.0) == "1"
    for a, b in ((0.1, 0.1000001), (0.5, 0.5000000000000001), (1e-5, 1.0000001e-5)):
        assert dpo_run_name(a) != dpo_run_name(b)
    assert dpo_run_name(0.1, "conservative", 0.1) != dpo_run_name(0.1, "conservative", 0.1000001)
    copy = _copy(run, tmp_path)
    assert main(["dpo", "--run-dir", str(copy), "--beta", "0.1000001", "--quiet"]) == 0
    assert sorted(p.name for p in (copy / "03_dpo").iterdir() if p.is_dir()) == ["beta_0.1", "beta_0.1000001"]
    original = json.loads((run / "03_dpo" / "beta_0.1" / "manifest.json").read_text(encoding="utf-8"))
    kept = json.loads((copy / "03_dpo" / "beta_0.1" / "manifest.json").read_text(encoding="utf-8"))
    assert kept["id"] == original["id"]
    models, _ = discover_models(copy)
    assert list(models) == ["SFT", "DPO β=0.1", "DPO β=0.1000001"]
    assert json.loads((copy / "03_dpo" / "beta_0.1000001" / "manifest.json").read_text())["config"]["beta"] == 0.1000001


def test_a_run_is_what_its_manifest_says_not_what_its_folder_is_called(run, tmp_path):
    """A copied or renamed run folder is named by its manifest (the beta it was trained with) and compared once."""
    from dpo_lab.evaluation.stage import discover_models

    copy = _copy(run, tmp_path)
    shutil.copytree(copy / "03_dpo" / "beta_0.1", copy / "03_dpo" / "beta_0.7")  # a copy under another beta's name
    (copy / "03_dpo" / "beta_0.1").rename(copy / "03_dpo" / "ipo_beta_0.3")  # and the original renamed
    models, skipped = discover_models(copy)
    assert list(models) == ["SFT", "DPO β=0.1"]  # trained with the DPO loss at beta 0.1, whatever the folder says
    assert models["DPO β=0.1"].name == "beta_0.7"
    assert skipped == ["ipo_beta_0.3: the same run as beta_0.7 (DPO β=0.1, by its manifest)"]


# ------------------------------------------------------------------------------------------- a killed save
_KILL_BETWEEN_THE_RENAMES = """
import os, signal, sys
real = os.replace
def replace(src, dst):
    real(src, dst)
    if os.path.basename(str(dst)) == "previous" and ".02_sft." in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)  # the old copy is aside, the new one not yet in place
os.replace = replace
from dpo_lab.run.pipeline import run_sft_stage
run_sft_stage(sys.argv[1], progress=False, seed=7)
"""


def test_a_save_killed_between_its_two_renames_gets_its_complete_copy_back(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    old_id = json.loads((copy / "02_sft" / "manifest.json").read_text(encoding="utf-8"))["id"]
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_BETWEEN_THE_RENAMES, str(copy)], env=_env(), capture_output=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (copy / "02_sft").exists()  # what the kill leaves: both complete copies hidden
    (ready,) = copy.glob(".02_sft.*.ready")
    (old,) = copy.glob(".02_sft.*.old")
    new_id = json.loads((ready / "manifest.json").read_text(encoding="utf-8"))["id"]
    assert new_id != old_id and (old / "previous" / "manifest.json").exists()

    # the next stage that reads 02_sft gets the newest complete copy, verified like any checkpoint
    _, _, manifest = pipeline.load_sft_checkpoint(copy)
    assert manifest["id"] == new_id and manifest["config"]["seed"] == 7
    assert "放回完整的新版本" in capsys.readouterr().out
    # and the next start of 02 cleans up without deleting it
    remove_leftovers(copy / "02_sft")
    assert (copy / "02_sft" / "manifest.json").exists()
    assert [p.name for p in copy.glob(".02_sft.*") if p.suffix in (".tmp", ".old", ".ready")] == []


def test_without_a_finished_new_copy_the_old_one_comes_back(tmp_path):
    target = tmp_path / "stage"
    with atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_text("old", encoding="utf-8")
    aside = tmp_path / ".stage.x1.old"  # killed after moving the old copy aside, before the new one was ready
    aside.mkdir()
    os.replace(target, aside / "previous")
    (tmp_path / ".stage.x2.tmp").mkdir()  # an unfinished new copy: never used
    assert recover_interrupted_save(target, log=lambda _: None) == aside
    assert (target / "weights.bin").read_text(encoding="utf-8") == "old"
    remove_leftovers(target, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


# ------------------------------------------------------------------------------------------- bad bytes, full disk
def _rows(n: int) -> list[bytes]:
    row = {"prompt": "\n\nHuman: question {i}?\n\nAssistant:", "chosen": " a careful answer {i}.", "rejected": " no."}
    return [json.dumps({k: v.format(i=i) for k, v in row.items()}).encode() for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_byte_that_is_not_utf8_names_the_file_and_line_and_skip_mode_counts_it(tmp_path, capsys, suffix):
    rows = _rows(40)
    rows[6] = rows[6][:12] + b"\xff" + rows[6][12:]
    path = tmp_path / f"prefs{suffix}"
    path.write_bytes(b"\n".join(rows) + b"\n" if suffix == ".jsonl" else b"[\n" + b",\n".join(rows) + b"\n]\n")
    line = 7 if suffix == ".jsonl" else 8
    base = ["data", "--profile", "smoke", "--set", f"dataset={path}", "--set", "dataset_subsets=[]", "--quiet"]
    assert main([*base, "--run-dir", str(tmp_path / "raise"), "--errors", "raise"]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line {line}: not UTF-8 text: byte 0xff at column 13" in err, err
    code = main([*base, "--run-dir", str(tmp_path / "skip"), "--errors", "skip"])
    out, err = capsys.readouterr()
    if suffix == ".jsonl":  # one bad line is one skipped row
        assert code == 0, err
        assert "not_utf8: 1" in out
    else:  # a .json file cannot be read in part, as with broken JSON: it stops, naming the place
        assert code == 2 and f"{path}, line {line}" in err


def test_a_damaged_parquet_file_is_named_instead_of_a_pyarrow_traceback(tmp_path, capsys):
    import pandas as pd

    path = tmp_path / "prefs.parquet"
    pd.DataFrame([json.loads(r) for r in _rows(40)]).to_parquet(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # the footer's metadata: pyarrow cannot even open it
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    base = ["data", "--profile", "smoke", "--set", f"dataset={path}", "--set", "dataset_subsets=[]", "--quiet"]
    assert main([*base, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a readable Parquet file" in err and "Traceback" not in err


def test_a_full_disk_during_sft_says_so_and_where(run, tmp_path):
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap for a small tmpfs (apt-get install -y bubblewrap; CI installs it)")
    full = tmp_path / "small-disk"
    full.mkdir()
    size = sum(p.stat().st_size for p in (run / "01_data").rglob("*") if p.is_file()) + 64 * 1024
    script = f"cp -r {run / '01_data'} {full}/ && exec {sys.executable} -m dpo_lab sft --run-dir {full} --quiet"
    done = subprocess.run(
        ["bwrap", "--dev-bind", "/", "/", "--size", str(size), "--tmpfs", str(full), "--", "sh", "-c", script],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "Creating new namespace failed" in done.stderr or "No permissions" in done.stderr:
        pytest.skip(f"bubblewrap cannot make a tmpfs here: {done.stderr.strip()[:200]}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "磁碟已滿" in done.stderr and str(full) in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------- beta = inf
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0"])
def test_a_beta_that_is_not_a_finite_positive_number_is_refused_before_training(run, capsys, value):
    assert main(["dpo", "--run-dir", str(run), f"--beta={value}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "beta" in err and "Traceback" not in err
    assert [p.name for p in (run / "03_dpo").iterdir() if p.is_dir()] == ["beta_0.1"]  # nothing trained or written
    from dpo_lab import get_config
    from dpo_lab.core.losses import dpo_loss

    with pytest.raises(ValueError, match="beta"):
        get_config("smoke", beta=float(value))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        loop_args("dpo", beta=float(value))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        dpo_loss(*[torch.zeros(1)] * 4, beta=float(value))
