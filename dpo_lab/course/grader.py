"""The autograder: ``python -m dpo_lab grade PATH... [--json OUT] [--out grades/]``.

A PATH is a notebook (one submission), a folder holding notebooks (one student's submission) or a
folder of such folders (a class). For each notebook only the cells tagged ``exercise`` (and any tagged
``imports``) are executed — no kernel, no data, no training — in a guarded worker process
(:mod:`dpo_lab.course.sandbox`). The worker only RUNS the student's objects on the inputs this process sends;
each exercise is judged HERE by :mod:`dpo_lab.course.rubric` (against the package's reference on the shipped
fixtures) from the plain values that come back, so nothing a submission writes can set its own score.
Output: one JSON per student, ``class.csv`` and ``summary.md``.

The grader never crashes on a submission: unreadable notebooks, syntax errors, exceptions, hangs (also
in C code), endless printing, files touched outside the sandbox, messages forged on the worker's
channel and a dying worker all become 0 points for the exercise (or the cell's exercises) concerned,
with the reason in ``failures``; a submission that breaks the grader itself gets a report saying so.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..infra.atomic import atomic_write_text
from . import rubric

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
    cpu_seconds: int = 600  # CPU time one worker may use (RLIMIT_CPU), start-up included
    work_mb: int = 64  # size of the worker's working folder (a tmpfs in the sandbox)
    file_mb: int = 64  # largest file a worker may write (RLIMIT_FSIZE): its log, where fd 1 and 2 go
    max_processes: int = 64  # processes and threads of the worker's uid (RLIMIT_NPROC)


@dataclass
class GradingRun:
    """What every worker of one grading run shares: the seed its inputs are drawn from, the sandbox (bwrap, or
    none with ``unsafe``) and the withheld copies of the package, one per group of exercises."""

    seed: int
    bwrap: str | None  # None: --unsafe, in-process guards only
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dpo_lab_grading_")))
    packages: dict[frozenset, Path] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, seed: int | None = None, unsafe: bool = False) -> "GradingRun":
        """Refuses (SandboxUnavailable) when bubblewrap cannot sandbox here, unless `unsafe`."""
        from . import isolation

        bwrap = None if unsafe else isolation.check()
        return cls(secrets.randbits(31) if seed is None else int(seed), bwrap)

    @property
    def sandbox_label(self) -> str:
        return "bubblewrap" if self.bwrap else "none (--unsafe: in-process guards only)"

    def package(self, exercises: list[str]) -> Path:
        from . import withhold

        key = frozenset(exercises)
        with self.lock:
            if key not in self.packages:
                dest = self.root / f"package-{len(self.packages)}"
                self.packages[key] = withhold.build(exercises, dest)
            return self.packages[key]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


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
            out[name] = [
                n
                for c in nb.cells
                if "exercise" in c.metadata.get("tags", [])
                for n in _TOP_LEVEL_DEF.findall(c.source)
                if n in rubric.EXERCISES
            ]
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


def _result(
    name: str, checks: list[rubric.CheckResult], error: str, seconds: float, printed: str = ""
) -> dict[str, Any]:
    rows = [{"name": r.name, "points": r.points, "max_points": r.max_points, "message": r.message} for r in checks]
    if error:
        return {**_zero(rubric.max_points(name), error), "checks": rows, "seconds": seconds}
    failures = [f"{c['name']}: {c['message']}" for c in rows if c["points"] < c["max_points"]]
    if rows and all(c["message"] == rubric.NOT_IMPLEMENTED for c in rows):
        failures = ["not implemented yet (NotImplementedError)"]
    result = {
        "points": sum(c["points"] for c in rows),
        "max_points": rubric.max_points(name),
        "failures": failures,
        "checks": rows,
        "seconds": seconds,
    }
    if printed:
        result["printed"] = printed  # what the student's code printed while graded (first 500 characters)
    return result


def _log_tail(sandbox: str) -> str:
    try:
        text = Path(sandbox, "worker.log").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------------------------------- the worker, seen from here

MAX_MESSAGE = 64 * 2**20  # bytes in one protocol line (the largest real one, a dpo_step run, is about 100 KB)


class WorkerLost(BaseException):
    """The worker stopped answering properly: `kind` is "timeout", "died" or "garbled" (an unreadable or unexpected
    message).
    """

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail

    def reason(self, what: str, seconds: float) -> str:
        if self.kind == "timeout":
            return f"{what} took longer than {seconds:g} s (killed)"
        if self.kind == "died":
            return f"while {what} ran, the grading process died ({self.detail})"
        return (
            f"while {what} ran, the grading process sent a message the grader did not ask for ({self.detail}): "
            "code in the submission wrote to the grader's message channel"
        )


def _death(code: int | None, limits: Limits) -> str:
    """Why the worker ended, in words (bwrap passes the worker's status on: 128 + signal)."""
    signum = -code if code is not None and code < 0 else (code - 128 if code and code > 128 else None)
    known = {
        getattr(signal, "SIGXFSZ", -1): f"wrote a file (or printed through fd 1/2) past the {limits.file_mb} MB limit",
        getattr(signal, "SIGXCPU", -1): f"used more than {limits.cpu_seconds} s of CPU time",
        signal.SIGKILL: "killed: out of memory, or a limit",
    }
    if signum in known:
        return f"exit code {code}: {known[signum]}"
    return f"exit code {code}; os._exit, a crash or out of memory"


class ExerciseAborted(BaseException):
    """A guard fired, or the student's code raised SystemExit/KeyboardInterrupt: the exercise scores 0."""


class _Worker:
    """One ``python -m dpo_lab.course.sandbox`` process: every message it sends must be the one expected next."""

    def __init__(self, command: list[str], host_dir: str, env: dict[str, str] | None, limits: Limits):
        self.host_dir, self.buffer, self.next_id, self.limits = host_dir, b"", 0, limits
        self.proc = subprocess.Popen(
            command,
            cwd=host_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: close() kills everything it started
        )

    def receive(self, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while b"\n" not in self.buffer:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.proc.stdout], [], [], wait)[0]:
                raise WorkerLost("timeout")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                self.proc.wait()
                tail = _log_tail(self.host_dir)
                raise WorkerLost("died", _death(self.proc.returncode, self.limits) + (f": {tail}" if tail else ""))
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE:
                raise WorkerLost("garbled", f"a message longer than {MAX_MESSAGE // 2**20} MB")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise WorkerLost("garbled", f"not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise WorkerLost("garbled", f"not a JSON object: {line[:80]!r}")
        return message

    def expect(self, seconds: float, **fields: Any) -> dict[str, Any]:
        message = self.receive(seconds)
        if any(message.get(k) != v for k, v in fields.items()):
            raise WorkerLost("garbled", f"expected {fields}, got {json.dumps(message)[:120]}")
        return message

    def request(self, timeout: float, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        try:
            self.proc.stdin.write((json.dumps({"id": self.next_id, **fields}) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise WorkerLost("died", f"exit code {self.proc.returncode}") from None
        return self.expect(timeout, id=self.next_id)

    def close(self) -> None:
        try:  # the whole process group (with bwrap, ending its PID namespace ends every process in it)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _rebuilt(raised: Any) -> Exception:
    """The student's exception, rebuilt here as a class of the same name deriving from the nearest builtin class it
    derived from there, so the rubric's ``isinstance`` checks see a ``ValueError`` subclass as a ValueError."""
    raised = raised if isinstance(raised, dict) else {}
    kind = str(raised.get("type", "Error"))
    kind = kind if kind.isidentifier() else "Error"
    message = str(raised.get("message", ""))
    bases = raised.get("bases") if isinstance(raised.get("bases"), list) else [kind]
    for name in [*bases, "Exception"]:
        cls = getattr(builtins, str(name), None) if str(name).isidentifier() else None
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            continue
        try:  # UnicodeDecodeError and a few others need more arguments: the next base up then
            return (cls if cls.__name__ == kind else type(kind, (cls,), {}))(message)
        except Exception:  # noqa: BLE001
            continue
    return Exception(message)


class RemoteSubject(rubric.Subject):
    """The student's object, living in the worker; the rubric's checks run HERE on the values it returns."""

    def __init__(self, worker: _Worker, name: str, deadline: float, limits: Limits):
        self.worker, self.name, self.deadline, self.limits = worker, name, deadline, limits

    def _run(self, op: str, *args: Any, **kwargs: Any) -> Any:
        from .sandbox import decode, encode

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ExerciseAborted(f"{self.name} took longer than {self.limits.exercise_timeout:g} s")
        reply = self.worker.request(
            left + self.limits.kill_grace,
            op=op,
            seconds=left,
            limit=self.limits.exercise_timeout,
            payload=encode((args, kwargs)),
        )
        if "ok" in reply:
            try:
                return decode(reply["ok"])
            except Exception as e:  # noqa: BLE001 - anything but plain data is a forged reply
                raise WorkerLost("garbled", f"a result that is not plain data: {type(e).__name__}") from None
        if "raised" in reply:
            raise _rebuilt(reply["raised"])
        if "abort" in reply:
            raise ExerciseAborted(str(reply["abort"]))
        raise WorkerLost("garbled", f"a reply without a result: {json.dumps(reply)[:120]}")

    def __call__(self, *args, **kwargs):
        return self._run("__call__", *args, **kwargs)

    def with_grad(self, *args, **kwargs):
        return self._run("with_grad", *args, **kwargs)

    def collate(self, examples, max_length=None):
        return self._run("collate", examples, max_length)

    def steps(self, batch, steps=1, max_grad_norm=1.0, trainable_reference=False, beta=0.1):
        return self._run(
            "steps",
            batch,
            steps=steps,
            max_grad_norm=max_grad_norm,
            trainable_reference=trainable_reference,
            beta=beta,
        )


def _grade_in_worker(worker: _Worker, name: str, limits: Limits, seed: int) -> dict[str, Any]:
    """One exercise: the worker runs the student's object on inputs drawn from `seed`, the rubric here judges what
    comes back."""
    t0 = time.monotonic()
    deadline = t0 + limits.exercise_timeout
    begin = worker.request(limits.exercise_timeout + limits.kill_grace, op="begin", exercise=name)
    error, checks = "", []
    try:
        with rubric.drawing(seed):
            checks = rubric.grade_object(
                name, RemoteSubject(worker, name, deadline, limits) if begin.get("defined") is True else None
            )
    except ExerciseAborted as e:
        error = str(e)
    end = worker.request(limits.kill_grace + 5, op="end")
    error = error or str(end.get("delegated") or "")
    return _result(name, checks, error, round(time.monotonic() - t0, 3), str(end.get("printed") or ""))


_DEFAULT_RUN: list[GradingRun] = []


def default_run() -> GradingRun:
    """One sandboxed run with a fresh seed for callers that grade without one (refuses without bubblewrap)."""
    if not _DEFAULT_RUN:
        import atexit

        _DEFAULT_RUN.append(GradingRun.start())
        atexit.register(_DEFAULT_RUN[0].close)
    return _DEFAULT_RUN[0]


def grade_notebook(
    path: Path, exercises: list[str], limits: Limits | None = None, run: GradingRun | None = None
) -> NotebookGrade:
    """Grade `exercises` in one notebook; every requested exercise gets a result, whatever happens.

    Exercises are graded in groups (:func:`dpo_lab.course.withhold.worker_groups`), one sandboxed worker per
    group. A cell or an exercise that kills, hangs or garbles its worker is recorded and left out; the rest is
    graded by a fresh worker (each restart removes one cell or one exercise, so this ends).
    """
    import nbformat

    from .withhold import worker_groups

    limits, run = limits or Limits(), run or default_run()
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
    cell_errors: dict[int, dict[str, Any]] = {}
    for group in worker_groups(remaining):
        left = list(group)
        while left:
            skipped = {i for i, e in cell_errors.items() if e.get("skipped")}
            cells_left = [c for c in cells if c["index"] not in skipped]
            if not _run_worker(cells_left, group, left, limits, grade, cell_errors, run):
                break
    grade.cell_errors = [cell_errors[i] for i in sorted(cell_errors)]
    grade.notes += [f"cell {e['cell']}: {e['error']}" for e in grade.cell_errors]
    _attribute_cell_errors(grade, cells)
    grade.seconds = round(time.perf_counter() - t0, 2)
    return grade


def _start_worker(cells: list[dict[str, Any]], group: list[str], limits: Limits, run: GradingRun, host: str) -> _Worker:
    """A worker for `group` in the sandbox (or, with --unsafe, a plain process on the withheld package copy)."""
    from . import isolation
    from .withhold import bindings

    job = {
        "cells": cells,
        "max_output": limits.max_output,
        "cell_timeout": limits.cell_timeout,
        "memory_mb": limits.memory_mb,
        "cpu_seconds": limits.cpu_seconds,
        "file_mb": limits.file_mb,
        "max_processes": limits.max_processes,
        "bind": {name: bindings(name) for name in group},
    }
    package = run.package(group)
    job_path, log_path = Path(host, "job.json"), Path(host, "worker.log")
    log_path.touch()
    if run.bwrap is None:
        job_path.write_text(json.dumps({**job, "sandbox": host}), encoding="utf-8")
        env = {**isolation.worker_env(str(package)), "HOME": host, "TMPDIR": host, "HF_HOME": f"{host}/hf"}
        command = [sys.executable, "-m", "dpo_lab.course.sandbox", str(job_path)]
        return _Worker(command, host, {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}, limits)
    drop = isolation.drop_to()
    job_path.write_text(json.dumps({**job, "sandbox": isolation.WORK_DIR, "drop_to": drop}), encoding="utf-8")
    os.chmod(host, 0o755)
    os.chmod(job_path, 0o644)
    if drop:
        os.chown(log_path, *drop)
    command = isolation.command(
        run.bwrap,
        [sys.executable, "-m", "dpo_lab.course.sandbox", f"{isolation.WORK_DIR}/job.json"],
        isolation.Mounts(package, job_path, log_path),
        work_mb=limits.work_mb,
        env=isolation.worker_env(isolation.PACKAGE_MOUNT),
    )
    return _Worker(command, host, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, limits)


def _run_worker(
    cells: list[dict[str, Any]],
    group: list[str],
    remaining: list[str],
    limits: Limits,
    grade: NotebookGrade,
    cell_errors: dict[int, dict[str, Any]],
    run: GradingRun,
) -> bool:
    """One worker's life; True when a new worker must carry on with what is left in `remaining`."""
    host = tempfile.mkdtemp(prefix="dpo_lab_grade_", dir=run.root)
    worker = None
    try:
        worker = _start_worker(cells, group, limits, run, host)
        try:
            worker.expect(limits.startup_timeout, event="started")
        except WorkerLost as e:
            _fail_all(grade, remaining, f"the grading process did not start: {e.kind} {e.detail}".strip())
            return False
        for cell in cells:
            try:
                message = worker.expect(limits.cell_timeout + limits.kill_grace, event="cell", index=cell["index"])
            except WorkerLost as e:
                cell_errors[cell["index"]] = {
                    "cell": cell["index"],
                    "error": e.reason(f"cell {cell['index']}", limits.cell_timeout),
                    "guard": True,
                    "skipped": True,
                }
                return True
            if message.get("error") and cell["index"] not in cell_errors:
                cell_errors[cell["index"]] = {
                    "cell": cell["index"],
                    "error": str(message["error"]),
                    "guard": message.get("guard") is True,
                }
        try:
            worker.expect(limits.cell_timeout + limits.kill_grace, event="ready")
        except WorkerLost as e:
            _fail_all(grade, remaining, e.reason("executing the exercise cells", limits.cell_timeout))
            return False
        while remaining:
            name = remaining[0]
            try:
                grade.results[name] = _grade_in_worker(worker, name, limits, run.seed)
            except WorkerLost as e:
                grade.results[name] = _zero(rubric.max_points(name), e.reason(name, limits.exercise_timeout))
                remaining.pop(0)
                return True
            remaining.pop(0)
        return False
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(host, ignore_errors=True)


def _attribute_cell_errors(grade: NotebookGrade, cells: list[dict[str, Any]]) -> None:
    """A cell that failed explains its exercises' zero; a cell that tripped a guard (or was left out) zeroes its
    exercises.
    """
    sources = {c["index"]: c["source"] for c in cells}
    for err in grade.cell_errors:
        for name in _TOP_LEVEL_DEF.findall(sources.get(err["cell"], "")):
            result = grade.results.get(name)
            if result is None:
                continue
            reason = f"cell {err['cell']}: {err['error']}"
            if err.get("guard"):
                grade.results[name] = {
                    **result,
                    **_zero(result["max_points"], reason),
                    "checks": result.get("checks", []),
                }
            elif result["points"] == 0 and reason not in result["failures"]:
                result["failures"] = [reason] + result["failures"]


def _fail_all(grade: NotebookGrade, remaining: list[str], reason: str) -> None:
    for name in list(remaining):
        grade.results[name] = _zero(rubric.max_points(name), reason)
    remaining.clear()


# ---------------------------------------------------------------------------------------------- submissions and reports


def _candidates(sub: Submission, masters: dict[str, list[str]]) -> dict[str, list[Path]]:
    """``{exercise: [notebooks that may hold it]}``: by the assignment's file names, else by what a notebook defines."""
    found: dict[str, list[Path]] = {}
    for path in sub.notebooks:
        for name in _expected_for(path, _defined_names(path), masters):
            if name in sub.expected:
                found.setdefault(name, []).append(path)
    return found


def _settle(name: str, graded: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """One exercise graded in several notebooks. The same points everywhere: that result. Different points: the
    LOWEST, marked ``needs_review`` ("grade by hand"): the grader never picks one silently, and never awards points
    a student could get by handing in many attempts."""
    if len(graded) == 1:
        ((path, result),) = graded.items()
        return {**result, "notebook": path.name}
    scores = {path.name: result["points"] for path, result in graded.items()}
    path, result = min(graded.items(), key=lambda kv: (kv[1]["points"], kv[0].name))
    if len(set(scores.values())) == 1:
        return {**result, "notebook": path.name, "candidates": scores}
    listing = ", ".join(f"{n}: {p}/{result['max_points']}" for n, p in sorted(scores.items()))
    reason = (
        f"grade by hand: {len(scores)} notebooks define {name} and score differently ({listing}); the lowest is kept"
    )
    return {
        **result,
        "notebook": path.name,
        "candidates": scores,
        "needs_review": True,
        "failures": [reason] + result["failures"],
    }


def grade_submission(sub: Submission, limits: Limits | None = None, run: GradingRun | None = None) -> dict[str, Any]:
    """The per-student report: ``{"student", "exercises": {name: {points, max_points, failures, …}}, "total",
    "max_total", …}``. Every notebook that may hold an exercise is graded (see :func:`_settle`).
    """
    run = run or default_run()
    candidates = _candidates(sub, master_exercises())
    graded: dict[str, dict[Path, dict[str, Any]]] = {}
    notebooks, notes, seconds = [], [], {}
    for path in sub.notebooks:
        wanted = [n for n in sub.expected if path in candidates.get(n, [])]
        if not wanted:
            notes.append(f"{path.name}: no exercise of this lab in it")
            continue
        g = grade_notebook(path, wanted, limits, run)
        notebooks.append(path.name)
        seconds[path.name] = g.seconds
        notes += [f"{path.name}: {n}" for n in g.notes]
        for name, result in g.results.items():
            graded.setdefault(name, {})[path] = result
    exercises = {name: _settle(name, results) for name, results in graded.items()}
    for name in sub.expected:
        exercises.setdefault(name, {**_zero(rubric.max_points(name), "not found in the submission"), "notebook": None})
    ordered = {n: exercises[n] for n in LAB_EXERCISES if n in exercises}
    notes += [e["failures"][0] for e in ordered.values() if e.get("needs_review")]
    return {
        "student": sub.name,
        "exercises": ordered,
        "total": sum(e["points"] for e in ordered.values()),
        "max_total": sum(e["max_points"] for e in ordered.values()),
        "notebooks": notebooks,
        "notes": notes,
        "seconds": seconds,
        "seed": run.seed,
        "sandbox": run.sandbox_label,
        "needs_review": any(e.get("needs_review") for e in ordered.values()),
    }


def _defined_names(path: Path) -> list[str]:
    import nbformat

    try:
        return exercise_cells(nbformat.read(path, as_version=4))[1]
    except Exception:  # noqa: BLE001 - grade_notebook reports the unreadable file
        return []


def grade(
    paths: list[str | Path],
    limits: Limits | None = None,
    jobs: int = 1,
    *,
    seed: int | None = None,
    unsafe: bool = False,
) -> list[dict[str, Any]]:
    """Every submission gets a report: one that breaks the grader itself gets zeros and the reason, the class goes
    on. Inputs are drawn from `seed` (fresh when None; recorded in each report). Refuses to run without a
    working bubblewrap sandbox (:class:`dpo_lab.course.isolation.SandboxUnavailable`) unless `unsafe`.
    """
    subs = find_submissions(paths)
    run = GradingRun.start(seed, unsafe=unsafe)
    try:
        with rubric.drawing(run.seed):
            rubric.preload()  # the rubric's references run here, in threads
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda s: _guarded(grade_submission, s, limits, run), subs))
    finally:
        run.close()


def _guarded(grade_one, sub: Submission, limits: Limits | None, run: GradingRun) -> dict[str, Any]:
    try:
        return grade_one(sub, limits, run)
    except Exception as e:  # noqa: BLE001 - a grader bug met by one submission must not cost the class its reports
        reason = f"the grader failed on this submission ({type(e).__name__}: {e}); grade it by hand or report the bug"
        exercises = {n: {**_zero(rubric.max_points(n), reason), "notebook": None} for n in sub.expected}
        return {
            "student": sub.name,
            "exercises": exercises,
            "total": 0,
            "max_total": sum(e["max_points"] for e in exercises.values()),
            "notebooks": [p.name for p in sub.notebooks],
            "notes": [reason],
            "seconds": {},
            "seed": run.seed,
            "sandbox": run.sandbox_label,
            "needs_review": True,
        }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run: text starting with = + - @ (or a tab / CR) gets a leading ' ."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def md_text(value: Any) -> str:
    """Text from a submission (a folder name, a message) made inert in a markdown table or list: one line, the
    table separator and markdown / HTML syntax escaped."""
    text = " ".join(str(value).split())
    for char in "\\`*_[]<>|#!":
        text = text.replace(char, "\\" + char)
    return text


def class_csv(reports: list[dict[str, Any]]) -> str:
    names = [n for n in LAB_EXERCISES if any(n in r["exercises"] for r in reports)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["student"] + names + ["total", "max_total", "percent"])
    for r in reports:
        row = [r["exercises"][n]["points"] if n in r["exercises"] else "" for n in names]
        writer.writerow(
            [csv_cell(r["student"])]
            + row
            + [r["total"], r["max_total"], f"{100 * r['total'] / max(r['max_total'], 1):.1f}"]
        )
    return out.getvalue()


def summary_markdown(reports: list[dict[str, Any]]) -> str:
    """One page for the instructor: scores, per-exercise averages and the most common failures."""
    names = [n for n in LAB_EXERCISES if any(n in r["exercises"] for r in reports)]
    seeds = sorted({str(r.get("seed")) for r in reports if r.get("seed") is not None})
    sandboxes = sorted({str(r.get("sandbox")) for r in reports if r.get("sandbox")})
    lines = [
        "# Lab-1.7 DPO — autograder summary",
        "",
        f"{len(reports)} submission(s); points per exercise: "
        + ", ".join(f"{n} {rubric.max_points(n)}" for n in names),
        "",
        f"Inputs drawn from seed {', '.join(seeds) or '—'} (`--seed` reproduces this grading); "
        f"sandbox: {', '.join(sandboxes) or '—'}.",
        "",
        "| student | " + " | ".join(names) + " | total |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for r in reports:
        cells = [
            f"{r['exercises'][n]['points']}/{r['exercises'][n]['max_points']}" if n in r["exercises"] else "—"
            for n in names
        ]
        flag = " ⚠ grade by hand" if r.get("needs_review") else ""
        lines.append(
            f"| {md_text(r['student'])} | " + " | ".join(cells) + f" | **{r['total']}/{r['max_total']}**{flag} |"
        )
    lines += [
        "",
        "## Per exercise",
        "",
        "| exercise | mean points | full marks | most common failures |",
        "|---|---|---|---|",
    ]
    for n in names:
        graded = [r["exercises"][n] for r in reports if n in r["exercises"]]
        mean = sum(e["points"] for e in graded) / len(graded)
        full = sum(e["points"] == e["max_points"] for e in graded)
        counts: dict[str, int] = {}
        for e in graded:
            for f in e["failures"]:
                key = f.split(rubric.HINT_MARK)[0].splitlines()[0][:120]
                counts[key] = counts.get(key, 0) + 1
        common = "; ".join(f"{md_text(k)} (×{v})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {n} | {mean:.1f} / {rubric.max_points(n)} | {full}/{len(graded)} | {common or '—'} |")
    review = [r for r in reports if r.get("needs_review")]
    if review:
        lines += ["", "## Grade by hand", ""]
        lines += [f"- {md_text(r['student'])}: {md_text(n)}" for r in review for n in r["notes"] if "grade" in n]
    notes = [(r["student"], note) for r in reports for note in r["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {md_text(s)}: {md_text(note)}" for s, note in notes]
    return "\n".join(lines) + "\n"


def _file_name(student: str) -> str:
    """A safe file name for a student; a name that had to change gets a short hash of the original, so `a b`,
    `a?b` and `a_b` never share a report."""
    import hashlib

    safe = re.sub(r"[^\w.-]+", "_", student).strip("._")[:80] or "student"
    if safe != student:
        safe += "-" + hashlib.sha256(student.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe


def report_names(reports: list[dict[str, Any]]) -> list[str]:
    """One file name per report, unique even on a case-insensitive file system."""
    names, seen = [], set()
    for r in reports:
        name = base = _file_name(r["student"])
        k = 2
        while name.lower() in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name.lower())
        names.append(name)
    return names


def write_reports(reports: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``<out>/students/<name>.json``, ``<out>/class.csv``, ``<out>/summary.md`` (atomic writes)."""
    out = Path(out_dir)
    paths = {}
    for r, name in zip(reports, report_names(reports)):
        paths[r["student"]] = atomic_write_text(
            out / "students" / f"{name}.json", json.dumps(r, ensure_ascii=False, indent=2) + "\n"
        )
    paths["class.csv"] = atomic_write_text(out / "class.csv", class_csv(reports))
    paths["summary.md"] = atomic_write_text(out / "summary.md", summary_markdown(reports))
    return paths
