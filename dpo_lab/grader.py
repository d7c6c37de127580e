"""The autograder: ``python -m dpo_lab grade PATH... [--json OUT] [--out grades/]``.

A PATH is a notebook (one submission), a folder holding notebooks (one student's submission) or a
folder of such folders (a class). For each notebook only the cells tagged ``exercise`` (and any tagged
``imports``) are executed — no kernel, no data, no training — in a guarded worker process
(:mod:`dpo_lab.sandbox`), and each exercise is tested by :mod:`dpo_lab.rubric` against the package's
reference on the shipped fixtures. Output: one JSON per student, ``class.csv`` and ``summary.md``.

The grader never crashes on a submission: unreadable notebooks, syntax errors, exceptions, hangs,
endless printing, files touched outside the sandbox and a dying worker all become 0 points for the
exercise concerned, with the reason in ``failures``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rubric
from .atomic import atomic_write_text

LAB_EXERCISES = list(rubric.EXERCISES)
_TOP_LEVEL_DEF = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)


@dataclass
class Limits:
    exercise_timeout: float = 60.0  # seconds for all checks of one exercise
    cell_timeout: float = 30.0  # seconds to execute one exercise cell
    max_output: int = 100_000  # characters a submission may print per cell or exercise
    startup_timeout: float = 120.0  # importing torch + loading fixtures in a fresh worker
    memory_mb: int = 4096  # address space a worker may add after loading torch and the fixtures
    kill_grace: float = 15.0  # extra seconds before the worker is killed when the in-process alarm could not stop it


@dataclass
class Submission:
    name: str
    notebooks: list[Path]
    expected: list[str]  # exercises this submission is graded on (missing ones score 0)


@dataclass
class NotebookGrade:
    path: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cell_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------- which exercises where


def master_exercises() -> dict[str, list[str]]:
    """``{master notebook file name: [exercise names]}`` read from the master notebooks."""
    import nbformat

    from .notebooks import NOTEBOOKS, repo_root

    out = {}
    for name in NOTEBOOKS:
        path = repo_root() / name
        if path.exists():
            nb = nbformat.read(path, as_version=4)
            out[name] = [n for c in nb.cells if "exercise" in c.metadata.get("tags", [])
                         for n in _TOP_LEVEL_DEF.findall(c.source) if n in rubric.EXERCISES]
    return out


def _expected_for(path: Path, tagged: list[str], masters: dict[str, list[str]]) -> list[str]:
    for master, names in masters.items():
        if path.name.endswith(master) or Path(master).stem in path.stem:
            return names
    return [n for n in LAB_EXERCISES if n in tagged]


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".ipynb" and p.is_file() and not p.name.startswith("."))


def find_submissions(paths: list[str | Path]) -> list[Submission]:
    """Submissions named by file stem (a notebook) or folder name (a student's folder)."""
    masters = master_exercises()
    subs: list[Submission] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such notebook or folder")
        if path.is_file():
            if path.suffix != ".ipynb":
                raise ValueError(f"{path}: not a notebook (.ipynb)")
            subs.append(Submission(path.stem, [path], _expected_for(path, [], masters) or LAB_EXERCISES))
            continue
        own = _notebooks_in(path)
        if own:
            subs.append(Submission(path.resolve().name, own, LAB_EXERCISES))
            continue
        students = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _notebooks_in(p))
        if not students:
            raise FileNotFoundError(f"{path}: no .ipynb file in it or in its sub-folders")
        subs += [Submission(s.name, _notebooks_in(s), LAB_EXERCISES) for s in students]
    seen: dict[str, int] = {}
    for sub in subs:  # two "03-DPO_Training" files from different folders stay apart
        seen[sub.name] = seen.get(sub.name, 0) + 1
        if seen[sub.name] > 1:
            sub.name = f"{sub.name}-{seen[sub.name]}"
    return subs


def exercise_cells(nb) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """``(cells to execute, exercise names they define, notes)``.

    Cells tagged ``exercise`` or ``imports``; an exercise whose tag was lost (some editors drop cell
    metadata) is looked up as a top-level ``def``/``class`` in the untagged code cells.
    """
    cells, defined, notes = [], [], []
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and ("exercise" in tags or "imports" in tags):
            cells.append({"index": i, "source": cell.get("source", "")})
            defined += [n for n in _TOP_LEVEL_DEF.findall(cell.get("source", "")) if n in rubric.EXERCISES]
    for name in LAB_EXERCISES:
        if name in defined:
            continue
        for i, cell in enumerate(nb.cells):
            if cell.get("cell_type") == "code" and name in _TOP_LEVEL_DEF.findall(cell.get("source", "")):
                cells.append({"index": i, "source": cell["source"]})
                defined.append(name)
                notes.append(f"{name}: found in untagged cell {i} (its 'exercise' tag is missing)")
                break
    cells.sort(key=lambda c: c["index"])
    return cells, defined, notes


# ----------------------------------------------------------------------------------------------- one notebook


def _zero(max_points: int, reason: str) -> dict[str, Any]:
    return {"points": 0, "max_points": max_points, "failures": [reason], "checks": []}


def _from_worker(message: dict[str, Any], name: str) -> dict[str, Any]:
    max_points = rubric.max_points(name)
    checks = message["results"]
    if message["error"]:
        return {**_zero(max_points, message["error"]), "checks": checks, "seconds": message["seconds"]}
    failures = [f"{c['name']}: {c['message']}" for c in checks if c["points"] < c["max_points"]]
    if checks and all(c["message"] == rubric.NOT_IMPLEMENTED for c in checks):
        failures = ["not implemented yet (NotImplementedError)"]
    result = {"points": sum(c["points"] for c in checks), "max_points": max_points, "failures": failures,
              "checks": checks, "seconds": message["seconds"]}
    if message.get("printed"):
        result["printed"] = message["printed"]  # what the student's code printed while graded (first 500 characters)
    return result


def _worker_env(sandbox: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPO_LAB_JUDGE", "OPENAI", "HF_TOKEN"))}
    package_parent = str(Path(__file__).resolve().parent.parent)
    env.update(HOME=sandbox, TMPDIR=sandbox, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return env


def _log_tail(sandbox: str) -> str:
    try:
        text = Path(sandbox, "worker.log").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def grade_notebook(path: Path, exercises: list[str], limits: Limits | None = None) -> NotebookGrade:
    """Grade `exercises` in one notebook; every requested exercise gets a result, whatever happens."""
    import nbformat

    limits = limits or Limits()
    grade, t0 = NotebookGrade(path), time.perf_counter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 - a damaged upload is a result, not a crash
        for name in exercises:
            grade.results[name] = _zero(rubric.max_points(name), f"could not read {path.name}: {type(e).__name__}: {e}")
        return grade
    cells, defined, grade.notes = exercise_cells(nb)
    remaining = [n for n in exercises if n in defined]
    for name in exercises:
        if name not in defined:
            grade.results[name] = _zero(rubric.max_points(name), f"{path.name} defines no {name} in an exercise cell")
    loaded = False
    while remaining:
        sandbox = tempfile.mkdtemp(prefix="dpo_lab_grade_")
        try:
            job = {"cells": cells, "exercises": remaining, "sandbox": sandbox, "max_output": limits.max_output,
                   "cell_timeout": limits.cell_timeout, "exercise_timeout": limits.exercise_timeout,
                   "memory_mb": limits.memory_mb}
            job_path = Path(sandbox, "job.json")
            job_path.write_text(json.dumps(job), encoding="utf-8")
            outcome = _drive_worker(job_path, sandbox, len(cells), limits, grade, remaining, first_load=not loaded)
            loaded = loaded or outcome != "not loaded"
            if outcome in ("done", "fatal", "not loaded"):
                break
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)
    _attribute_cell_errors(grade, cells)
    grade.seconds = round(time.perf_counter() - t0, 2)
    return grade


def _attribute_cell_errors(grade: NotebookGrade, cells: list[dict[str, Any]]) -> None:
    """A cell that failed explains its exercises' zero; a cell that tripped a guard zeroes its exercises."""
    sources = {c["index"]: c["source"] for c in cells}
    for err in grade.cell_errors:
        for name in _TOP_LEVEL_DEF.findall(sources.get(err["cell"], "")):
            result = grade.results.get(name)
            if result is None:
                continue
            reason = f"cell {err['cell']}: {err['error']}"
            if err.get("guard"):
                grade.results[name] = {**result, **_zero(result["max_points"], reason), "checks": result.get("checks", [])}
            elif result["points"] == 0 and reason not in result["failures"]:
                result["failures"] = [reason] + result["failures"]


def _drive_worker(job_path: Path, sandbox: str, n_cells: int, limits: Limits, grade: NotebookGrade,
                  remaining: list[str], first_load: bool) -> str:
    """Run one worker until it finishes ("done"), hangs or dies on an exercise ("restart"), or fails to load."""
    proc = subprocess.Popen([sys.executable, "-m", "dpo_lab.sandbox", str(job_path)], cwd=sandbox, env=_worker_env(sandbox),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limits.startup_timeout + n_cells * (limits.cell_timeout + 5)
    buffer, loaded = b"", False
    try:
        while True:
            wait = deadline - time.monotonic()
            ready = select.select([proc.stdout], [], [], max(wait, 0))[0] if wait > 0 else []
            if not ready:  # out of time: C code that ignored the alarm, or a worker stuck elsewhere
                proc.kill()
                if not loaded:
                    _fail_all(grade, remaining, "the exercise cells did not finish executing within the time limit")
                    return "not loaded"
                name = remaining.pop(0)
                grade.results[name] = _zero(rubric.max_points(name), f"{name} took longer than {limits.exercise_timeout:g} s (killed)")
                return "restart"
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:  # the worker exited
                proc.wait()
                if not remaining:
                    return "done"
                why = f"the grading process died (exit code {proc.returncode}; os._exit, a crash or out of memory)"
                tail = _log_tail(sandbox)
                if tail:
                    why += f": {tail}"
                if not loaded:
                    _fail_all(grade, remaining, f"while executing the exercise cells, {why}")
                    return "not loaded"
                name = remaining.pop(0)
                grade.results[name] = _zero(rubric.max_points(name), f"while grading {name}, {why}")
                return "restart"
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if message["event"] == "loaded":
                    loaded = True
                    if first_load:
                        grade.cell_errors = message["cell_errors"]
                        grade.notes += [f"cell {e['cell']}: {e['error']}" for e in message["cell_errors"]]
                elif message["event"] == "exercise":
                    name = message["name"]
                    grade.results[name] = _from_worker(message, name)
                    remaining.remove(name)
                elif message["event"] == "fatal":
                    _fail_all(grade, remaining, f"the grader's worker failed: {message['error']}")
                    return "fatal"
                deadline = time.monotonic() + limits.exercise_timeout + limits.kill_grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _fail_all(grade: NotebookGrade, remaining: list[str], reason: str) -> None:
    for name in list(remaining):
        grade.results[name] = _zero(rubric.max_points(name), reason)
    remaining.clear()


# ----------------------------------------------------------------------------------------------- submissions and reports


def grade_submission(sub: Submission, limits: Limits | None = None) -> dict[str, Any]:
    """The per-student report: ``{"student", "exercises": {name: {points, max_points, failures, …}}, "total", "max_total", …}``."""
    masters = master_exercises()
    exercises: dict[str, dict[str, Any]] = {}
    notebooks, notes, seconds = [], [], {}
    for path in sub.notebooks:
        wanted = [n for n in _expected_for(path, _defined_names(path), masters) if n in sub.expected and n not in exercises]
        if not wanted:
            notes.append(f"{path.name}: no exercise of this lab in it")
            continue
        g = grade_notebook(path, wanted, limits)
        notebooks.append(path.name)
        seconds[path.name] = g.seconds
        notes += [f"{path.name}: {n}" for n in g.notes]
        for name, result in g.results.items():
            exercises[name] = {**result, "notebook": path.name}
    for name in sub.expected:
        exercises.setdefault(name, {**_zero(rubric.max_points(name), "not found in the submission"), "notebook": None})
    ordered = {n: exercises[n] for n in LAB_EXERCISES if n in exercises}
    return {"student": sub.name, "exercises": ordered, "total": sum(e["points"] for e in ordered.values()),
            "max_total": sum(e["max_points"] for e in ordered.values()), "notebooks": notebooks,
            "notes": notes, "seconds": seconds}


def _defined_names(path: Path) -> list[str]:
    import nbformat

    try:
        return exercise_cells(nbformat.read(path, as_version=4))[1]
    except Exception:  # noqa: BLE001 - grade_notebook reports the unreadable file
        return []


def grade(paths: list[str | Path], limits: Limits | None = None, jobs: int = 1) -> list[dict[str, Any]]:
    subs = find_submissions(paths)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda s: grade_submission(s, limits), subs))


def class_csv(reports: list[dict[str, Any]]) -> str:
    names = [n for n in LAB_EXERCISES if any(n in r["exercises"] for r in reports)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["student"] + names + ["total", "max_total", "percent"])
    for r in reports:
        row = [r["exercises"][n]["points"] if n in r["exercises"] else "" for n in names]
        writer.writerow([r["student"]] + row + [r["total"], r["max_total"], f"{100 * r['total'] / max(r['max_total'], 1):.1f}"])
    return out.getvalue()


def summary_markdown(reports: list[dict[str, Any]]) -> str:
    """One page for the instructor: scores, per-exercise averages and the most common failures."""
    names = [n for n in LAB_EXERCISES if any(n in r["exercises"] for r in reports)]
    lines = ["# Lab-1.7 DPO — autograder summary", "",
             f"{len(reports)} submission(s); points per exercise: " + ", ".join(f"{n} {rubric.max_points(n)}" for n in names), "",
             "| student | " + " | ".join(names) + " | total |", "|---|" + "---|" * (len(names) + 1)]
    for r in reports:
        cells = [f"{r['exercises'][n]['points']}/{r['exercises'][n]['max_points']}" if n in r["exercises"] else "—" for n in names]
        lines.append(f"| {r['student']} | " + " | ".join(cells) + f" | **{r['total']}/{r['max_total']}** |")
    lines += ["", "## Per exercise", "", "| exercise | mean points | full marks | most common failures |", "|---|---|---|---|"]
    for n in names:
        graded = [r["exercises"][n] for r in reports if n in r["exercises"]]
        mean = sum(e["points"] for e in graded) / len(graded)
        full = sum(e["points"] == e["max_points"] for e in graded)
        counts: dict[str, int] = {}
        for e in graded:
            for f in e["failures"]:
                key = f.split(rubric.HINT_MARK)[0].splitlines()[0][:120]
                counts[key] = counts.get(key, 0) + 1
        common = "; ".join(f"{k} (×{v})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3]).replace("|", "\\|")
        lines.append(f"| {n} | {mean:.1f} / {rubric.max_points(n)} | {full}/{len(graded)} | {common or '—'} |")
    notes = [(r["student"], note) for r in reports for note in r["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {s}: {note}" for s, note in notes]
    return "\n".join(lines) + "\n"


def _file_name(student: str) -> str:
    return re.sub(r"[^\w.-]+", "_", student).strip("._") or "student"


def write_reports(reports: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``<out>/students/<name>.json``, ``<out>/class.csv``, ``<out>/summary.md`` (atomic writes)."""
    out = Path(out_dir)
    paths = {}
    for r in reports:
        paths[r["student"]] = atomic_write_text(out / "students" / f"{_file_name(r['student'])}.json",
                                                json.dumps(r, ensure_ascii=False, indent=2) + "\n")
    paths["class.csv"] = atomic_write_text(out / "class.csv", class_csv(reports))
    paths["summary.md"] = atomic_write_text(out / "summary.md", summary_markdown(reports))
    return paths
