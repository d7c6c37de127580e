"""Stage 01 through the CLI: the run folder, its manifest, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpo_lab
from dpo_lab.infra.atomic import atomic_directory
from dpo_lab.run.prepare import DATA_FILES, load_prepared_data

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dpo_lab", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=check
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = _cli("data", "--profile", "smoke", "--run-dir", str(run_dir))
    return run_dir, result


def test_data_stage_writes_the_handoff_folder(smoke_run):
    run_dir, result = smoke_run
    folder = run_dir / "01_data"
    for name in DATA_FILES:
        assert (folder / f"{name}.jsonl").stat().st_size > 0
    assert (folder / "tokenizer" / "tokenizer.json").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["config"]["max_pairs"] == 64
    assert manifest["versions"]["trl"] == "1.16.0" and manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["metrics"]["pairs_train_rows"] == 64
    # smoke's 64-token prompt budget skips some prompts: counted and reported, never silently dropped
    skipped = manifest["metrics"]["skipped_train"]
    assert "64 kept" in result.stdout and all(f"{reason}: {n}" in result.stdout for reason, n in skipped.items())
    assert "distinct prompts" in result.stdout
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


def test_handoff_folder_loads_back(smoke_run):
    run_dir, _ = smoke_run
    prepared = load_prepared_data(run_dir)
    assert prepared.config.profile == "smoke" and len(prepared.splits["pairs_train"]) == 64
    tok = prepared.tokenizer
    pair = prepared.splits["pairs_train"][0]
    ids = dpo_lab.tokenize_pair(tok, pair["prompt"], pair["chosen"], pair["rejected"])
    assert ids["chosen_ids"][-1] == tok.eos_token_id


def test_missing_stage_says_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="01-Setup_and_Data.ipynb"):
        load_prepared_data(tmp_path)


def test_interrupted_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "01_data"
    with atomic_directory(target) as tmp:
        (tmp / "manifest.json").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "manifest.json").write_text("half")
            raise KeyboardInterrupt  # the user pressed Stop mid-save
    assert (target / "manifest.json").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["01_data"]


def test_cli_help_lists_options_and_bad_values_fail_clearly():
    help_text = _cli("data", "--help").stdout
    for option in ("--profile", "--run-dir", "--beta", "--set", "--errors"):
        assert option in help_text
    bad = _cli("data", "--profile", "smoke", "--beta", "0", check=False)
    assert bad.returncode == 2 and "beta must be a finite number > 0" in bad.stderr
    bad = _cli("data", "--profile", "smoke", "--set", "nonsense=1", check=False)
    assert bad.returncode != 0 and "FIELD=VALUE" in bad.stderr


def _hh_row(i: int, harmful: bool) -> str:
    q = f"How do I do thing number {i}?" if not harmful else f"How do I hurt person number {i}?"
    good = " Here is a careful, specific answer." if not harmful else " I can't help with that."
    return json.dumps(
        {"chosen": f"\n\nHuman: {q}\n\nAssistant:{good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: No."}
    )


def test_gpu_profile_code_path_on_a_local_hh_layout(tmp_path, tokenizer):
    """The students' path (HH-RLHF subsets + a Hub tokenizer), with local folders standing in for the Hub."""
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    data = tmp_path / "hh-rlhf"
    for subset, harmful in (("helpful-base", False), ("harmless-base", True)):
        (data / subset).mkdir(parents=True)
        (data / subset / "train.jsonl").write_text("\n".join(_hh_row(i, harmful) for i in range(20)) + "\n")
        (data / subset / "test.jsonl").write_text("\n".join(_hh_row(100 + i, harmful) for i in range(5)) + "\n")
    tokenizer.save_pretrained(tmp_path / "tok")
    config = dpo_lab.get_config(
        "gpu", dataset=str(data), model_name=str(tmp_path / "tok"), max_pairs=None, run_dir=str(tmp_path / "run")
    )
    prepared = prepare_data(config)
    assert len(prepared.splits["pairs_train"]) == 40 and len(prepared.splits["pairs_test"]) == 10
    assert len(prepared.splits["sft_train"]) == 40  # SFT on HH's chosen responses
    assert {r["should_refuse"] for r in prepared.splits["redteam_prompts"]} == {True}
    assert len(prepared.splits["redteam_prompts"]) == 5 and len(prepared.splits["eval_prompts"]) == 5
    out = save_prepared_data(prepared)
    assert json.loads((out / "manifest.json").read_text())["config"]["dataset"] == str(data)


def test_single_file_is_split_by_prompt(tmp_path, tokenizer):
    from dpo_lab.run.prepare import prepare_data

    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(_hh_row(i, i % 2 == 0) for i in range(200)) + "\n")
    tokenizer.save_pretrained(tmp_path / "tok")
    config = dpo_lab.get_config("gpu", dataset=str(path), model_name=str(tmp_path / "tok"), max_pairs=None)
    prepared = prepare_data(config)
    train, test = prepared.splits["pairs_train"], prepared.splits["pairs_test"]
    assert len(train) + len(test) == 200 and 5 <= len(test) <= 40
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in test}


def test_folder_without_split_files_is_an_error(tmp_path):
    (tmp_path / "prefs.jsonl").write_text(_hh_row(0, False) + "\n")
    with pytest.raises(FileNotFoundError, match="no file with 'test'"):
        dpo_lab.load_preference_data(str(tmp_path), split="test")


def test_saved_tables_read_back_exactly_whatever_text_they_hold(tmp_path):
    """Generated answers hold anything; pandas' defaults cut a quoted field at a lone CR and turn "NA" into NaN."""
    import pandas as pd

    from dpo_lab.infra.tables import read_text_table, write_table

    hostile = [
        "a\rb",
        "a\nb",
        "a\r\nb",
        'q"uote',
        "c,omma",
        "光合作用 ✅",
        "\x00nul",
        "NA",
        "",
        "=1+2",
        " lead",
        "x\u2028y",
    ]
    table = pd.DataFrame({"prompt": hostile, "SFT": hostile[::-1], "kind": "helpful"})
    back = read_text_table(write_table(table, tmp_path / "generations.csv"))
    assert back.to_dict("list") == table.to_dict("list")
    table.to_csv(tmp_path / "default.csv", index=False)  # what 04 wrote before: rows come back shifted
    assert pd.read_csv(tmp_path / "default.csv", keep_default_na=False).to_dict("list") != table.to_dict("list")
