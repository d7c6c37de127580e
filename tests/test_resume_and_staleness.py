"""A run folder never describes a run that did not happen (issue 15 §2, §3, §5).

- training state is resumed only by the run it was saved for: same stage, same inputs, same settings;
  otherwise it is discarded with a printed reason (and a matching run still resumes);
- every stage's id covers the content it was built from, so changed data makes later stages stale, and
  an edited or truncated file in 01_data is named;
- what a killed run left half-written is cleaned up when the stage starts again.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import Interrupted, count_calls, interrupt_after, make_smoke_run

import dpo_lab
from dpo_lab.infra.checkpoints import StaleCheckpointError, read_history
from dpo_lab.run import pipeline
from dpo_lab.run.prepare import load_prepared_data, prepare_data, save_prepared_data


def _data(run_dir, **overrides):
    save_prepared_data(prepare_data(dpo_lab.get_config("smoke", run_dir=str(run_dir), **overrides)))


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_killed_sft_resumes_only_when_run_again_with_the_same_settings(tmp_path, monkeypatch, capsys):
    _data(tmp_path)
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 7)  # the state of step 6 is on disk (save_every=2)
        with pytest.raises(Interrupted):
            pipeline.run_sft_stage(tmp_path, progress=False, sft_steps=12)
    assert (tmp_path / ".state" / "02_sft" / "train_state").exists()

    # the same command again resumes: steps 7..12 only, and says nothing about discarding
    with monkeypatch.context() as m:
        steps = count_calls(m, torch.nn.utils, "clip_grad_norm_")
        pipeline.run_sft_stage(tmp_path, progress=False, sft_steps=12)
    assert steps["n"] == 6 and "從頭開始" not in capsys.readouterr().out
    assert [r["step"] for r in read_history(tmp_path / "02_sft")] == list(range(1, 13))

    # issue 15: after a killed long run, a plain (4-step) run used to "resume" at the long run's step
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 7)
        with pytest.raises(Interrupted):
            pipeline.run_sft_stage(tmp_path, progress=False, sft_steps=12)
    with monkeypatch.context() as m:
        steps = count_calls(m, torch.nn.utils, "clip_grad_norm_")
        pipeline.run_sft_stage(tmp_path, progress=False)
    out = capsys.readouterr().out
    assert steps["n"] == 4, "the 4-step run must train 4 steps from scratch"
    assert "從頭開始" in out and "train_args.steps: 12 → 4" in out
    manifest = json.loads((tmp_path / "02_sft" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["sft_steps"] == 4 and manifest["metrics"]["best_step"] <= 4
    assert [r["step"] for r in read_history(tmp_path / "02_sft")] == [1, 2, 3, 4]
    clean = tmp_path / "clean"
    _data(clean)
    pipeline.run_sft_stage(clean, progress=False)
    for name, value in _weights(clean / "02_sft").items():  # the same model as a run that was never interrupted
        assert torch.equal(value, _weights(tmp_path / "02_sft")[name]), name


def test_sft_state_from_other_data_is_discarded(tmp_path, monkeypatch, capsys):
    _data(tmp_path)
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 5)
        with pytest.raises(Interrupted):
            pipeline.run_sft_stage(tmp_path, progress=False, sft_steps=8)
    _data(tmp_path, data_seed=1)  # issue 15: regenerated 01_data, and sft used to resume the old state
    new_data_id = json.loads((tmp_path / "01_data" / "manifest.json").read_text(encoding="utf-8"))["id"]
    with monkeypatch.context() as m:
        steps = count_calls(m, torch.nn.utils, "clip_grad_norm_")
        pipeline.run_sft_stage(tmp_path, progress=False, sft_steps=8)
    assert steps["n"] == 8
    assert "從頭開始" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "02_sft" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["01_data"] == new_data_id


def test_dpo_state_built_on_an_older_sft_model_is_discarded(tmp_path, monkeypatch, capsys):
    make_smoke_run(tmp_path)
    with monkeypatch.context() as m:
        interrupt_after(m, torch.nn.utils, "clip_grad_norm_", 5)
        with pytest.raises(Interrupted):
            pipeline.run_dpo_stage(tmp_path, beta=0.1, progress=False, dpo_steps=8)
    assert (tmp_path / ".state" / "03_dpo" / "beta_0.1" / "train_state").exists()
    pipeline.run_sft_stage(tmp_path, progress=False, sft_lr=5e-4)  # issue 15: retrained SFT; dpo used to resume anyway
    capsys.readouterr()
    with monkeypatch.context() as m:
        steps = count_calls(m, torch.nn.utils, "clip_grad_norm_")
        pipeline.run_dpo_stage(tmp_path, beta=0.1, progress=False, dpo_steps=8)
    out = capsys.readouterr().out
    assert steps["n"] == 8 and "從頭開始" in out and "02_sft" in out
    sft_id = json.loads((tmp_path / "02_sft" / "manifest.json").read_text(encoding="utf-8"))["id"]
    dpo = json.loads((tmp_path / "03_dpo" / "beta_0.1" / "manifest.json").read_text(encoding="utf-8"))
    assert dpo["inputs"]["02_sft"] == sft_id and dpo["metrics"]["steps_run"] == 8


# ----------------------------------------------------------------------------------------------- §3 content ids


def _local_dataset(run_dir, path, swap: bool = False):
    prepared = load_prepared_data(run_dir)
    rows = prepared.splits["pairs_train"] + prepared.splits["pairs_test"]
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            chosen, rejected = (r["rejected"], r["chosen"]) if swap else (r["chosen"], r["rejected"])
            f.write(
                json.dumps({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected}, ensure_ascii=False) + "\n"
            )
    return path


def test_changed_data_content_makes_later_stages_stale(tmp_path):
    make_smoke_run(tmp_path / "source")
    data_file = _local_dataset(tmp_path / "source", tmp_path / "prefs.jsonl")
    run = tmp_path / "run"
    _data(run, dataset=str(data_file))
    first_id = json.loads((run / "01_data" / "manifest.json").read_text(encoding="utf-8"))["id"]
    pipeline.run_sft_stage(run, progress=False)
    _data(run, dataset=str(data_file))  # the same data again: the same id, SFT stays valid
    assert json.loads((run / "01_data" / "manifest.json").read_text(encoding="utf-8"))["id"] == first_id
    pipeline.load_sft_checkpoint(run)

    _local_dataset(tmp_path / "source", data_file, swap=True)  # issue 15: same row count, chosen ↔ rejected
    _data(run, dataset=str(data_file))
    assert json.loads((run / "01_data" / "manifest.json").read_text(encoding="utf-8"))["id"] != first_id
    with pytest.raises(StaleCheckpointError, match="stale"):
        pipeline.load_sft_checkpoint(run)
    with pytest.raises(StaleCheckpointError, match="stale"):
        pipeline.run_dpo_stage(run, beta=0.1, progress=False)


def test_an_edited_or_truncated_data_file_is_named(tmp_path):
    _data(tmp_path)
    path = tmp_path / "01_data" / "pairs_train.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")  # issue 15: half the rows deleted
    with pytest.raises(StaleCheckpointError, match=r"pairs_train\.jsonl does not match its manifest"):
        load_prepared_data(tmp_path)
    path.write_text("".join(lines)[:-40], encoding="utf-8")  # truncated inside a row
    with pytest.raises(StaleCheckpointError, match=r"pairs_train\.jsonl does not match its manifest.*re-run 01"):
        pipeline.run_sft_stage(tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------- §5 leftovers


def test_leftovers_of_a_killed_save_are_removed_when_the_stage_starts_again(tmp_path, capsys):
    make_smoke_run(tmp_path)
    leftovers = [
        tmp_path / ".02_sft.abc123.tmp",
        tmp_path / "03_dpo" / ".beta_0.1.xyz.tmp",
        tmp_path / ".state" / "03_dpo" / "beta_0.1" / ".train_state.q1.tmp",
    ]
    for folder in leftovers:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half a model")
    empty = tmp_path / ".state" / "03_dpo" / "beta_0.1" / ".train_state.empty.tmp"
    empty.write_bytes(b"")
    other_beta = tmp_path / "03_dpo" / ".beta_0.5.keep.tmp"  # another beta's stage: not ours to clean
    other_beta.mkdir()
    pipeline.run_dpo_stage(tmp_path, beta=0.1, progress=False)
    assert leftovers[1].exists() is False and leftovers[2].exists() is False and not empty.exists()
    assert other_beta.exists() and leftovers[0].exists()  # 02_sft's leftovers go when 02 runs again
    pipeline.run_sft_stage(tmp_path, progress=False)
    assert not leftovers[0].exists()
    assert "暫存" in capsys.readouterr().out


def test_saved_model_files_have_the_same_permissions_as_the_others(tmp_path):
    make_smoke_run(tmp_path)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "02_sft").iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == modes["manifest.json"]
