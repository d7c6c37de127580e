"""The grading worker: runs a student's exercise cells, then runs their objects on the grader's inputs.

The grader (:mod:`dpo_lab.course.grader`) starts ``python -m dpo_lab.course.sandbox JOB.json`` for each group of
exercises of a notebook, inside the operating-system sandbox of :mod:`dpo_lab.course.isolation` (bubblewrap:
an empty root with read-only Python, a copy of the package whose graded references are withheld
(:mod:`dpo_lab.course.withhold`), a small tmpfs working folder, no network, its own PID namespace). That
sandbox is the security boundary. This module adds, before any student code runs, the limits the kernel
enforces (:func:`confine`: an unprivileged uid when started as root, CPU time, address space, file size,
processes) and, inside the process, guards that turn accidents into clear messages:

* a time limit per cell and per exercise (SIGALRM for Python code; the grader kills the process when
  C code does not return, and carries on in a new worker without that cell or exercise);
* printed output is capped, so a ``while True: print(...)`` ends with a clear message;
* an audit hook (PEP 578) refuses writes outside the working folder, subprocesses, sockets, ``ctypes`` and
  file deletion, with a message naming what was tried.

Code in a submission can switch the in-process guards off; it cannot leave the sandbox, and it cannot set its
score: the worker only runs the student's objects on inputs the grader sends (:class:`dpo_lab.course.subject.
LocalSubject`) and answers with plain data; the verdict is computed by the grader, outside. A guard that fires
gives 0 for that exercise (even if the student's code caught the exception).

Protocol: one JSON object per line. Worker → grader on the worker's original stdout:
``{"event": "started"}``, ``{"event": "cell", "index", "error", "guard"}`` per cell, ``{"event": "ready"}``,
then one reply per request. Grader → worker on stdin: ``{"id", "op": "begin" | "call" | "with_grad" |
"collate" | "steps" | "end", …}``. Arguments and results travel as ``torch.save`` bytes (base64) and are
read back with ``weights_only=True``. Everything the student prints goes to a buffer.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

PREAMBLE = "import math\nimport torch\nimport torch.nn.functional as F\nimport dpo_lab\n"


class GuardTripped(BaseException):
    """Raised inside student code when a guard fires; BaseException so `except Exception` does not hide it."""


class _State:
    armed = False
    sandbox = ""
    read_roots: tuple[str, ...] = ()
    violation = ""  # first guard message of the current exercise; survives a student's `except`
    grading = ""  # the exercise being graded


_STATE = _State()

_BLOCKED = {
    "subprocess.Popen": "started a subprocess",
    "os.system": "ran a shell command",
    "os.exec": "replaced the process (os.exec*)",
    "os.posix_spawn": "started a process",
    "os.spawn": "started a process",
    "os.fork": "forked the process",
    "os.forkpty": "forked the process",
    "os.kill": "sent a signal to a process",
    "socket.connect": "opened a network connection",
    "socket.bind": "opened a network socket",
    "socket.sendto": "sent network data",
    "ctypes.dlopen": "loaded a C library with ctypes",
    "ctypes.cdata": "read raw memory with ctypes",
    "os.chdir": "changed the working directory",
}
_PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "shutil.rmtree",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.symlink",
    "os.link",
    "os.utime",
    "shutil.copyfile",
    "shutil.move",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _trip(message: str):
    if not _STATE.violation:
        _STATE.violation = message
    raise GuardTripped(message)


def _resolve(path: Any) -> str | None:
    if isinstance(path, int):
        return None  # an already-open file descriptor
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))


def _inside(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _audit(event: str, args: tuple) -> None:
    if not _STATE.armed:
        return
    if event == "open":
        path = _resolve(args[0])
        if path is None:
            return
        mode, flags = args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writes and not _inside(path, (_STATE.sandbox,)):
            _trip(f"wrote outside the sandbox: {path}")
        if not writes and not _inside(path, _STATE.read_roots):
            _trip(f"read outside the sandbox: {path}")
    elif event in _PATH_EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                path = _resolve(arg)
                if path is not None and not _inside(path, (_STATE.sandbox,)):
                    _trip(f"{event} outside the sandbox: {path}")
    elif event in _BLOCKED:
        _trip(f"{_BLOCKED[event]} ({event})")


class _CappedOutput(io.TextIOBase):
    """sys.stdout / sys.stderr while armed: keeps the first `limit` characters, then stops the exercise."""

    def __init__(self, limit: int):
        self.limit, self.size, self.kept = limit, 0, io.StringIO()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.size += len(text)
        if self.kept.tell() < 2000:
            self.kept.write(text[: 2000 - self.kept.tell()])
        if self.size > self.limit:
            _trip(f"printed more than {self.limit:,} characters")
        return len(text)


class _TimeLimit:
    """SIGALRM after `seconds`: interrupts Python code (loops, sleep); C code is the parent's job."""

    def __init__(self, seconds: float, what: str, limit: float | None = None):
        self.seconds, self.what, self.limit = (
            seconds,
            what,
            seconds if limit is None else limit,
        )  # limit: what the message states

    def _fire(self, signum, frame):
        _trip(f"{self.what} took longer than {self.limit:g} s")

    def __enter__(self):
        signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Armed:
    """Guards on for the student's code: audit hook checks, output into `output` (capped)."""

    def __init__(self, output: _CappedOutput):
        self.output = output

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.output
        _STATE.armed = True
        return self

    def __exit__(self, *exc):
        _STATE.armed = False
        sys.stdout, sys.stderr = self.saved
        return False


def _read_roots(sandbox: str) -> tuple[str, ...]:
    import site
    import sysconfig

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dpo_lab/
    roots = {
        sandbox,
        os.path.realpath(package),
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.exec_prefix),
        "/dev/null",
        "/dev/urandom",
    }
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        roots.add(os.path.realpath(sysconfig.get_paths()[key]))
    for path in site.getsitepackages() + [site.getusersitepackages()]:
        roots.add(os.path.realpath(path))
    return tuple(sorted(roots))


def _short_error(e: BaseException, filename: str) -> str:
    """`Type: message (line N)` with the line in the student's cell when the traceback reaches it."""
    line = ""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename == filename:
            line = f" (line {frame.lineno})"
            break
    if isinstance(e, SyntaxError) and e.filename == filename:
        line = f" (line {e.lineno})"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}{line}"


def _magic_free(source: str) -> str:
    """IPython syntax (``%matplotlib``, ``!pip``) → plain Python calling a no-op ``get_ipython()``."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return source
    return TransformerManager().transform_cell(source)


class _NoIPython:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _limit_memory(megabytes: int | None) -> None:
    """Cap the address space at what the worker already maps plus `megabytes`: a huge allocation in the
    student's code becomes a MemoryError for that exercise instead of swapping the instructor's machine."""
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as f:
            vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):  # not Linux: no cap
        return
    if megabytes:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = vm_kb * 1024 + megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def encode(value: Any) -> str:
    """Plain data → text for one protocol line (``torch.save``, base64)."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(text: str) -> Any:
    """Inverse of :func:`encode`; ``weights_only=True``: tensors, numbers, strings and containers only, never code."""
    import torch

    return torch.load(io.BytesIO(base64.b64decode(text.encode("ascii"), validate=True)), weights_only=True)


def _raised(e: BaseException) -> dict[str, Any]:
    """The exception as data: its class name, message and the builtin classes it derives from (so the grader
    can compare with ``isinstance``: a ``ValueError`` subclass is a ``ValueError``)."""
    text = str(e).strip()
    bases = [c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins"]
    return {"type": type(e).__name__, "message": text[:4000], "bases": bases[:12]}


def _withheld_abort() -> str:
    from . import withheld

    if not withheld.CALLED:
        return ""
    return f"calls the package's own {withheld.CALLED[0]} instead of implementing it (withheld while grading)"


def _lookup(module: str, qualname: str) -> Any:
    import importlib

    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Exercise:
    """The exercise being served: its object, its bindings, its printed output and its guard record."""

    def __init__(self, name: str, namespace: dict[str, Any], max_output: int, bind: dict[str, list[str]]):
        from . import withheld

        self.name, self.namespace, self.output = name, namespace, _CappedOutput(max_output)
        self.obj = namespace.get(name)
        self.saved = {k: namespace.get(k) for k in bind}
        for key, (module, qualname) in bind.items():  # graded on its own: the exercises it calls are the package's
            namespace[key] = _lookup(module, qualname)
        _STATE.grading, _STATE.violation = name, ""
        withheld.CALLED.clear()

    def serve(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        from . import withheld
        from .subject import LocalSubject

        args, kwargs = decode(request["payload"])
        method = getattr(LocalSubject(self.obj), op)
        try:
            with _Armed(self.output):
                with _TimeLimit(float(request["seconds"]), self.name, float(request["limit"])):
                    result = method(*args, **kwargs)
        except GuardTripped:
            return {"abort": _STATE.violation}
        except withheld.Withheld:
            return {"abort": _STATE.violation or _withheld_abort()}
        except Exception as e:  # noqa: BLE001 - the student's function failed: the grader's check reports it
            if _STATE.violation or _withheld_abort():
                return {"abort": _STATE.violation or _withheld_abort()}
            return {"raised": _raised(e)}
        except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from student code
            return {"abort": _STATE.violation or _withheld_abort() or _short_error(e, "")}
        if _STATE.violation or _withheld_abort():  # tripped, and the student's code swallowed the exception
            return {"abort": _STATE.violation or _withheld_abort()}
        return {"ok": encode(result)}

    def finish(self) -> dict[str, Any]:
        _STATE.grading = ""
        for key, value in self.saved.items():
            if value is None:
                self.namespace.pop(key, None)
            else:
                self.namespace[key] = value
        return {"delegated": _withheld_abort(), "printed": self.output.kept.getvalue()[:500]}


def confine(job: dict[str, Any]) -> None:
    """Kernel-enforced limits, before any student code: drop root, then cap CPU, file size, processes, cores.
    Soft = hard, so the student's code cannot raise them again."""
    import resource

    drop = job.get("drop_to")
    if drop and os.getuid() == 0:
        uid, gid = drop
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise PermissionError("could not drop root privileges")
    for limit, value in (
        (resource.RLIMIT_CPU, job.get("cpu_seconds")),
        (resource.RLIMIT_FSIZE, job.get("file_mb") and job["file_mb"] * 2**20),
        (resource.RLIMIT_NPROC, job.get("max_processes")),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is None:
            continue
        _, hard = resource.getrlimit(limit)
        value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        resource.setrlimit(limit, (value, value))


def run_job(job: dict[str, Any], emit, requests) -> None:
    """Execute the job's cells, then answer the grader's requests until it closes `requests`."""
    import torch

    from . import grading_fixture, subject, withheld  # noqa: F401 - imported before the guards go up

    torch.set_num_threads(1)
    grading_fixture.fixture_tokenizer()
    grading_fixture.fixture_models()  # load the fixture files before the guards go up
    for bind in job.get("bind", {}).values():
        for module, qualname in bind.values():
            _lookup(module, qualname)
    encode(decode(encode(((torch.zeros(1), "x"), {}))))  # import what (de)serialising needs before the guards go up
    _magic_free("%matplotlib inline")  # import IPython's transformer before the guards go up
    _limit_memory(job.get("memory_mb"))
    sandbox = os.path.realpath(job["sandbox"])
    os.chdir(sandbox)
    _STATE.sandbox, _STATE.read_roots = sandbox, _read_roots(sandbox)
    sys.addaudithook(_audit)
    emit({"event": "started"})

    namespace: dict[str, Any] = {"__name__": "submission", "get_ipython": lambda: _NoIPython()}
    exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)  # noqa: S102 - our own imports
    for cell in job["cells"]:
        filename, error = f"<cell {cell['index']}>", ""
        _STATE.violation = ""
        with _Armed(_CappedOutput(job["max_output"])):
            try:
                with _TimeLimit(job["cell_timeout"], f"cell {cell['index']}"):
                    exec(compile(_magic_free(cell["source"]), filename, "exec"), namespace)  # noqa: S102 - the point
            except BaseException as e:  # noqa: BLE001 - a student's cell may fail in any way
                error = _short_error(e, filename)
        emit(
            {
                "event": "cell",
                "index": cell["index"],
                "error": _STATE.violation or error,
                "guard": bool(_STATE.violation),
            }
        )
    emit({"event": "ready"})

    exercise: _Exercise | None = None
    for line in requests:
        request = json.loads(line)
        op, reply = request["op"], {"id": request["id"]}
        if op == "begin":
            name = request["exercise"]
            exercise = _Exercise(name, namespace, job["max_output"], job.get("bind", {}).get(name, {}))
            reply["defined"] = exercise.obj is not None
        elif op == "end" and exercise is not None:
            reply.update(exercise.finish())
            exercise = None
        elif op in ("__call__", "with_grad", "collate", "steps") and exercise is not None:
            reply.update(exercise.serve(op, request))
        else:
            raise ValueError(f"unexpected request {op!r}")
        emit(reply)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    confine(job)
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    log = os.open(os.path.join(job["sandbox"], "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # a file grown past the limit ends the worker (reported)
    os.dup2(log, 1)  # printing (also from C) does not reach the protocol by accident
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = io.StringIO("")  # input() gets EOF instead of hanging

    def emit(message: dict) -> None:
        protocol.write(json.dumps(message, ensure_ascii=False) + "\n")
        protocol.flush()

    try:
        run_job(job, emit, requests)
    except BaseException as e:  # noqa: BLE001 - report instead of dying silently
        emit({"event": "fatal", "error": f"{type(e).__name__}: {e}"})
        return 1
    protocol.flush()
    os._exit(0)  # skip interpreter teardown (atexit hooks a student may have registered)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
