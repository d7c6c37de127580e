"""Manifests: what produced a stage's output (profile, config, seed, library versions, inputs, metrics).

Every stage folder under ``runs/<run>/`` carries a ``manifest.json``, so the next notebook can check
that its input exists, is complete and is the one it expects, and an instructor can tell exactly
which versions produced a result (TRL's API drifts between releases).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text, recover_interrupted_save
from .locks import file_lock, lock_path

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "datasets",
    "tokenizers",
    "accelerate",
    "safetensors",
    "peft",
    "numpy",
    "pandas",
)
MANIFEST = "manifest.json"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries whose behaviour changes the numbers (None = not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from .._version import __version__

    out["dpo_lab"] = __version__
    return out


def stage_id(manifest: dict[str, Any]) -> str:
    """A short content id of a manifest (what later stages record as their input's id)."""
    payload = {k: manifest[k] for k in sorted(manifest) if k not in ("id", "created")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_manifest(
    stage: str,
    config,
    *,
    inputs: dict[str, str] | None = None,
    metrics: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    manifest = {
        "stage": stage,
        "profile": config.profile,
        "seed": config.seed,
        "config": config.to_dict(),
        "versions": library_versions(),
        "inputs": inputs or {},
        "metrics": metrics or {},
        "files": files or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["id"] = stage_id(manifest)
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_text(
        Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


class StaleCheckpointError(RuntimeError):
    """A stage folder exists but does not match what it claims to be, or what it was built from changed."""


def read_manifest(folder: str | Path, *, produced_by: str) -> dict[str, Any]:
    """The manifest of a stage folder, or an error that names the file and says which notebook/command produces it."""
    folder = Path(folder)
    path = folder / MANIFEST
    hidden_copies = [*folder.parent.glob(f".{folder.name}.*.ready"), *folder.parent.glob(f".{folder.name}.*.old")]
    if not folder.exists() and hidden_copies:
        with file_lock(lock_path(folder), wait=False) as nobody_writing:
            if nobody_writing:  # a save killed between its two renames: put its complete copy back
                recover_interrupted_save(folder)
    if not path.exists():
        state = "is missing" if not folder.exists() else "has no manifest.json (it was not completed)"
        raise FileNotFoundError(f"{folder} {state}: run {produced_by} first.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StaleCheckpointError(
            f"{path} is not valid JSON ({e}): the folder is damaged; re-run {produced_by}."
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("id"), str):
        raise StaleCheckpointError(f"{path} is not a manifest (no 'id'): the folder is damaged; re-run {produced_by}.")
    return manifest


def file_hashes(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` except the manifest, by path relative to it ('/'-separated)."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def verify_files(folder: str | Path, manifest: dict[str, Any], *, produced_by: str) -> None:
    """Every file the manifest lists is present with the recorded SHA-256 (else: which one, and what to re-run)."""
    folder = Path(folder)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise StaleCheckpointError(
            f"{folder / MANIFEST} records no file hashes (made by an older version of the lab); re-run {produced_by}."
        )
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise StaleCheckpointError(f"{folder}: {name} is missing (incomplete copy?); re-run {produced_by}.")
        if sha256_file(path) != digest:
            raise StaleCheckpointError(
                f"{folder}: {name} does not match its manifest (modified or half-written); re-run {produced_by}."
            )


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
