"""The exact values quoted in notebooks 02 and 03 (CS336 style), recomputed without the package's code path.

The rules written in the exercise text — append the EOS text, tokenize prompt + response + EOS as ONE
string, the prompt is the common token prefix, score every response token including EOS, sum in fp32 —
are applied here by hand with a per-token loop over the raw tokenizer output, so a student following
the text reproduces the published numbers.
"""

from __future__ import annotations

import math

import nbformat
import torch

from dpo_lab.course import grading_fixture as fx
from dpo_lab.course import rubric
from dpo_lab.course.notebooks import repo_root


def _by_hand(model, tokenizer, prompt: str, response: str) -> float:
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
    n_prompt = 0
    while n_prompt < len(prompt_ids) and prompt_ids[n_prompt] == full[n_prompt]:
        n_prompt += 1
    assert full[-1] == tokenizer.eos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    total = 0.0
    for t in range(n_prompt, len(full)):  # token t is predicted by position t - 1
        total += float(logits[t - 1, full[t]] - torch.logsumexp(logits[t - 1], dim=0))
    return total


def test_published_values_follow_from_the_written_rules():
    tok = fx.fixture_tokenizer()
    policy, reference = fx.fixture_models()
    pc = _by_hand(policy, tok, fx.EXACT_PROMPT, fx.EXACT_CHOSEN)
    pr = _by_hand(policy, tok, fx.EXACT_PROMPT, fx.EXACT_REJECTED)
    rc = _by_hand(reference, tok, fx.EXACT_PROMPT, fx.EXACT_CHOSEN)
    rr = _by_hand(reference, tok, fx.EXACT_PROMPT, fx.EXACT_REJECTED)
    assert abs(pc - rc) > 1 and abs(pc - pr) > 1, (
        "the fixture models must differ (a copy gives ln 2 whatever the code does)"
    )
    margin = fx.EXACT_BETA * ((pc - rc) - (pr - rr))
    loss = math.log1p(math.exp(-margin))
    assert round(pc, 4) == rubric.EXACT_CHOSEN_LOGP
    assert round(loss, 4) == rubric.EXACT_LOSS
    assert abs(loss - math.log(2)) > 0.1


def test_the_notebooks_quote_the_rubrics_values():
    text = {
        name: "\n".join(
            c.source for c in nbformat.read(repo_root() / name, as_version=4).cells if c.cell_type == "markdown"
        )
        for name in ("02-SFT_Baseline.ipynb", "03-DPO_Training.ipynb")
    }
    assert f"{rubric.EXACT_CHOSEN_LOGP:.4f}" in text["02-SFT_Baseline.ipynb"]
    assert (
        fx.EXACT_CHOSEN.strip() in text["02-SFT_Baseline.ipynb"]
        and repr(fx.EXACT_PROMPT)[1:-1] in text["02-SFT_Baseline.ipynb"]
    )
    assert (
        f"{rubric.EXACT_LOSS:.4f}" in text["03-DPO_Training.ipynb"]
        and fx.EXACT_REJECTED.strip() in text["03-DPO_Training.ipynb"]
    )


def test_shipped_fixture_tokenizer_is_the_one_the_builder_makes(tmp_path):
    fx.build_fixture(tmp_path)
    rebuilt = (tmp_path / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    assert rebuilt == (fx.FIXTURE_DIR / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    assert tmp_path.joinpath("policy", "model.safetensors").exists()
