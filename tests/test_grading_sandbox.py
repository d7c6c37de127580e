"""The grader against a hostile class (issue 29): the operating-system sandbox, withheld references, drawn inputs,
exceptions by isinstance, several candidate notebooks and reports that are safe to open.

Each test is one kind of attack or accident; the hidden variants of each kind are why the defences are structural
(nothing outside the sandbox exists for the worker; the answer is not in its copy of the package; inputs change
per run) rather than a list of the attacks seen so far.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from dpo_lab.cli import main
from dpo_lab.course import grader, isolation, rubric
from dpo_lab.course.grader import GradingRun, Limits, grade_notebook
from dpo_lab.course.notebooks import repo_root
from dpo_lab.course.student import STUDENT_DIR

CASES = Path(__file__).parent / "grading_cases"
FAST = Limits(exercise_timeout=8, cell_timeout=5, kill_grace=3)
NB04 = "04-Evaluation_and_Compare.ipynb"

needs_bwrap = pytest.mark.skipif(
    isolation.bwrap_path() is None, reason="bubblewrap is not installed (CI installs it: apt-get install bubblewrap)"
)


def _notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": ["exercise"]}) for src in cells]
    nbformat.write(nb, path)
    return path


@needs_bwrap
@pytest.mark.slow
def test_switching_the_guards_off_reaches_nothing_outside_and_nothing_outlives_grading(tmp_path):
    klass, out = tmp_path / "class", tmp_path / "grades"
    (klass / "alice").mkdir(parents=True)
    shutil.copy(repo_root() / NB04, klass / "alice" / NB04)
    alice_before = (klass / "alice" / NB04).read_bytes()
    package = Path(grader.__file__).resolve().parents[1]
    targets = [klass / "alice" / NB04, package / "planted.py", out / "class.csv", tmp_path / "late.txt"]
    attack = (
        "import os, sys, time\n"
        "sys.modules['__main__']._STATE.armed = False  # every in-process guard off\n"
        f"TARGETS = {[str(t) for t in targets]!r}\n"
        "def _write_everywhere():\n"
        "    for t in TARGETS:\n"
        "        try:\n"
        "            os.makedirs(os.path.dirname(t), exist_ok=True)\n"
        "            open(t, 'w').write('student,total\\nmallory,78\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "_write_everywhere()\n"
        "if os.fork() == 0:  # a detached process that waits for grading to end, then rewrites the reports\n"
        "    os.setsid()\n"
        "    time.sleep(4)\n"
        "    _write_everywhere()\n"
        "    os._exit(0)\n"
        "import dpo_lab\n"
        "from dpo_lab.course import rubric\n"
        "def win_rate(outcomes):\n"
        "    try:\n"
        "        return rubric.REFERENCES['win_rate'](outcomes)\n"
        "    except BaseException:\n"
        "        return getattr(dpo_lab.win_rate, '__wrapped__', dpo_lab.win_rate)(outcomes)\n"
    )
    (klass / "mallory").mkdir()
    _notebook(klass / "mallory" / NB04, [attack])
    assert main(["grade", str(klass), "--out", str(out), "--timeout", "8"]) == 0
    csv_before = (out / "class.csv").read_text(encoding="utf-8")
    time.sleep(6)  # the detached process would have written by now
    assert (klass / "alice" / NB04).read_bytes() == alice_before
    assert not (package / "planted.py").exists() and not (tmp_path / "late.txt").exists()
    assert (out / "class.csv").read_text(encoding="utf-8") == csv_before
    reports = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "students").glob("*.json")}
    assert reports["alice"]["exercises"]["win_rate"]["points"] == 10
    mallory = reports["mallory"]["exercises"]["win_rate"]
    assert mallory["points"] == 0 and "package's own" in mallory["failures"][0], mallory
    assert reports["mallory"]["sandbox"] == "bubblewrap" and isinstance(reports["mallory"]["seed"], int)


@needs_bwrap
@pytest.mark.slow
def test_printing_gigabytes_through_fd_1_is_bounded_and_scores_zero(tmp_path):
    flood = (
        "import os\n\ndef win_rate(outcomes):\n    for _ in range(1500):\n        os.write(1, b'x' * 2**20)\n"
        "    return 0.5\n"
    )
    limits = Limits(exercise_timeout=30, cell_timeout=5, kill_grace=3, file_mb=8)
    run = GradingRun.start(seed=3)
    try:
        g = grade_notebook(_notebook(tmp_path / "flood.ipynb", [flood]), ["win_rate"], limits, run)
        assert not any(p.stat().st_size > 9 * 2**20 for p in run.root.rglob("*") if p.is_file())
    finally:
        run.close()
    result = g.results["win_rate"]
    assert result["points"] == 0 and "8 MB limit" in result["failures"][0], result


@needs_bwrap
@pytest.mark.slow
def test_an_exception_subclass_is_its_base_class(tmp_path):
    source = (CASES / "correct" / "extract_prompt__rpartition.py").read_text(encoding="utf-8")
    source = "class PairError(ValueError):\n    pass\n\n\n" + source.replace("raise ValueError", "raise PairError")
    assert "raise PairError" in source
    g = grade_notebook(_notebook(tmp_path / "sub.ipynb", [source]), ["extract_prompt"], FAST)
    assert g.results["extract_prompt"]["points"] == 10, g.results["extract_prompt"]["failures"]


def test_outputs_hard_coded_for_one_runs_inputs_fail_the_next():
    with rubric.drawing(11):
        table = {
            tuple(rubric._outcomes(k)): rubric.win_rate(rubric._outcomes(k))
            for k in ("letters", "numbers", "ties", "all ties")
        }

    def lookup(outcomes):
        if not outcomes:
            raise ValueError("empty")
        return table.get(tuple(outcomes), 0.0)

    with rubric.drawing(11):
        assert sum(r.points for r in rubric.grade_object("win_rate", lookup)) == 10  # the run it was built for
    with rubric.drawing(12):
        assert sum(r.points for r in rubric.grade_object("win_rate", lookup)) <= 4  # at most "empty" and a lucky tie


def test_report_file_names_are_unique_and_both_reports_are_safe_to_open(tmp_path):
    names = ["a b", "a?b", "a_b", "A_B", "x|y\nz", "=1+2", "@SUM(A1)", "-2+3", "+cmd"]
    reports = [
        {
            "student": n,
            "exercises": {"win_rate": {"points": 10, "max_points": 10, "failures": []}},
            "total": 10,
            "max_total": 10,
            "notes": [f"note | for {n}"],
            "seed": 1,
            "sandbox": "bubblewrap",
        }
        for n in names
    ]
    grader.write_reports(reports, tmp_path)
    files = sorted((tmp_path / "students").glob("*.json"))
    assert len(files) == len(names)
    assert sorted(json.loads(f.read_text(encoding="utf-8"))["student"] for f in files) == sorted(names)
    with open(tmp_path / "class.csv", newline="", encoding="utf-8") as f:
        cells = [row["student"] for row in csv.DictReader(f)]
    assert all(not c.startswith(("=", "+", "-", "@")) for c in cells), cells
    assert "'=1+2" in cells and "'@SUM(A1)" in cells
    table = [
        line for line in (tmp_path / "summary.md").read_text(encoding="utf-8").splitlines() if line.startswith("| ")
    ]
    rows = table[1 : 1 + len(names)]  # after the header
    assert len(rows) == len(names) and all(r.replace("\\|", "").count("|") == 4 for r in rows), rows


@needs_bwrap
@pytest.mark.slow
def test_several_notebooks_for_one_exercise_are_flagged_for_grading_by_hand(tmp_path):
    student = tmp_path / "dave"
    student.mkdir()
    shutil.copy(repo_root() / STUDENT_DIR / NB04, student / NB04)  # blank
    shutil.copy(repo_root() / NB04, student / f"final_{NB04}")  # solved
    out = tmp_path / "grades"
    assert main(["grade", str(student), "--out", str(out), "--timeout", "8"]) == 0
    report = json.loads((out / "students" / "dave.json").read_text(encoding="utf-8"))
    entry = report["exercises"]["win_rate"]
    assert report["needs_review"] and entry["needs_review"]
    assert entry["candidates"] == {NB04: 0, f"final_{NB04}": 10}
    assert entry["failures"][0].startswith("grade by hand")
    assert "Grade by hand" in (out / "summary.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_without_bubblewrap_grading_refuses_unless_told_unsafe(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    path = _notebook(tmp_path / "one.ipynb", [(CASES / "correct" / "win_rate__counter.py").read_text(encoding="utf-8")])
    assert main(["grade", str(path), "--out", str(tmp_path / "refused")]) == 2
    assert "bubblewrap" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(["grade", str(path), "--out", str(tmp_path / "unsafe"), "--unsafe", "--timeout", "8"]) == 0
    report = json.loads((tmp_path / "unsafe" / "students" / "one.json").read_text(encoding="utf-8"))
    assert report["exercises"]["win_rate"]["points"] == 10 and "--unsafe" in report["sandbox"]
    assert "--unsafe" in (tmp_path / "unsafe" / "summary.md").read_text(encoding="utf-8")
