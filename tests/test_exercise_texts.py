"""Every rule the rubric grades is stated in the exercise text the student has (master and student notebooks).

A check whose rule is not written down makes a correct-minded student lose points. Each rubric check
is mapped to the sentences that state it; a new check without a mapping, or a text edit that drops a
sentence, fails here.
"""

from __future__ import annotations

import nbformat
import pytest

from dpo_lab.course import rubric
from dpo_lab.course.notebooks import NOTEBOOKS, repo_root
from dpo_lab.course.student import STUDENT_DIR, exercise_name

FORMULA = "losses = -logsigmoid(beta * ((πc − refc) − (πr − refr)))"
RULES: dict[str, dict[str, list[str]]] = {
    "extract_prompt": {
        "single turn": ["從開頭到（並包含）最後一個", "**response** = 最後一個"],
        "multi-turn, responses that start alike": ["前面的 Human/Assistant 回合都屬於 prompt", "共同前綴"],
        "no Assistant turn → ValueError": ['找不到 `"\\n\\nAssistant:"`', "`raise ValueError`"],
        "different prompts → ValueError": ["兩段逐字稿的 prompt 不同時，`raise ValueError`"],
    },
    "PreferenceDataCollator": {
        "rows = [all chosen; all rejected], tokens and attention_mask": [
            "**[所有 chosen；所有 rejected]**",
            "每一列 = `prompt_ids + chosen_ids`",
            "T = 這一批在截斷之後最長那一列的長度",
        ],
        "loss_mask: 1 on response tokens only": [
            "`loss_mask` 只在 response token（含結尾的 EOS）為 1，prompt 與 padding 為 0"
        ],
        "EOS is scored even though pad == eos": ["pad == eos，所以要用**長度**建遮罩"],
        "max_length keeps the first tokens": ["只保留**前** `max_length` 個 token"],
    },
    "sequence_logprobs": {
        "sum over response tokens": ["每一列 response 的 log-prob 加總", "**遮罩也要一起位移**"],
        "average=True gives the mean over response tokens": ["`average=True` 時為平均"],
        "prompt and padding tokens do not count": ["prompt 與 padding 不算"],
        "gradients flow to the logits": ["必須保留梯度"],
        "bf16 logits are scored in fp32": ["先 `.float()` 再做 log-softmax"],
        "exact value: log π(chosen) = -247.2251": ["-247.2251"],
    },
    "dpo_loss": {
        "policy == reference → every loss is ln 2": [FORMULA],
        "per-pair losses": ["回傳**每一對**的 loss"],
        "implicit rewards = beta * (policy - reference)": [
            "`chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)`"
        ],
        "swapping chosen and rejected flips the margin": [FORMULA],
        "rewards detached, losses differentiable": ["**`.detach()`**", "梯度只經過 loss"],
        "finite for large margins": ["`torch.nn.functional.logsigmoid` 比 `torch.log(torch.sigmoid(x))` 數值穩定"],
        "exact value: loss = 0.2560": ["0.2560"],
    },
    "dpo_step": {
        "loss, rewards and updated weights match the reference step": [
            "`losses.mean()`",
            "`dpo_metrics` 要拿到**全部五個引數**",
        ],
        "the gradient norm is clipped to max_grad_norm": ["梯度被裁剪到 `max_grad_norm`", "**裁剪之前**的梯度範數"],
        "two steps in a row (gradients zeroed)": ["每一步都先 `zero_grad`"],
        "the reference gets no gradient and does not change": ["`requires_grad` 是 True 也**不能**得到梯度"],
    },
    "win_rate": {
        "'A' / 'B' / 'tie' outcomes": ['`"A"`、`"B"`、`"tie"`'],
        "numbers are scores: 1, 0, 0.5": ["`1`、`0`、`0.5`"],
        "ties count half and stay in the denominator": ["平手算一半"],
        "all ties → 0.5": ["平手算一半"],
        "empty list → ValueError": ["空 list 要 `raise ValueError`"],
    },
}


def _instructions(folder) -> dict[str, str]:
    """exercise name -> the markdown a student reads since the previous exercise (what they have when writing it)."""
    out: dict[str, str] = {}
    for name in NOTEBOOKS:
        text: list[str] = []
        for cell in nbformat.read(folder / name, as_version=4).cells:
            tags = cell.metadata.get("tags", [])
            if "exercise" in tags:
                source = cell.source
                out[exercise_name(source) if "BEGIN SOLUTION" in source else _defined(source)] = "\n".join(text)
                text = []
            elif cell.cell_type == "markdown" and "instructor" not in tags:
                text.append(cell.source)
    return out


def _defined(source: str) -> str:
    import re

    return re.findall(r"^(?:def|class) (\w+)", source, flags=re.M)[-1]


def test_every_rubric_check_has_a_stated_rule():
    for exercise, checks in rubric.EXERCISES.items():
        assert set(RULES[exercise]) == {c.name for c in checks}, exercise


@pytest.mark.parametrize("folder", [repo_root(), repo_root() / STUDENT_DIR], ids=["master", "student"])
def test_exercise_texts_state_every_graded_rule(folder):
    texts = _instructions(folder)
    assert set(texts) == set(RULES)
    missing = [
        f"{exercise} / {check}: {phrase!r}"
        for exercise, checks in RULES.items()
        for check, phrases in checks.items()
        for phrase in phrases
        if phrase not in texts[exercise]
    ]
    assert not missing, "\n".join(missing)
