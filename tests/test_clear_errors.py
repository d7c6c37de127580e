"""Errors say where (issue 15 §4): the file, the line, the field — and a damaged cache is rebuilt.

Each case below used to end in a message that named no file (``Expecting value: line 1 column 1``),
the wrong line, a raw PyTorch or Python type error, or a silent skip.
"""

from __future__ import annotations

import json

import pytest
from conftest import make_smoke_run

import dpo_lab
from dpo_lab.cli import main
from dpo_lab.fast.reference_cache import cache_key, load_cache_file, save_cache_file
from dpo_lab.infra.checkpoints import StaleCheckpointError
from dpo_lab.run import pipeline
from dpo_lab.run.prepare import load_prepared_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_smoke_run(tmp_path_factory.mktemp("run"), betas=(0.1,))


@pytest.mark.parametrize(
    "stage,content", [("01_data", ""), ("01_data", "{not json"), ("02_sft", ""), ("02_sft", "[1, 2]")]
)
def test_a_broken_manifest_is_named(run, tmp_path, stage, content):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / stage / "manifest.json").write_text(content, encoding="utf-8")
    with pytest.raises(StaleCheckpointError, match=rf"{stage}/manifest\.json is not .*re-run"):
        load_prepared_data(copy) if stage == "01_data" else pipeline.load_sft_checkpoint(copy)


def test_a_broken_dpo_manifest_is_skipped_like_a_missing_one_with_the_reason(run, tmp_path):
    import shutil

    from dpo_lab.evaluation.stage import discover_models

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for beta in ("0.5", "0.7"):
        shutil.copytree(copy / "03_dpo" / "beta_0.1", copy / "03_dpo" / f"beta_{beta}")
    (copy / "03_dpo" / "beta_0.5" / "manifest.json").write_text("", encoding="utf-8")
    (copy / "03_dpo" / "beta_0.7" / "manifest.json").unlink()
    models, skipped = discover_models(copy)
    assert list(models) == ["SFT", "DPO β=0.1"]
    assert any(s.startswith("beta_0.5:") and "manifest.json is not valid JSON" in s for s in skipped), skipped
    assert any(s.startswith("beta_0.7:") and "no manifest.json" in s for s in skipped), skipped


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_reference_cache_is_named_set_aside_and_rebuilt(run, tmp_path, capsys, damage):
    import os
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (cache,) = (copy / "02_sft" / "ref_cache").glob("*.pt")
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(4096))
    pipeline.run_dpo_stage(copy, beta=0.2, progress=False)
    out = capsys.readouterr().out
    assert str(cache) in out and "已損壞" in out and "重新計算" in out
    assert cache.with_name(cache.name + ".damaged").exists()
    rebuilt = json.loads(cache.with_suffix(".json").read_text(encoding="utf-8"))
    assert rebuilt["pairs"] > 0
    pipeline.run_dpo_stage(copy, beta=0.3, progress=False)  # the rebuilt file is used as is
    assert "已損壞" not in capsys.readouterr().out


def test_two_runs_saving_the_same_cache_keep_both_runs_entries(tmp_path):
    # issue 15 §5: the save was load → compute → overwrite, so the run that saved last erased the other's entries
    key = cache_key("sft-id", average=False, precision="fp32", max_length=128)
    first, second = load_cache_file(tmp_path, key), load_cache_file(tmp_path, key)  # both runs read the empty file
    second["logps"]["pair-b"] = (-1.0, -2.0)
    save_cache_file(tmp_path, second)
    first["logps"]["pair-a"] = (-3.0, -4.0)
    save_cache_file(tmp_path, first)
    assert load_cache_file(tmp_path, key)["logps"] == {"pair-a": (-3.0, -4.0), "pair-b": (-1.0, -2.0)}


# ----------------------------------------------------------------------------------------------- the command line


def test_wrong_types_on_the_command_line_name_the_field(run, capsys):
    for item, field in (
        ("beta=abc", "beta"),
        ("sft_steps=abc", "sft_steps"),
        ("sft_steps=2.5", "sft_steps"),
        ("max_pairs=[1]", "max_pairs"),
        ("lora=3", "lora"),
    ):
        assert main(["data", "--profile", "smoke", "--run-dir", str(run / "unused"), "--set", item]) == 2
        err = capsys.readouterr().err
        assert f"config field {field} must be" in err, (item, err)
    assert main(["sft", "--run-dir", str(run), "--set", "sft_steps=abc"]) == 2
    assert "config field sft_steps must be an integer" in capsys.readouterr().err
    # the sft/dpo stages validate like `data` does
    assert main(["sft", "--run-dir", str(run), "--set", "max_prompt_length=200", "--quiet"]) == 2
    assert "max_prompt_length (200) must be smaller than max_length (128)" in capsys.readouterr().err


def test_beta_given_with_set_trains_that_beta(run, capsys):
    assert main(["dpo", "--run-dir", str(run), "--set", "beta=0.5", "--quiet"]) == 0  # was: multiple values for 'beta'
    assert (run / "03_dpo" / "beta_0.5" / "manifest.json").exists()
    assert main(["dpo", "--run-dir", str(run), "--beta", "0.3", "--set", "beta=0.5", "--quiet"]) == 2
    assert "give beta once" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- data files


def _row(i: int) -> str:
    return json.dumps(
        {"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "chosen": f" a careful answer {i}.", "rejected": " no."}
    )


def test_a_flat_folder_filtered_out_by_the_subsets_says_why(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(_row(i) for i in range(20)) + "\n", encoding="utf-8")
    with pytest.raises(
        FileNotFoundError,
        match=r"found 2 data file\(s\) \(test\.jsonl, train\.jsonl\), but none inside "
        r"a sub-folder named after a subset in dataset_subsets=\['helpful', 'harmless'\]",
    ):
        dpo_lab.load_preference_data(str(tmp_path), split="train", subsets=("helpful", "harmless"))
    pairs, report = dpo_lab.load_preference_data(str(tmp_path), split="train", subsets=())  # the fix the message gives
    assert len(pairs) == 20 and report.n_skipped == 0


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(_row(i) for i in range(5)) + "\n").encode("utf-8"))
    pairs, report = dpo_lab.load_preference_data(str(path), errors="skip")
    assert len(pairs) == 5 and report.n_skipped == 0
    as_json = tmp_path / "prefs.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps([json.loads(_row(i)) for i in range(3)]).encode("utf-8"))
    assert len(dpo_lab.load_preference_data(str(as_json))[0]) == 3
