"""The operating-system sandbox every grading worker runs in: bubblewrap (``bwrap``, the sandbox Flatpak uses).

The grading worker executes a student's code. Guards inside that Python process (:mod:`dpo_lab.course.sandbox`)
give clear messages, but code in the process can switch them off; the boundary is here, outside it:

* a new, empty root file system: read-only views of the system libraries, the Python installation
  (its site-packages, with ``trl`` hidden) and a copy of ``dpo_lab`` in which the graded exercises'
  reference implementations are withheld (:mod:`dpo_lab.course.withhold`); nothing else of the
  machine exists there — no classmates' notebooks, no report folder, no real package, no home folder;
* a fresh working folder (``/sandbox``, a tmpfs of ``work_mb``) and one log file (capped by RLIMIT_FSIZE);
* no network, its own PID/IPC/UTS namespaces: when the worker ends, every process it started ends too;
* as root: the worker drops to an unprivileged uid/gid (``nobody``) before any student code runs, so the
  process limit (RLIMIT_NPROC) applies; otherwise bubblewrap's user namespace is unprivileged already;
* limits on CPU time, memory (address space), written bytes and processes, set by the worker itself
  before the first student cell (:func:`dpo_lab.course.sandbox.confine`).

Where bubblewrap is missing or cannot create namespaces, grading refuses to run (:class:`SandboxUnavailable`)
unless the instructor passes ``--unsafe``, which the reports then name.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

UNPRIVILEGED_ID = 65534  # nobody / nogroup: the worker's uid and gid when the grader runs as root
PACKAGE_MOUNT = "/grading"  # where the withheld copy of dpo_lab is mounted (it is /grading/dpo_lab)
WORK_DIR = "/sandbox"  # the worker's fresh working folder inside the sandbox
HIDDEN_PACKAGES = ("trl",)  # other implementations of the graded exercises, hidden from every worker
INSTALL_HINT = (
    "autograding runs each student's code in a bubblewrap sandbox: `sudo apt-get install -y bubblewrap` "
    "(Debian/Ubuntu; `dnf install bubblewrap` on Fedora). Without it, `python -m dpo_lab grade --unsafe …` "
    "grades with in-process guards only (the reports say so)"
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here: grading must not run unguarded by accident."""


@dataclass(frozen=True)
class Mounts:
    """What a worker sees: host paths bound read-only, plus the per-worker files."""

    package_root: Path  # the folder holding the withheld ``dpo_lab/`` copy
    job_file: Path
    log_file: Path


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@lru_cache(maxsize=1)
def _probe(bwrap: str) -> str:
    """ "" when `bwrap` can create the namespaces the grader uses, else what it printed."""
    try:
        done = subprocess.run(
            [bwrap, *_namespace_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


def check() -> str:
    """The bwrap executable to use; raises :class:`SandboxUnavailable` (with how to fix it) when there is none."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed. {INSTALL_HINT}")
    problem = _probe(bwrap)
    if problem:
        raise SandboxUnavailable(f"bubblewrap cannot create a sandbox on this machine ({problem}). {INSTALL_HINT}")
    return bwrap


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _namespace_flags() -> list[str]:
    flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if _as_root():  # privileged bubblewrap: no user namespace (its uid 0 would be exempt from RLIMIT_NPROC)
        return flags + ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # only to drop to nobody at once
    return ["--unshare-user"] + flags


def python_roots() -> list[Path]:
    """The Python installation the worker needs: prefixes and site-packages (never the repository or the cwd)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    roots |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(site.getsitepackages())
    user_site = site.getusersitepackages()
    if user_site and os.path.isdir(user_site):
        roots.add(user_site)
    real = sorted({Path(os.path.realpath(r)) for r in roots if r and os.path.isdir(r)})
    return [r for r in real if not any(r != o and o in r.parents for o in real)]  # outermost only


def _real_package_dirs() -> list[Path]:
    """Every place the real ``dpo_lab`` lives inside a mounted root (a non-editable install): hidden there."""
    here = Path(__file__).resolve().parents[1]
    found = {here}
    for root in python_roots():
        candidate = root / "dpo_lab"
        if candidate.is_dir():
            found.add(candidate.resolve())
    return sorted(found)


def _dirs_for(path: Path) -> list[str]:
    """Ancestors of `path` (outermost first) that must exist, world-traversable, before `path` is bound."""
    return [str(p) for p in reversed(path.parents) if str(p) != "/"]


def command(bwrap: str, argv: list[str], mounts: Mounts, *, work_mb: int, env: dict[str, str]) -> list[str]:
    """The ``bwrap … -- argv`` command line of one grading worker."""
    cmd = [bwrap, *_namespace_flags(), "--die-with-parent", "--new-session", "--tmpfs", "/"]
    for system in ("/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        if os.path.exists(system):
            cmd += ["--ro-bind", system, system]
    for link in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
    made: set[str] = set()
    roots = python_roots()
    for root in roots:
        for parent in _dirs_for(root):
            if parent not in made and not any(str(r) == parent for r in roots):
                made.add(parent)
                cmd += ["--perms", "0755", "--dir", parent]
        cmd += ["--ro-bind", str(root), str(root)]
    for root in roots:  # other implementations of the exercises, and the real package, do not exist in there
        for name in HIDDEN_PACKAGES:
            if (root / name).is_dir():
                cmd += ["--tmpfs", str(root / name)]
    for real in _real_package_dirs():
        if any(r in real.parents for r in roots):
            cmd += ["--ro-bind", str(mounts.package_root / "dpo_lab"), str(real)]
    cmd += ["--perms", "0755", "--dir", PACKAGE_MOUNT, "--ro-bind", str(mounts.package_root), PACKAGE_MOUNT]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", str(work_mb * 2**20), "--tmpfs", WORK_DIR, "--chmod", "1777", WORK_DIR]
    cmd += ["--ro-bind", str(mounts.job_file), f"{WORK_DIR}/job.json"]
    cmd += ["--bind", str(mounts.log_file), f"{WORK_DIR}/worker.log"]
    cmd += ["--chdir", WORK_DIR, "--clearenv"]
    for key, value in sorted(env.items()):
        cmd += ["--setenv", key, value]
    return cmd + ["--", *argv]


def worker_env(extra_python_path: str) -> dict[str, str]:
    """The worker's whole environment (bwrap starts from an empty one): no tokens, no proxies, offline."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": WORK_DIR,
        "TMPDIR": WORK_DIR,
        "HF_HOME": f"{WORK_DIR}/hf",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": extra_python_path,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MPLBACKEND": "Agg",
    }
    if os.path.isdir(site.getusersitepackages() or ""):
        env.pop("PYTHONNOUSERSITE")
        env["PYTHONUSERBASE"] = site.getuserbase()
    return env


def drop_to() -> tuple[int, int] | None:
    """The uid/gid a worker started by this process must switch to before running student code (None: stay)."""
    return (UNPRIVILEGED_ID, UNPRIVILEGED_ID) if _as_root() else None
