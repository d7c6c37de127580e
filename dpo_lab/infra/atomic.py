"""Atomic writes: a file or folder is either complete or absent, never half-written.

Everything the lab saves (corpus files, statistics, tokenizers, checkpoints) goes through here, so an
interrupted run leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def match_umask(path: str | os.PathLike) -> None:
    """Give a file (or folder) the permissions a plain ``open`` would have: writers using mkstemp leave 0600."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the hidden ``.<name>.*.tmp`` / ``.old`` siblings that a killed atomic write of `path` left behind.

    Call it when the stage that writes `path` starts again (a concurrent writer of the SAME path would
    lose its temporary copy: one stage writes one path at a time)."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*"):
            if leftover.suffix in (".tmp", ".old"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        match_umask(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8, '\\n' newlines on every OS)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces `path` in one rename.

    On an exception the temporary folder is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    match_umask(tmp)  # mkdtemp makes 0700; give the folder the user's usual permissions
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")  # move aside, then swap in, then drop the old copy
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
