"""Student notebooks: generated from the masters, never stale, solutions and instructor answers removed, and an
untouched student notebook still runs end to end (the self-checks say "not implemented" and the reference is used)."""

from __future__ import annotations

import json

import nbformat
import pytest

from dpo_lab.course import selfcheck
from dpo_lab.course.notebooks import NOTEBOOKS, repo_root, run_lab
from dpo_lab.course.student import BEGIN, END, STUDENT_DIR, exercise_name, stale_student_notebooks, strip_solution

STUDENT = repo_root() / STUDENT_DIR
EXERCISES = ["extract_prompt", "PreferenceDataCollator", "sequence_logprobs", "dpo_loss", "dpo_step", "win_rate"]


def _cells(folder, name, tag):
    return [c for c in nbformat.read(folder / name, as_version=4).cells if tag in c.metadata.get("tags", [])]


def test_committed_student_notebooks_are_up_to_date():
    assert stale_student_notebooks() == [], "run: python -m dpo_lab student-notebooks"


def test_solutions_and_instructor_answers_are_removed_and_exercises_numbered():
    found = []
    for name in NOTEBOOKS:
        nb = nbformat.read(STUDENT / name, as_version=4)
        text = nbformat.writes(nb)
        assert BEGIN not in text and END not in text
        assert not _cells(STUDENT, name, "instructor") and _cells(repo_root(), name, "instructor")
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        masters = _cells(repo_root(), name, "exercise")
        students = _cells(STUDENT, name, "exercise")
        assert len(students) == len(masters)
        for master, student in zip(masters, students):
            found.append(exercise_name(master.source))
            assert f'NotImplementedError("練習 {len(found)}: implement {found[-1]}' in student.source
            solution = master.source.split(BEGIN)[1].split(END)[0].strip().splitlines()
            assert not any(line.strip() and line in student.source for line in solution if len(line.strip()) > 20)
        assert len(nb.cells) == len(nbformat.read(repo_root() / name, as_version=4).cells) - len(
            _cells(repo_root(), name, "instructor")
        )
    assert found == EXERCISES


def test_unfinished_exercises_raise_and_fail_their_self_checks(tokenizer):
    namespace: dict = {}
    for name in NOTEBOOKS:
        for cell in _cells(STUDENT, name, "exercise"):
            exec(compile(cell.source, f"{name}:exercise", "exec"), namespace)  # noqa: S102 - our own generated notebooks
    with pytest.raises(NotImplementedError, match="練習 1"):
        namespace["extract_prompt"]("\n\nHuman: a\n\nAssistant: b", "\n\nHuman: a\n\nAssistant: c")
    with pytest.raises(NotImplementedError, match="練習 6"):
        namespace["win_rate"](["A"])
    assert selfcheck.check_win_rate(namespace["win_rate"], verbose=False) is False
    assert selfcheck.check_dpo_loss(namespace["dpo_loss"], verbose=False) is False


def test_strip_solution_keeps_indentation_and_rejects_broken_markers():
    source = "class C:\n    def f(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n"
    assert strip_solution(source, 7) == (
        "class C:\n    def f(self):\n"
        '        raise NotImplementedError("練習 7: implement C (see the instructions above)")\n'
    )
    with pytest.raises(ValueError, match="never closed"):
        strip_solution("def f():\n    ### BEGIN SOLUTION\n    return 1\n", 1)
    with pytest.raises(ValueError, match="without"):
        strip_solution("def f():\n    pass\n    ### END SOLUTION\n    ### BEGIN SOLUTION\n", 1)


@pytest.mark.slow
def test_untouched_student_notebooks_run_end_to_end_on_the_reference(tmp_path):
    results = run_lab("smoke", tmp_path / "run", root=STUDENT, progress=False)
    results += run_lab("smoke", tmp_path / "run", root=STUDENT, only=["03"], beta=0.5, progress=False)
    assert [r["notebook"] for r in results] == list(NOTEBOOKS) + [NOTEBOOKS[2]]
    used_reference = 0
    for r in results:
        for cell in nbformat.read(r["output"], as_version=4).cells:
            for out in cell.get("outputs", []):
                assert out.output_type != "error", f"{r['notebook']}: {out.get('ename')}: {out.get('evalue')}"
                used_reference += "後面的儲存格改用參考實作" in out.get("text", "")
    assert used_reference == len(EXERCISES) + 2  # the re-run 03 falls back for dpo_loss and dpo_step again
    run = tmp_path / "run"
    # the reference path keeps the reference log-prob cache: computed by the first 03, reused by the second beta
    assert json.loads((run / "03_dpo" / "beta_0.1" / "manifest.json").read_text())["metrics"][
        "reference_cache"
    ].startswith("computed")
    assert (
        json.loads((run / "03_dpo" / "beta_0.5" / "manifest.json").read_text())["metrics"]["reference_cache"] == "hit"
    )
    assert _implementations(run / "02_sft") == {"sequence_logprobs": "reference"}
    assert _implementations(run / "03_dpo" / "beta_0.1") == {"dpo_loss": "reference", "dpo_step": "reference"}


def _implementations(folder):
    import json

    return json.loads((folder / "manifest.json").read_text())["metrics"]["implementations"]


PREAMBLE = "import math\n\nimport torch\nimport torch.nn.functional as F\n\nimport dpo_lab\n\n"
FILLED = {  # notebook -> (exercise, a correct alternative in another style than the master's)
    "02-SFT_Baseline.ipynb": [("sequence_logprobs", "sequence_logprobs__cross_entropy.py")],
    "03-DPO_Training.ipynb": [("dpo_loss", "dpo_loss__softplus.py"), ("dpo_step", "dpo_step__separate_forwards.py")],
}


@pytest.mark.slow
def test_a_students_own_functions_train_the_models(tmp_path):
    """Student notebooks filled with correct alternatives: 02 and 03 train with THOSE functions (their manifests say
    so).
    """
    import shutil

    folder = tmp_path / "alice"
    shutil.copytree(STUDENT, folder)
    cases = repo_root() / "tests" / "grading_cases" / "correct"
    for name, fills in FILLED.items():
        nb = nbformat.read(folder / name, as_version=4)
        for exercise, case in fills:
            [cell] = [
                c
                for c in nb.cells
                if "exercise" in c.metadata.get("tags", []) and f" {exercise}" in c.source.split("(")[0]
            ]
            cell.source = PREAMBLE + (cases / case).read_text(encoding="utf-8")
        nbformat.write(nb, folder / name)
    run = tmp_path / "run"
    results = run_lab("smoke", run, root=folder, only=["01", "02", "03"], progress=False)
    texts = [
        out.get("text", "")
        for r in results
        for cell in nbformat.read(r["output"], as_version=4).cells
        for out in cell.get("outputs", [])
    ]
    for exercise in ("sequence_logprobs", "dpo_loss", "dpo_step"):
        assert any(f"使用你的 {exercise}" in t for t in texts), exercise
    assert _implementations(run / "02_sft") == {"sequence_logprobs": "student"}
    assert _implementations(run / "03_dpo" / "beta_0.1") == {"dpo_loss": "student", "dpo_step": "student"}
    assert any("trained by: dpo_loss = student (yours), dpo_step = student (yours)" in t for t in texts)
