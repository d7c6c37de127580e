"""The application half of the lab: chat template, model cards, serving, loss variants, an on-policy round.

Everything runs on the smoke profile; the server is ``transformers serve`` on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import shutil
import urllib.request

import pytest
import torch

import dpo_lab
from dpo_lab.core.hh_format import ASSISTANT_TAG, HH_CHAT_TEMPLATE, with_hh_chat_template
from dpo_lab.infra.checkpoints import verify_checkpoint
from dpo_lab.run.layout import dpo_run_name, run_identity


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A smoke run with 02_sft and 03_dpo/beta_0.1."""
    from conftest import make_smoke_run

    return make_smoke_run(tmp_path_factory.mktemp("app") / "run", betas=(0.1,))


# ------------------------------------------------------------------------------------------ chat template
def test_chat_template_renders_the_training_prompt_of_a_multi_turn_conversation(tokenizer):
    transcript = (
        "\n\nHuman: What is a lock?\n\nAssistant: A device that keeps a door closed."
        "\n\nHuman: How does a key open it?\n\nAssistant: The key lifts the pins."
    )
    prompt, response, _ = dpo_lab.extract_prompt(transcript, transcript.replace("lifts the pins", "is magic"))
    messages = [
        {"role": "user", "content": "What is a lock?"},
        {"role": "assistant", "content": "A device that keeps a door closed."},
        {"role": "user", "content": "How does a key open it?"},
    ]
    tok = with_hh_chat_template(tokenizer)
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == prompt  # exactly the prompt 01 extracts from the transcript and 02/03 train on
    assert rendered == dpo_lab.messages_to_transcript(messages) + ASSISTANT_TAG
    assert rendered + response == transcript
    with pytest.raises(Exception, match="role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_every_checkpoint_saves_the_chat_template_and_a_model_card(trained_run):
    from transformers import AutoTokenizer

    from dpo_lab.run.model_card import write_model_card

    for folder in (trained_run / "02_sft", trained_run / "03_dpo" / "beta_0.1"):
        assert AutoTokenizer.from_pretrained(folder).chat_template == HH_CHAT_TEMPLATE
        card = (folder / "README.md").read_text(encoding="utf-8")
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
        assert "README.md" not in manifest["files"]  # the card may be rewritten without invalidating the folder
        assert "## 預期用途與限制" in card
    dpo = trained_run / "03_dpo" / "beta_0.1"
    manifest = json.loads((dpo / "manifest.json").read_text(encoding="utf-8"))
    card = (dpo / "README.md").read_text(encoding="utf-8")
    accuracy = manifest["metrics"]["final_eval"]["eval_rewards/accuracies"]
    assert "| β | 0.1 |" in card and f"| reward accuracy | {accuracy:.3f} |" in card
    assert "勝率：執行 notebook 04" in card
    write_model_card(dpo, manifest, {"SFT（oracle）": 0.625})
    assert "| SFT（oracle） | 62.5% |" in (dpo / "README.md").read_text(encoding="utf-8")
    verify_checkpoint(dpo, produced_by="03")  # still complete and unmodified


def test_a_checkpoint_saved_without_a_chat_template_gets_one_as_a_new_file(tmp_path):
    from transformers import AutoTokenizer

    from dpo_lab.evaluation.serving import add_missing_chat_template

    tok = copy.deepcopy(dpo_lab.corpus_tokenizer(seed=0, vocab_size=4096))  # a copy: the factory may cache
    tok.chat_template = None
    tok.save_pretrained(tmp_path)  # as the lab saved checkpoints before chat templates
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    notes = []
    assert add_missing_chat_template(tmp_path, log=notes.append) is True and notes
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == HH_CHAT_TEMPLATE
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before  # nothing rewritten
    assert add_missing_chat_template(tmp_path, log=notes.append) is False and len(notes) == 1


# ------------------------------------------------------------------------------------------ serving
@pytest.mark.slow
def test_transformers_serve_answers_like_the_model_does_locally(trained_run):
    """``transformers serve`` on 127.0.0.1: a chat completion comes back, and it is the model's own greedy answer
    to the HH prompt the chat template builds (so the server sends the model the prompt format it was trained on)."""
    from transformers import AutoTokenizer

    from dpo_lab.evaluation.generation import generate
    from dpo_lab.evaluation.serving import model_folder, served
    from dpo_lab.run.pipeline import load_eval_model

    folder = model_folder(trained_run, beta=0.1)
    messages = [{"role": "user", "content": "Give me a definition of locks."}]
    with served(folder, device="cpu") as client:
        assert client.url.startswith("http://127.0.0.1:")
        served_answer = client.chat(messages, max_tokens=12, temperature=0)
        # issue 29: GET /v1/models answered 500 (transformers lists the Hub cache, which does not exist here) and
        # never listed the served folder; an OpenAI client lists models first
        with urllib.request.urlopen(client.url.replace("/chat/completions", "/models"), timeout=30) as response:
            listed = json.loads(response.read())
    assert [m["id"] for m in listed["data"]] == [str(folder.resolve())]
    assert isinstance(served_answer, str)
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    local = generate(load_eval_model(folder, "cpu"), tok, [prompt], max_new_tokens=12, do_sample=False)[0]
    print(f"\nserved: {served_answer!r}\nlocal:  {local!r}")
    assert served_answer.strip() == local
    with pytest.raises(FileNotFoundError, match="beta_0.7 does not exist"):
        model_folder(trained_run, beta=0.7)


# ------------------------------------------------------------------------------------------ loss variants
def test_run_folder_names_are_distinct_and_identity_comes_from_the_manifest():
    runs = [(0.1,), (0.5, "ipo"), (0.1, "conservative", 0.1), (1.0, "robust", 0.2), (0.05, "hinge"), (0.1, "ipo")]
    names = [dpo_run_name(*args) for args in runs]
    assert len(set(names)) == len(names) and names[:2] == ["beta_0.1", "ipo_beta_0.5"]
    manifest = {"config": {"beta": 0.5, "loss_type": "robust", "label_smoothing": 0.2}, "metrics": {}}
    assert run_identity(manifest) == {
        "round": 1,
        "loss_type": "robust",
        "label_smoothing": 0.2,
        "beta": 0.5,
        "first_round": None,
    }
    second = {"config": {"beta": 0.1}, "metrics": {"round": 2, "first_round": "beta_0.1"}}  # an older manifest
    assert run_identity(second) == {
        "round": 2,
        "loss_type": "sigmoid",
        "label_smoothing": 0.0,
        "beta": 0.1,
        "first_round": "beta_0.1",
    }


def test_loss_type_and_label_smoothing_are_checked():
    from dpo_lab.core.losses import preference_loss

    args = [torch.tensor([-1.0])] * 4
    with pytest.raises(ValueError, match="loss_type must be one of"):
        preference_loss(*args, 0.1, "kto")
    with pytest.raises(ValueError, match="needs 0 < label_smoothing < 0.5"):
        preference_loss(*args, 0.1, "conservative")
    with pytest.raises(ValueError, match="ignores it"):
        dpo_lab.get_config("smoke", loss_type="ipo", label_smoothing=0.1)
    # conservative DPO is the DPO loss averaged over the label being right (1 - ε) or flipped (ε)
    pc, pr, rc, rr = torch.randn(4, 16).unbind(0)
    eps = 0.2
    cdpo = preference_loss(pc, pr, rc, rr, 0.3, "conservative", label_smoothing=eps)[0]
    mixed = (1 - eps) * dpo_lab.dpo_loss(pc, pr, rc, rr, 0.3)[0] + eps * dpo_lab.dpo_loss(pr, pc, rr, rc, 0.3)[0]
    assert torch.allclose(cdpo, mixed, atol=1e-6)
    assert torch.equal(preference_loss(pc, pr, rc, rr, 0.3)[0], dpo_lab.dpo_loss(pc, pr, rc, rr, 0.3)[0])


@pytest.mark.slow
def test_loss_variants_train_into_their_own_folders_and_04_names_them(trained_run, tmp_path):
    from dpo_lab.evaluation.stage import discover_models
    from dpo_lab.run.pipeline import run_dpo_stage

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = (run_dir / "03_dpo" / "beta_0.1" / "model.safetensors").read_bytes()
    out, _ = run_dpo_stage(run_dir, progress=False, loss_type="conservative", label_smoothing=0.1)
    assert out.name == "conservative-ls0.1_beta_0.1"
    student_loss = lambda *a: dpo_lab.dpo_loss(*a)  # noqa: E731 - a "student's" function: ignored by a variant
    out_ipo, result = run_dpo_stage(run_dir, progress=False, loss_type="ipo", dpo_loss=student_loss)
    manifest = json.loads((out_ipo / "manifest.json").read_text(encoding="utf-8"))
    assert out_ipo.name == "ipo_beta_0.1" and manifest["config"]["loss_type"] == "ipo"
    assert manifest["train_args"]["average_logps"] is True  # IPO is defined on per-token means
    assert manifest["metrics"]["implementations"]["dpo_loss"] == "reference (loss_type=ipo)"
    assert (run_dir / "03_dpo" / "beta_0.1" / "model.safetensors").read_bytes() == before  # untouched
    models, skipped = discover_models(run_dir)
    assert list(models) == ["SFT", "DPO β=0.1", "cDPO ε=0.1 β=0.1", "IPO β=0.1"] and skipped == []


# ------------------------------------------------------------------------------------------ on-policy round
class LengthJudge(dpo_lab.evaluation.judges.ScoreJudge):
    """A stand-in labeller for a tiny random model (whose answers the oracle scores all 1, i.e. all ties)."""

    name = "length"
    tie_margin = 0.5

    def score(self, prompts, responses):
        return torch.tensor([float(len(r.split())) for r in responses])


def test_label_pairs_keeps_the_better_answer_and_counts_ties():
    from dpo_lab.evaluation.onpolicy import label_pairs
    from dpo_lab.evaluation.oracle import OracleJudge

    rows = [{"prompt": "\n\nHuman: a\n\nAssistant:", "topic": "t"}, {"prompt": "\n\nHuman: b\n\nAssistant:"}]
    pairs, report = label_pairs(rows, [["one two three", "x"], ["one", "y"]], LengthJudge(), source="onpolicy:t")
    assert report | {"mean_answer_score": None} == report | {
        "prompts": 2,
        "answers_per_prompt": 2,
        "pairs": 1,
        "ties_dropped": 1,
        "empty_dropped": 0,
        "mean_answer_score": None,
    }
    assert pairs[0]["chosen"] == " one two three" and pairs[0]["rejected"] == " one" and pairs[0]["margin"] == 2
    assert pairs[0]["topic"] == "t" and pairs[0]["judge"] == "length"
    assert isinstance(
        dpo_lab.evaluation.onpolicy.labeller(dpo_lab.get_config("smoke")), OracleJudge
    )  # the offline corpus: the corpus-fact oracle labels the pairs


@pytest.mark.slow
def test_round2_trains_from_the_first_round_on_its_own_labelled_samples(trained_run, tmp_path):
    from dpo_lab.evaluation.onpolicy import run_round2
    from dpo_lab.evaluation.stage import discover_models

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    out, result, report = run_round2(run_dir, "beta_0.1", n_prompts=8, steps=2, judge=LengthJudge(), progress=False)
    assert out.name == "round2_beta_0.1"
    assert report["pairs"] + report["ties_dropped"] + report["empty_dropped"] == 8 and report["pairs"] > 0
    pairs = [json.loads(line) for line in (run_dir / "onpolicy_pairs" / "beta_0.1.jsonl").read_text().splitlines()]
    train_prompts = {json.loads(x)["prompt"] for x in (run_dir / "01_data" / "pairs_train.jsonl").open()}
    test_prompts = {json.loads(x)["prompt"] for x in (run_dir / "01_data" / "pairs_test.jsonl").open()}
    assert len(pairs) == report["pairs"] and all(p["prompt"] in train_prompts for p in pairs)
    assert not {p["prompt"] for p in pairs} & test_prompts
    assert all({"prompt", "chosen", "rejected", "judge", "margin"} <= set(p) and p["margin"] > 0 for p in pairs)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    first = json.loads((run_dir / "03_dpo" / "beta_0.1" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["round"] == 2 and manifest["inputs"]["beta_0.1"] == first["id"]
    assert len(manifest["inputs"]["train_pairs"]) == 16  # the pairs' content: other pairs, another run
    assert manifest["metrics"]["onpolicy"]["pairs"] == report["pairs"] and result.initial_eval["eval_kl"] == 0.0
    models, _ = discover_models(run_dir)
    assert list(models) == ["SFT", "DPO β=0.1", "DPO β=0.1 · round 2"]
    from dpo_lab.evaluation.methods import first_rounds
    from dpo_lab.evaluation.stage import run_identities

    assert first_rounds(run_identities(models), models) == {
        "DPO β=0.1 · round 2": "DPO β=0.1"
    }  # 04 plays these two head to head
    # a new first round makes the second round stale: it is skipped, not compared
    shutil.copytree(run_dir / "03_dpo" / "beta_0.1", tmp_path / "keep")
    (run_dir / "03_dpo" / "beta_0.1" / "manifest.json").write_text(
        json.dumps({**first, "id": "0000000000000000"}), encoding="utf-8"
    )
    models, skipped = discover_models(run_dir)
    assert "DPO β=0.1 · round 2" not in models and any(s.startswith("round2_beta_0.1:") for s in skipped)
