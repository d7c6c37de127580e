"""File locks: one writer per stage folder, one saver per cache file.

Two runs writing the same folder (two ``dpo`` runs at the same beta in two terminals, a notebook and the
CLI) would each train, each print metrics and each replace the folder: one result silently lost. A stage
holds :func:`stage_lock` on its output folder from the moment it starts until its checkpoint is saved; a
second run fails at once with a message naming the first (its pid and start time).

POSIX ``flock``: released by the kernel when the holder exits, also when it is killed, so a crash never leaves
a stale lock. On Windows (no ``fcntl``) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator


class StageBusyError(RuntimeError):
    """Another process is writing this stage folder right now."""


def lock_path(folder: str | Path) -> Path:
    """``03_dpo/beta_0.1`` → ``03_dpo/.beta_0.1.lock`` (hidden, beside the folder; never a run folder itself)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on the file `path` for the block. ``wait=False``: do not wait; yields False when
    another process holds it (the block then runs unlocked, so the caller decides)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def stage_lock(folder: str | Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of the stage folder `folder` for the block, or raise :class:`StageBusyError` at once.

    ``enabled=False`` (the non-main processes of a multi-GPU run: only the main one writes) takes nothing.
    """
    if not enabled:
        yield
        return
    path = lock_path(folder)
    with file_lock(path, wait=False) as held:
        if not held:
            try:
                holder = path.read_text(encoding="utf-8").strip() or "unknown pid"
            except OSError:
                holder = "unknown pid"
            raise StageBusyError(
                f"{folder} 正由另一個執行中的 run 寫入（{holder}）：等它結束再執行，或換一個 beta / run_dir。"
                "兩個 run 同時寫同一個資料夾，其中一個的結果會被覆蓋而遺失，所以這個 run 不開始。"
            )
        yield
