"""Prompt extraction, row shapes, and every bad-input case: a located error or a counted skip."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import dpo_lab
from dpo_lab import DataValidationError, extract_prompt, load_preference_data, normalize_row

H, A = "\n\nHuman:", "\n\nAssistant:"


# ------------------------------------------------------------------ extract_prompt on hand-written transcripts


def test_extract_prompt_single_turn():
    prompt, chosen, rejected = extract_prompt(
        f"{H} What is DPO?{A} A preference loss.", f"{H} What is DPO?{A} No idea."
    )
    assert prompt == f"{H} What is DPO?{A}"
    assert (chosen, rejected) == (" A preference loss.", " No idea.")


def test_extract_prompt_multi_turn_keeps_history_in_prompt():
    history = f"{H} Hi{A} Hello! How can I help?{H} Explain gravity."
    prompt, chosen, rejected = extract_prompt(f"{history}{A} Masses attract.", f"{history}{A} Things fall.")
    assert prompt == f"{history}{A}"
    assert prompt.count(H) == 2 and chosen == " Masses attract." and rejected == " Things fall."


def test_extract_prompt_responses_sharing_a_prefix_split_at_the_tag():
    # a character-level common prefix would put " I think" into the prompt
    prompt, chosen, rejected = extract_prompt(f"{H} Q{A} I think it is A.", f"{H} Q{A} I think it is B.")
    assert prompt == f"{H} Q{A}"
    assert chosen == " I think it is A." and rejected == " I think it is B."


def test_extract_prompt_keeps_leading_space_and_trailing_whitespace_with_response():
    prompt, chosen, rejected = extract_prompt(f"{H} Q{A}  Two spaces. ", f"{H} Q{A} One.\n")
    assert prompt.endswith("Assistant:")
    assert chosen == "  Two spaces. " and rejected == " One.\n"
    assert prompt + chosen == f"{H} Q{A}  Two spaces. "  # nothing lost or added


def test_extract_prompt_without_assistant_turn_names_field():
    with pytest.raises(DataValidationError, match="field 'rejected'") as e:
        extract_prompt(f"{H} Q{A} ok", f"{H} Q and no answer")
    assert e.value.reason == "no_assistant_turn"


def test_extract_prompt_different_prompts():
    with pytest.raises(DataValidationError) as e:
        extract_prompt(f"{H} Q1{A} yes", f"{H} Q2{A} no")
    assert e.value.reason == "prompt_mismatch"


def test_extract_prompt_response_inventing_extra_turns_is_a_mismatch():
    with pytest.raises(DataValidationError) as e:
        extract_prompt(f"{H} Q{A} yes", f"{H} Q{A} no{H} why?{A} because")
    assert e.value.reason == "prompt_mismatch"


def test_extract_prompt_non_string():
    with pytest.raises(DataValidationError) as e:
        extract_prompt(f"{H} Q{A} yes", 42)
    assert e.value.reason == "not_a_string" and e.value.field == "rejected"


# ------------------------------------------------------------------ row shapes


def test_three_row_shapes_give_the_same_pair():
    hh = {"chosen": f"{H} Hi{A} Hello!", "rejected": f"{H} Hi{A} Go away."}
    explicit = {"prompt": f"{H} Hi{A}", "chosen": " Hello!", "rejected": " Go away."}
    conv_implicit = {
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
    }
    conv_explicit = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    expected = {"prompt": f"{H} Hi{A}", "chosen": " Hello!", "rejected": " Go away."}
    for row in (hh, explicit, conv_implicit, conv_explicit):
        assert normalize_row(row) == expected


@pytest.mark.parametrize(
    "row, reason, field",
    [
        ({"chosen": f"{H} Q{A} a"}, "missing_field", "rejected"),
        ({"rejected": f"{H} Q{A} a"}, "missing_field", "chosen"),
        ({"prompt": f"{H} Q{A}", "chosen": 3, "rejected": " b"}, "not_a_string", "chosen"),
        ({"prompt": 7, "chosen": " a", "rejected": " b"}, "not_a_string", "prompt"),
        ({"chosen": f"{H} Q{A}   ", "rejected": f"{H} Q{A} b"}, "empty_response", "chosen"),
        ({"prompt": f"{H} Q{A}", "chosen": " same", "rejected": " same "}, "identical_responses", "chosen/rejected"),
        ({"chosen": [{"role": "user"}], "rejected": []}, "not_a_string", "chosen"),
        (["not", "a", "dict"], "not_an_object", ""),
    ],
)
def test_bad_rows_raise_with_reason_and_field(row, reason, field):
    with pytest.raises(DataValidationError) as e:
        normalize_row(row)
    assert e.value.reason == reason
    assert e.value.field == field


# ------------------------------------------------------------------ files: raise names file/line/field; skip counts


GOOD = {"chosen": f"{H} Q{A} good answer", "rejected": f"{H} Q{A} bad"}


def _write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture()
def messy_jsonl(tmp_path):
    return _write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            json.dumps(GOOD),  # line 1 ok
            '{"chosen": "broken',  # line 2 malformed
            json.dumps({"chosen": GOOD["chosen"]}),  # line 3 missing rejected
            json.dumps({"chosen": 5, "rejected": GOOD["rejected"]}),  # line 4 not a string
            json.dumps({"chosen": f"{H} Q{A} ", "rejected": GOOD["rejected"]}),  # line 5 empty response
            json.dumps({"chosen": GOOD["chosen"], "rejected": GOOD["chosen"]}),  # line 6 identical
            json.dumps({"chosen": f"{H} A{A} x", "rejected": f"{H} B{A} y"}),  # line 7 prompts differ
            "",  # blank line: not a row
            json.dumps({"prompt": f"{H} {'word ' * 80}{A}", "chosen": " a", "rejected": " b"}),  # line 9 long prompt
            json.dumps(GOOD),  # line 10 ok
        ],
    )


def test_raise_mode_names_file_line_and_field(messy_jsonl):
    with pytest.raises(DataValidationError) as e:
        load_preference_data(str(messy_jsonl), errors="raise")
    msg = str(e.value)
    assert str(messy_jsonl) in msg and "line 2" in msg and "malformed_json" in msg


def test_raise_mode_reports_missing_field_location(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [json.dumps(GOOD), json.dumps({"chosen": GOOD["chosen"]})])
    with pytest.raises(DataValidationError, match=r"p\.jsonl, line 2, field 'rejected'"):
        load_preference_data(str(path), errors="raise")


def test_skip_mode_counts_every_reason_and_drops_nothing_silently(messy_jsonl, tokenizer):
    pairs, report = load_preference_data(str(messy_jsonl), errors="skip", tokenizer=tokenizer, max_prompt_length=64)
    assert len(pairs) == 2 and [p["location"] for p in pairs] == ["line 1", "line 10"]
    assert dict(report.skipped) == {
        "malformed_json": 1,
        "missing_field": 1,
        "not_a_string": 1,
        "empty_response": 1,
        "identical_responses": 1,
        "prompt_mismatch": 1,
        "prompt_too_long": 1,
    }
    assert report.total == report.kept + report.n_skipped == 9
    frame = report.to_frame()
    assert set(frame["reason"]) == set(report.skipped) and frame["count"].sum() == 7
    assert "line 4" in frame.set_index("reason").loc["not_a_string", "first_examples"]


def test_prompt_budget_needs_a_tokenizer(messy_jsonl):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_preference_data(str(messy_jsonl), max_prompt_length=10)


def test_json_and_parquet_files(tmp_path):
    rows = [GOOD, {"prompt": f"{H} Z{A}", "chosen": " yes", "rejected": " no"}]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    pd.DataFrame(rows).to_parquet(tmp_path / "b.parquet")
    for name in ("a.json", "b.parquet"):
        pairs, report = load_preference_data(str(tmp_path / name))
        assert [p["chosen"] for p in pairs] == [" good answer", " yes"] and report.kept == 2
        assert pairs[1]["location"] == "row 1"


def test_conversational_parquet_round_trip(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Bye."}],
    }
    pd.DataFrame([row]).to_parquet(tmp_path / "conv.parquet")
    pairs, _ = load_preference_data(str(tmp_path / "conv.parquet"))
    assert (pairs[0]["prompt"], pairs[0]["chosen"]) == (f"{H} Hi{A}", " Hello!")


def test_broken_json_file_is_an_error_with_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"chosen": "x",\n "rejected": ]', encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"broken\.json, line 2"):
        load_preference_data(str(path), errors="skip")


def test_folder_of_files_with_subset_and_split(tmp_path):
    for subset in ("helpful-base", "harmless-base"):
        (tmp_path / subset).mkdir()
        _write_jsonl(tmp_path / subset / "train.jsonl", [json.dumps(GOOD)])
        _write_jsonl(tmp_path / subset / "test.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    train, _ = load_preference_data(str(tmp_path), split="train", subsets=["harmless-base"])
    test, _ = load_preference_data(str(tmp_path), split="test")
    assert len(train) == 1 and "harmless-base" in train[0]["source"]
    assert len(test) == 4
    # a max_pairs cap takes rows from every subset in turn, not only from the first one
    capped, _ = load_preference_data(str(tmp_path), split="test", max_pairs=2)
    assert {Path(p["source"]).parent.name for p in capped} == {"helpful-base", "harmless-base"}


def test_all_rows_bad_is_an_error_not_an_empty_list(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", ["{oops", json.dumps({"chosen": "x"})])
    with pytest.raises(ValueError, match="no valid preference pairs"):
        load_preference_data(str(path), errors="skip")


def test_missing_local_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_preference_data(str(tmp_path / "nope.jsonl"))


def test_hub_id_offline_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="profile='cpu'"):
        load_preference_data("no-such-owner/no-such-dataset", subsets=["helpful-base"])


def test_offline_source_is_the_generated_corpus():
    pairs, report = load_preference_data("offline", split="test", subsets=["harmless"], max_pairs=5)
    assert len(pairs) == 5 and report.n_skipped == 0
    assert all(p["subset"] == "harmless" and p["source"] == "offline:pairs_test" for p in pairs)
    assert all((p["chosen_quality"] > p["rejected_quality"]) != p["label_flipped"] for p in pairs)


def test_messages_to_transcript_renders_roles():
    text = dpo_lab.messages_to_transcript(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    )
    assert text == "\n\nSystem: Be kind.\n\nHuman: Hi"
