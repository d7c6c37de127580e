"""The rubric catches every classic DPO bug and accepts every correct style (tests/grading_cases/).

Each bug must lose points on the check its first line names; each correct alternative must get full
marks. The same rubric drives the notebooks' self-checks and the autograder, so this is what both do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dpo_lab import rubric
from dpo_lab.sandbox import PREAMBLE

CASES = Path(__file__).parent / "grading_cases"
BUGS = sorted((CASES / "bugs").glob("*.py"))
CORRECT = sorted((CASES / "correct").glob("*.py"))


def load_case(path: Path):
    """(exercise name, the object the file defines) — executed like a notebook's exercise cell."""
    exercise = path.stem.split("__")[0]
    namespace: dict = {}
    exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)  # noqa: S102 - test fixtures
    for key, other in rubric.USES.get(exercise, {}).items():
        namespace[key] = rubric.reference_object(other)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102
    return exercise, namespace[exercise]


def test_every_exercise_has_bugs_and_alternatives():
    for exercise in rubric.EXERCISES:
        assert any(p.stem.startswith(exercise + "__") for p in BUGS), f"no buggy {exercise} in grading_cases/bugs"
        assert any(p.stem.startswith(exercise + "__") for p in CORRECT), f"no alternative {exercise} in grading_cases/correct"
    assert len(BUGS) >= 30


@pytest.mark.parametrize("path", BUGS, ids=lambda p: p.stem)
def test_every_classic_bug_is_caught(path):
    exercise, obj = load_case(path)
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# caught by: "), f"{path.name}: first line must name the check that catches it"
    expected = first_line.removeprefix("# caught by: ").strip()
    results = rubric.grade_object(exercise, obj)
    names = [r.name for r in results]
    assert expected in names, f"{path.name}: no check named {expected!r} in {names}"
    failed = {r.name: r.message for r in results if not r.passed}
    assert expected in failed, f"{path.name}: the bug passed {expected!r} (failed: {sorted(failed)})"
    assert "hint:" in failed[expected], "a failed check must give the student a hint"
    assert sum(r.points for r in results) < rubric.max_points(exercise)


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_every_correct_alternative_gets_full_marks(path):
    exercise, obj = load_case(path)
    results = rubric.grade_object(exercise, obj)
    assert [r.message for r in results if not r.passed] == []
    assert sum(r.points for r in results) == rubric.max_points(exercise)


@pytest.mark.parametrize("exercise", list(rubric.EXERCISES))
def test_the_package_reference_gets_full_marks(exercise):
    results = rubric.grade_object(exercise, rubric.reference_object(exercise))
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


def test_a_missing_or_unfinished_exercise_scores_zero():
    def unfinished(*args, **kwargs):
        raise NotImplementedError("練習 4")

    for exercise in rubric.EXERCISES:
        assert sum(r.points for r in rubric.grade_object(exercise, None)) == 0
        results = rubric.grade_object(exercise, unfinished)
        assert sum(r.points for r in results) == 0
        assert {r.message for r in results} == {"not implemented yet"}
