"""The rubric catches every classic DPO bug and accepts every correct style (tests/grading_cases/).

Bugs are the master notebooks' own solutions with one classic mistake edited in (grading_cases/mutations.py),
plus whole-file bugs that are a different algorithm (grading_cases/bugs/). Each must lose points on the
check it names; each correct alternative (grading_cases/correct/) must get full marks. The same rubric
drives the notebooks' self-checks and the autograder, so this is what both do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from grading_cases.mutations import BUGS as MUTATIONS
from grading_cases.mutations import Bug, master_solutions, mutate

from dpo_lab.course import rubric
from dpo_lab.course.sandbox import PREAMBLE

CASES = Path(__file__).parent / "grading_cases"
WHOLE_FILE_BUGS = sorted((CASES / "bugs").glob("*.py"))
CORRECT = sorted((CASES / "correct").glob("*.py"))
SOLUTIONS = master_solutions()


def load_source(exercise: str, source: str, filename: str):
    """The object `source` defines — executed like a notebook's exercise cell by the grader."""
    namespace: dict = {}
    exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)  # noqa: S102 - test fixtures
    for key, other in rubric.USES.get(exercise, {}).items():
        namespace[key] = rubric.reference_object(other)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return namespace[exercise]


def load_case(path: Path):
    exercise = path.stem.split("__")[0]
    return exercise, load_source(exercise, path.read_text(encoding="utf-8"), str(path))


def _whole_file_bug(path: Path) -> Bug:
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# caught by: "), f"{path.name}: first line must name the check that catches it"
    return Bug(path.stem.split("__")[0], path.stem.split("__")[1], first_line.removeprefix("# caught by: ").strip(), ())


ALL_BUGS = [(b, None) for b in MUTATIONS] + [(_whole_file_bug(p), p) for p in WHOLE_FILE_BUGS]


def test_every_exercise_has_bugs_and_alternatives():
    assert sorted(SOLUTIONS) == sorted(rubric.EXERCISES)
    for exercise in rubric.EXERCISES:
        assert any(b.exercise == exercise for b, _ in ALL_BUGS), f"no classic bug for {exercise}"
        assert any(p.stem.startswith(exercise + "__") for p in CORRECT), (
            f"no alternative {exercise} in grading_cases/correct"
        )
    assert len(ALL_BUGS) >= 35
    assert len({(b.exercise, b.name) for b, _ in ALL_BUGS}) == len(ALL_BUGS)


def test_the_unedited_master_solutions_get_full_marks():
    for exercise, source in SOLUTIONS.items():
        results = rubric.grade_object(exercise, load_source(exercise, source, f"<master {exercise}>"))
        assert all(r.passed for r in results), (exercise, [r.message for r in results if not r.passed])


@pytest.mark.parametrize("bug,path", ALL_BUGS, ids=lambda x: f"{x.exercise}-{x.name}" if isinstance(x, Bug) else "")
def test_every_classic_bug_is_caught(bug, path):
    exercise, expected = bug.exercise, bug.caught_by
    if path is None:
        obj = load_source(exercise, mutate(SOLUTIONS[exercise], bug), f"<{exercise} with {bug.name}>")
    else:
        obj = load_case(path)[1]
    results = rubric.grade_object(exercise, obj)
    names = [r.name for r in results]
    assert expected in names, f"{bug.name}: no check named {expected!r} in {names}"
    failed = {r.name: r.message for r in results if not r.passed}
    assert expected in failed, f"{bug.name}: the bug passed {expected!r} (failed: {sorted(failed)})"
    assert rubric.HINT_MARK in failed[expected], "a failed check must give the student a hint"
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
