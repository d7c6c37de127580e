"""The autograder end to end: real worker processes, real notebooks, hostile submissions.

- the master notebooks get full marks and the untouched student notebooks get zero, without a crash;
- a class folder gives one JSON per student, class.csv and summary.md, and a filled-in exercise
  (a correct alternative, a classic bug) is scored like the rubric scores it in-process;
- hangs, endless printing, files outside the sandbox, subprocesses, a dying worker, syntax errors and
  a top-level infinite loop, a 6 GB allocation and delegating to the package's own implementation each
  cost only the exercise concerned, with a clear reason.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from grading_cases.mutations import buggy_source

from dpo_lab.cli import main
from dpo_lab.course import rubric
from dpo_lab.course.grader import Limits, grade_notebook
from dpo_lab.course.notebooks import NOTEBOOKS, repo_root
from dpo_lab.course.student import STUDENT_DIR

CASES = Path(__file__).parent / "grading_cases"
MAX_TOTAL = sum(rubric.max_points(n) for n in rubric.EXERCISES)
FAST = Limits(
    exercise_timeout=8, cell_timeout=3, kill_grace=3
)  # legit checks take <= 1.5 s; 8 s leaves room on a loaded machine


def _fill(notebook: Path, exercise: str, source: str) -> None:
    """Replace the exercise cell that defines `exercise` with `source` (as a student would)."""
    nb = nbformat.read(notebook, as_version=4)
    cells = [
        c for c in nb.cells if "exercise" in c.metadata.get("tags", []) and f" {exercise}" in c.source.split("(")[0]
    ]
    assert len(cells) == 1, exercise
    cells[0].source = source
    nbformat.write(nb, notebook)


def _notebook(path: Path, cells: list[str], tag: str = "exercise") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("a submission")]
    nb.cells += [nbformat.v4.new_code_cell(src, metadata={"tags": [tag]}) for src in cells]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_class_folder_masters_full_marks_untouched_zero_and_filled_in_exercises(tmp_path):
    klass = tmp_path / "class"
    (klass / "alice").mkdir(parents=True)
    for name in NOTEBOOKS:
        shutil.copy(repo_root() / name, klass / "alice" / name)
    shutil.copytree(repo_root() / STUDENT_DIR, klass / "bob")
    shutil.copytree(repo_root() / STUDENT_DIR, klass / "carol")
    _fill(
        klass / "carol" / "03-DPO_Training.ipynb",
        "dpo_loss",
        (CASES / "correct" / "dpo_loss__softplus.py").read_text(encoding="utf-8"),
    )
    _fill(klass / "carol" / "02-SFT_Baseline.ipynb", "sequence_logprobs", buggy_source("sequence_logprobs", "no_shift"))
    out = tmp_path / "grades"

    assert main(["grade", str(klass), "--out", str(out), "--jobs", "2"]) == 0

    reports = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "students").glob("*.json")}
    assert sorted(reports) == ["alice", "bob", "carol"]
    alice, bob, carol = reports["alice"], reports["bob"], reports["carol"]
    assert list(alice["exercises"]) == list(rubric.EXERCISES)
    assert alice["total"] == alice["max_total"] == MAX_TOTAL
    assert all(e["failures"] == [] for e in alice["exercises"].values())
    assert bob["total"] == 0 and bob["max_total"] == MAX_TOTAL
    assert all(e["failures"] == ["not implemented yet (NotImplementedError)"] for e in bob["exercises"].values())
    assert carol["exercises"]["dpo_loss"]["points"] == 15
    no_shift = carol["exercises"]["sequence_logprobs"]
    assert 0 < no_shift["points"] < 15 and any(f.startswith("sum over response tokens") for f in no_shift["failures"])
    assert carol["total"] == 15 + no_shift["points"]
    assert set(alice["seconds"]) == set(NOTEBOOKS)

    with open(out / "class.csv", newline="", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert (
        rows["alice"]["total"] == str(MAX_TOTAL) and rows["bob"]["total"] == "0" and rows["carol"]["dpo_loss"] == "15"
    )
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"**{MAX_TOTAL}/{MAX_TOTAL}**" in summary and f"**0/{MAX_TOTAL}**" in summary
    assert "not implemented yet" in summary and "sum over response tokens" in summary


@pytest.mark.slow
def test_json_for_one_notebook_has_the_documented_shape(tmp_path):
    out = tmp_path / "one.json"
    assert (
        main(["grade", str(repo_root() / "03-DPO_Training.ipynb"), "--out", str(tmp_path / "g"), "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["exercises"]) == ["dpo_loss", "dpo_step"]
    for name, entry in report["exercises"].items():
        assert entry["points"] == entry["max_points"] == rubric.max_points(name) and entry["failures"] == []
    assert report["total"] == report["max_total"] == 30


@pytest.mark.slow
def test_hostile_exercises_cost_only_themselves(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("answers", encoding="utf-8")
    escape = outside / "escape.txt"
    path = _notebook(
        tmp_path / "hostile.ipynb",
        [
            "def extract_prompt(chosen_text, rejected_text):\n    while True:\n        pass\n",
            "class PreferenceDataCollator:\n    def __init__(self, tokenizer, max_length=None):\n        pass\n"
            "    def __call__(self, examples):\n        while True:\n            print('spam ' * 100)\n",
            f"def sequence_logprobs(logits, input_ids, loss_mask, average=False):\n    open({str(escape)!r}, 'w').write('x')\n",
            f"def dpo_loss(pc, pr, rc, rr, beta):\n    try:\n        open({str(secret)!r}).read()\n    except BaseException:\n"
            "        pass\n    return dpo_lab.dpo_loss(pc, pr, rc, rr, beta)\n",  # the guard's exception is swallowed: still 0
            "import os\n\ndef dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):\n    os._exit(3)\n",
            (CASES / "correct" / "win_rate__counter.py").read_text(encoding="utf-8"),
        ],
    )
    g = grade_notebook(path, list(rubric.EXERCISES), FAST)
    r = g.results
    assert r["extract_prompt"]["points"] == 0 and "took longer than 8 s" in r["extract_prompt"]["failures"][0]
    assert (
        r["PreferenceDataCollator"]["points"] == 0 and "printed more than" in r["PreferenceDataCollator"]["failures"][0]
    )
    assert (
        r["sequence_logprobs"]["points"] == 0 and "wrote outside the sandbox" in r["sequence_logprobs"]["failures"][0]
    )
    assert not escape.exists()
    assert r["dpo_loss"]["points"] == 0 and "read outside the sandbox" in r["dpo_loss"]["failures"][0]
    assert r["dpo_step"]["points"] == 0 and "grading process died (exit code 3" in r["dpo_step"]["failures"][0]
    assert r["win_rate"]["points"] == 10  # graded by a fresh worker after dpo_step killed the first one


@pytest.mark.slow
def test_broken_cells_and_a_hang_the_alarm_cannot_stop(tmp_path):
    path = _notebook(
        tmp_path / "broken.ipynb",
        [
            "def extract_prompt(chosen_text, rejected_text)\n    return chosen_text\n",  # SyntaxError
            "import subprocess\n\nclass PreferenceDataCollator:\n    pass\n\nsubprocess.run(['true'])\n",  # guard at load time
            "x = 0\nwhile True:\n    x += 1\n",  # a top-level infinite loop: stopped, the next cells still run
            (CASES / "correct" / "sequence_logprobs__cross_entropy.py").read_text(encoding="utf-8"),
            "import signal\n\ndef dpo_loss(pc, pr, rc, rr, beta):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "    while True:\n        pass\n",
            "import sys\n\ndef dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):\n    sys.exit(0)\n",
            "def win_rate(outcomes):\n    hog = bytearray(6 * 2**30)  # 6 GB, more than the worker's 4 GB allowance\n    return 0.5\n",
        ],
    )
    g = grade_notebook(path, list(rubric.EXERCISES), FAST)
    r = g.results
    assert r["extract_prompt"]["points"] == 0 and "SyntaxError" in r["extract_prompt"]["failures"][0]
    assert "(line 1)" in r["extract_prompt"]["failures"][0]
    assert (
        r["PreferenceDataCollator"]["points"] == 0
        and "started a subprocess" in r["PreferenceDataCollator"]["failures"][0]
    )
    assert any("cell 3" in n and "took longer than 3 s" in n for n in g.notes)
    assert r["sequence_logprobs"]["points"] == 15
    assert r["dpo_loss"]["points"] == 0 and "killed" in r["dpo_loss"]["failures"][0]
    assert r["dpo_step"]["points"] == 0 and "SystemExit" in r["dpo_step"]["failures"][0]  # graded by a fresh worker
    assert r["win_rate"]["points"] == 0 and all("MemoryError" in f for f in r["win_rate"]["failures"])


def test_unreadable_notebooks_and_missing_paths_are_reported_not_raised(tmp_path):
    bad = tmp_path / "03-DPO_Training.ipynb"
    bad.write_text("{ not json", encoding="utf-8")
    g = grade_notebook(bad, ["dpo_loss", "dpo_step"])
    assert {n: e["points"] for n, e in g.results.items()} == {"dpo_loss": 0, "dpo_step": 0}
    assert "could not read 03-DPO_Training.ipynb" in g.results["dpo_loss"]["failures"][0]
    assert main(["grade", str(tmp_path / "nowhere")]) == 2


def test_only_imports_and_exercise_cells_run_and_a_lost_tag_is_recovered(tmp_path):
    from dpo_lab.course.grader import exercise_cells

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np", metadata={"tags": ["imports"]}),
        nbformat.v4.new_code_cell("model = train_for_an_hour()"),  # never executed by the grader
        nbformat.v4.new_code_cell("def win_rate(outcomes):\n    return 0.5\n"),
    ]  # no "exercise" tag
    cells, defined, notes = exercise_cells(nb)
    assert defined == ["win_rate"] and "tag is missing" in notes[0]
    assert [c["index"] for c in cells] == [0, 2]


@pytest.mark.slow
def test_calling_the_packages_own_implementation_scores_zero(tmp_path):
    step = (CASES / "correct" / "dpo_step__reference_helper.py").read_text(encoding="utf-8")
    path = _notebook(
        tmp_path / "copied.ipynb",
        [
            "from dpo_lab.evaluation.winrate import win_rate as _theirs\n\ndef win_rate(outcomes):\n    return _theirs(outcomes)\n",
            "def dpo_loss(pc, pr, rc, rr, beta):\n    return dpo_lab.dpo_loss(pc, pr, rc, rr, beta)\n",
            "class PreferenceDataCollator(dpo_lab.PreferenceDataCollator):\n    pass\n",
            "def extract_prompt(chosen_text, rejected_text):\n    return dpo_lab.data.sources.extract_prompt(chosen_text, rejected_text)\n",
            # dpo_step may use the package's dpo_loss and batch_logprobs: they belong to other exercises
            step.replace("dpo_loss(policy_chosen", "dpo_lab.dpo_loss(policy_chosen"),
        ],
    )
    g = grade_notebook(path, ["extract_prompt", "PreferenceDataCollator", "dpo_loss", "dpo_step", "win_rate"], FAST)
    for name in ("extract_prompt", "PreferenceDataCollator", "dpo_loss", "win_rate"):
        assert g.results[name]["points"] == 0, name
        assert "package's own" in g.results[name]["failures"][0], g.results[name]["failures"]
    assert g.results["dpo_step"]["points"] == 15, g.results["dpo_step"]["failures"]


# ----------------------------------------------------------------------------------------- attacks on the grader itself

_UNIMPLEMENTED_03 = (
    "def dpo_loss(pc, pr, rc, rr, beta):\n    raise NotImplementedError\n\n\n"
    "def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):\n    raise NotImplementedError\n"
)


@pytest.mark.slow
def test_forged_messages_on_the_grader_channel_earn_nothing(tmp_path):
    # Attack 1 (issue 15): write the messages of a perfect score to every pipe the worker holds, then exit.
    # Attack 1b: answer the grader's next requests with results claimed from inside the student's function.
    forge_all_pipes = _UNIMPLEMENTED_03 + (
        "import json, os, stat\n"
        "fake = [{'event': 'loaded', 'cell_errors': []}, {'event': 'ready'}] + [\n"
        "    {'event': 'exercise', 'name': n, 'error': '', 'seconds': 0.1, 'printed': '',\n"
        "     'results': [{'name': 'all', 'points': 15, 'max_points': 15, 'message': ''}]} for n in ('dpo_loss', 'dpo_step')]\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "            os.write(fd, ''.join(json.dumps(m) + '\\n' for m in fake).encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    claim_replies = (
        "import json, os, stat\n\n"
        "def dpo_loss(pc, pr, rc, rr, beta):\n"
        "    for fd in range(3, 64):  # claim 'ok, correct' for the next 20 request ids, on every pipe\n"
        "        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "                os.write(fd, ''.join(json.dumps({'id': i, 'ok': '', 'defined': True}) + '\\n' for i in range(1, 20)).encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "    return pc, pc, pc\n"
    )
    forged = grade_notebook(_notebook(tmp_path / "forged.ipynb", [forge_all_pipes]), ["dpo_loss", "dpo_step"], FAST)
    assert {n: r["points"] for n, r in forged.results.items()} == {"dpo_loss": 0, "dpo_step": 0}
    assert all("message channel" in r["failures"][0] for r in forged.results.values()), forged.results
    claimed = grade_notebook(_notebook(tmp_path / "claimed.ipynb", [claim_replies]), ["dpo_loss"], FAST)
    assert claimed.results["dpo_loss"]["points"] == 0
    assert "message channel" in claimed.results["dpo_loss"]["failures"][0]


@pytest.mark.slow
def test_one_submission_breaking_the_channel_does_not_stop_the_class(tmp_path):
    # Attack 2 (issue 15): one line of non-JSON on the worker's pipe used to end `grade` with exit 2 and no report.
    klass = tmp_path / "class"
    (klass / "mallory").mkdir(parents=True)
    (klass / "alice").mkdir()
    shutil.copy(repo_root() / "03-DPO_Training.ipynb", klass / "alice" / "03-DPO_Training.ipynb")
    shutil.copy(repo_root() / "03-DPO_Training.ipynb", klass / "mallory" / "03-DPO_Training.ipynb")
    correct_loss = (CASES / "correct" / "dpo_loss__softplus.py").read_text(encoding="utf-8")
    _fill(klass / "mallory" / "03-DPO_Training.ipynb", "dpo_loss", correct_loss)
    _fill(
        klass / "mallory" / "03-DPO_Training.ipynb",
        "dpo_step",
        "import os, stat\n\nfor fd in range(3, 64):\n    try:\n        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "            os.write(fd, b'this is not JSON\\n')\n    except OSError:\n        pass\n\n\n"
        "def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):\n    raise NotImplementedError\n",
    )
    out = tmp_path / "grades"
    assert main(["grade", str(klass), "--out", str(out), "--timeout", "8"]) == 0
    reports = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "students").glob("*.json")}
    assert sorted(reports) == ["alice", "mallory"]
    assert (
        reports["alice"]["exercises"]["dpo_loss"]["points"] == reports["alice"]["exercises"]["dpo_step"]["points"] == 15
    )
    mallory = reports["mallory"]["exercises"]
    assert mallory["dpo_loss"]["points"] == 15  # its own cell is fine
    assert mallory["dpo_step"]["points"] == 0 and "message channel" in mallory["dpo_step"]["failures"][0]
    assert "not JSON" in mallory["dpo_step"]["failures"][0]


@pytest.mark.slow
def test_a_hang_in_c_code_costs_only_its_exercise_within_the_limit(tmp_path):
    # Attack 3 (issue 15): `sum(range(10**13))` at the top of an exercise cell never returns to Python, so
    # SIGALRM cannot stop it; it used to zero every exercise of the notebook and wait out the start-up limit.
    hang_cell = "sum(range(10**13))\n\n\n" + _UNIMPLEMENTED_03.split("\n\n\n")[1].replace(
        "raise NotImplementedError", "return {}"
    )
    correct_loss = (CASES / "correct" / "dpo_loss__softplus.py").read_text(encoding="utf-8")
    clean = grade_notebook(_notebook(tmp_path / "clean.ipynb", [correct_loss]), ["dpo_loss"], FAST)
    hung = grade_notebook(_notebook(tmp_path / "hung.ipynb", [correct_loss, hang_cell]), ["dpo_loss", "dpo_step"], FAST)
    assert hung.results["dpo_loss"]["points"] == 15
    assert hung.results["dpo_step"]["points"] == 0
    assert "cell 2 took longer than 3 s (killed)" in hung.results["dpo_step"]["failures"][0], hung.results["dpo_step"]
    # one kill (cell limit + grace) and one more worker start-up on top of a clean grading; before the fix the
    # grader waited out the start-up limit (FAST.startup_timeout = 120 s). Generous factor: start-ups vary under load.
    assert hung.seconds < 3 * clean.seconds + FAST.cell_timeout + FAST.kill_grace + 10 < FAST.startup_timeout, (
        hung.seconds,
        clean.seconds,
    )


def test_the_workers_package_copy_has_no_graded_reference_left(tmp_path):
    """Every reference and equivalent of an exercise raises Withheld in that exercise's copy of the package (called
    however: the re-export, the module, rubric.REFERENCES, __wrapped__), while another exercise's stays."""
    import subprocess
    import sys

    from dpo_lab.course import withhold

    withhold.build(["dpo_step", "win_rate"], tmp_path)
    code = (
        "import dpo_lab, dpo_lab.evaluation.winrate as w\n"
        "from dpo_lab.course import rubric, withheld\n"
        "assert dpo_lab.__file__.startswith(%r), dpo_lab.__file__\n"
        "out = []\n"
        "for f in (lambda: dpo_lab.win_rate(['A']), lambda: w.win_rate(['A']), lambda: rubric.REFERENCES['win_rate'](['A']),\n"
        "          lambda: getattr(dpo_lab.win_rate, '__wrapped__', dpo_lab.win_rate)(['A']), lambda: w._as_score('A', 0),\n"
        "          lambda: dpo_lab.dpo_step(None, None, None, None, 0.1), lambda: dpo_lab.training.dpo.DPOLoop.train_step(*[None] * 7)):\n"
        "    try:\n        f(); out.append('available')\n    except withheld.Withheld:\n        out.append('withheld')\n"
        "import torch\nx = torch.zeros(2)\nout.append(float(dpo_lab.dpo_loss(x, x, x, x, 0.1)[0][0]))\n"
        "print(out)\n"
    ) % str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(["withheld"] * 7 + [0.6931471824645996]), done.stdout
    assert withhold.worker_groups(["dpo_loss", "dpo_step"]) == [["dpo_loss"], ["dpo_step"]]  # dpo_step uses dpo_loss
    with pytest.raises(LookupError):  # a reference that moved is an error, never silently left in place
        withhold.stripped_source("def other():\n    pass\n", "m", {"win_rate"})
