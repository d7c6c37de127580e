"""Atomic writes: a file or folder is either complete or absent, never half-written.

Everything the lab saves (corpus files, statistics, tokenizers, checkpoints) goes through here, so an
interrupted run leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class DiskFullError(OSError):
    """The disk filled up while the lab was saving: says so, and where (not a library's ``unexpected pos``)."""


_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# how torch.save / safetensors report a failed write (the errno is lost on the way up)
_WRITE_FAILED = ("unexpected pos", "file write failed", "no space left", "write failed")


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def disk_full_error(error: BaseException, path: str | os.PathLike) -> DiskFullError | None:
    """A :class:`DiskFullError` naming `path` when `error` came from a full disk, else None.

    An ``OSError`` says so with its errno; torch's zip writer and safetensors only say the write failed, so for
    those the disk's free space decides (under 64 MiB left: full)."""
    path = Path(path)
    free = _free_bytes(path)
    full = isinstance(error, OSError) and error.errno in _FULL_ERRNOS
    if not full and isinstance(error, (OSError, RuntimeError)):
        failed_write = any(marker in str(error).lower() for marker in _WRITE_FAILED)
        full = failed_write and free is not None and free < 64 * 2**20
    if not full:
        return None
    left = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    return DiskFullError(
        errno.ENOSPC,
        f"磁碟已滿：寫入 {path} 時空間不足（那個磁碟還剩 {left}）。請清出空間（例如刪掉不需要的 runs/ 或"
        " checkpoint），或把 run_dir 換到空間較大的磁碟，再重新執行；之前存好的結果沒有被動到"
        f"（原始錯誤：{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}）",
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def match_umask(path: str | os.PathLike) -> None:
    """Give a file (or folder) the permissions a plain ``open`` would have: writers using mkstemp leave 0600."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def _newest(paths) -> Path | None:
    paths = sorted(paths, key=lambda p: p.stat().st_mtime_ns)
    return paths[-1] if paths else None


def recover_interrupted_save(path: str | os.PathLike, log=print) -> Path | None:
    """Put back the complete copy that a save killed between its renames left hidden beside `path`.

    :func:`atomic_directory` renames a finished copy to ``.<name>.*.ready`` before it moves the old `path` aside
    (into ``.<name>.*.old/previous``) and the new one in. Killed in between, `path` is missing (or still the old
    one) while complete copies wait beside it: the newest complete one (``.ready``, else the old) becomes
    `path` again. Returns the copy used, or None when there was nothing to recover.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return None
    ready = _newest(p for p in path.parent.glob(f".{path.name}.*.ready") if p.is_dir())
    if ready is not None:
        _swap_in(ready, path)
        log(f"[{path.name}] 上次儲存在兩次 rename 之間被中斷：已放回完整的新版本（{ready.name}）")
        return ready
    if not path.exists():
        old = _newest(p for p in path.parent.glob(f".{path.name}.*.old") if (p / "previous").is_dir())
        if old is not None:
            os.replace(old / "previous", path)
            log(f"[{path.name}] 上次儲存在兩次 rename 之間被中斷：已放回完整的舊版本（{old.name}）")
            return old
    return None


def remove_leftovers(path: str | os.PathLike, log=print) -> list[Path]:
    """Recover a complete copy that a killed save left hidden (:func:`recover_interrupted_save`), then delete the
    other ``.<name>.*.tmp`` / ``.old`` / ``.ready`` siblings.

    Call it when the stage that writes `path` starts again, holding its :func:`~dpo_lab.infra.locks.stage_lock`
    (a concurrent writer of the SAME path would lose its temporary copy)."""
    path = Path(path)
    recover_interrupted_save(path, log=log)
    removed = []
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*"):
            if leftover.suffix in (".tmp", ".old", ".ready"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def reporting_full_disk(path: str | os.PathLike) -> Iterator[None]:
    """Turn an error that a full disk caused inside the block into a :class:`DiskFullError` naming `path`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        full = disk_full_error(e, path)
        if full is None:
            raise
        raise full from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    with reporting_full_disk(path):
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


def _swap_in(new: Path, path: Path) -> None:
    """Make the complete folder `new` become `path`: move an existing `path` aside, rename `new` in, drop the old."""
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / "previous")  # killed here: `new` (.ready) and the old copy both survive
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces `path` in one rename.

    On an exception the temporary folder is removed and an existing `path` is left untouched (a full disk is
    reported as :class:`DiskFullError`). Once filled, the copy is renamed ``.ready`` before the swap: a process
    killed during the swap leaves a copy that :func:`recover_interrupted_save` knows to be complete.
    """
    path = Path(path)
    with reporting_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            match_umask(tmp)  # mkdtemp makes 0700; give the folder the user's usual permissions
            yield tmp
            ready = tmp.with_suffix(".ready")
            os.replace(tmp, ready)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(ready, path)
