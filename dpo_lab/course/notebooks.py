"""Run the lab's four notebooks in order with papermill — the README's "run the lab" command.

    python -m dpo_lab run --profile auto --run-dir runs/default          # 01 → 02 → 03 (profile's β) → 04
    python -m dpo_lab run --run-dir runs/default --only 03 04 --beta 0.5  # another beta, then compare again

Each notebook receives ``profile`` and ``run_dir`` (and ``seed`` / ``beta`` when given) through its
``parameters`` cell; the executed copies are kept in ``runs/<run>/notebooks/`` — 03's copy carries its
beta in the name, so every beta's executed notebook is kept — with the wall time of each in
``timings.json``. A failing notebook stops the run; its executed copy shows the failing cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..infra.atomic import atomic_write_text
from ..infra.console import PROGRESS_ENV, PROGRESS_FILE_ENV, follow_progress
from ..run.layout import EXECUTED_DIR, dpo_run_name

NOTEBOOKS = (
    "01-Setup_and_Data.ipynb",
    "02-SFT_Baseline.ipynb",
    "03-DPO_Training.ipynb",
    "04-Evaluation_and_Compare.ipynb",
)


def repo_root() -> Path:
    """The folder holding the master notebooks (the repository root, next to ``dpo_lab/``)."""
    return Path(__file__).resolve().parents[2]


def master_notebooks(root: str | Path | None = None) -> list[Path]:
    root = Path(root) if root is not None else repo_root()
    paths = [root / name for name in NOTEBOOKS]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{root}: the lab notebooks {missing} are missing; run from a clone of the lab repository"
        )
    return paths


def _select(only: list[str] | None) -> list[str]:
    """``["03", "04"]`` or full names → the notebooks to run, in the lab's order."""
    if not only:
        return list(NOTEBOOKS)
    chosen = []
    for item in only:
        matches = (
            [n for n in NOTEBOOKS if n == item or n.startswith(f"{item}-") or n.startswith(f"{int(item):02d}-")]
            if item.isdigit()
            else [n for n in NOTEBOOKS if n == item]
        )
        if not matches:
            raise ValueError(f"unknown notebook {item!r}: choose from 01, 02, 03, 04 or {', '.join(NOTEBOOKS)}")
        chosen += matches
    return [n for n in NOTEBOOKS if n in chosen]


def executed_name(name: str, parameters: dict[str, Any]) -> str:
    """03's executed copy is named after its run folder (``beta_0.5``, ``ipo_beta_0.1`` …), so re-running another
    beta or loss never overwrites the first."""
    if name.startswith("03-") and parameters.get("beta") is not None:
        run = dpo_run_name(
            parameters["beta"], parameters.get("loss_type") or "sigmoid", parameters.get("label_smoothing") or 0.0
        )
        return name.replace(".ipynb", f".{run}.ipynb")
    return name


def run_lab(
    profile: str = "auto",
    run_dir: str | Path = "runs/default",
    *,
    beta: float | None = None,
    seed: int | None = None,
    only: list[str] | None = None,
    parameters: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    root: str | Path | None = None,
    kernel_name: str | None = None,
) -> list[dict[str, Any]]:
    """Execute the notebooks in order; return ``[{"notebook", "output", "seconds"}, …]``.

    ``parameters`` maps a notebook name (or its number, "03") to extra papermill parameters for it;
    the key ``"*"`` gives values to every notebook whose parameters cell declares them.
    """
    import papermill as pm

    from ..run.config import resolve_profile

    root = Path(root) if root is not None else repo_root()
    master_notebooks(root)  # all four must be there, even when only some run
    resolve_profile(profile)  # an unknown profile fails here, not inside a kernel
    run_dir = Path(run_dir).resolve()
    plan = [
        (name, _notebook_params(root / name, profile, run_dir, beta, seed, parameters or {})) for name in _select(only)
    ]
    out_dir = run_dir / EXECUTED_DIR  # every notebook's parameters were checked above, before anything runs
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with _environ(PROGRESS_ENV, "0"):  # the kernels inherit it: no frozen progress widgets in the executed copies
        for name, params in plan:
            results.append(_execute(pm, root, name, params, out_dir, run_dir, profile, progress, kernel_name))
    return results


def _execute(
    pm,
    root: Path,
    name: str,
    params: dict[str, Any],
    out_dir: Path,
    run_dir: Path,
    profile: str,
    progress: bool,
    kernel_name: str | None,
) -> dict[str, Any]:
    """Run one notebook with papermill into ``out_dir`` and record its wall time."""
    output = out_dir / executed_name(name, params)
    print(f"[{name}] running (profile={profile}, run_dir={run_dir}) -> {output}", flush=True)
    t0 = time.perf_counter()
    with _training_progress(out_dir / ".progress.jsonl", progress):
        pm.execute_notebook(
            str(root / name),
            str(output),
            parameters=params,
            cwd=str(root),
            progress_bar=progress,
            kernel_name=kernel_name,
            report_mode=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )  # no kernel start-up notices in the terminal
    seconds = time.perf_counter() - t0
    print(f"[{name}] done in {seconds:.1f} s", flush=True)
    result = {"notebook": name, "output": str(output), "seconds": round(seconds, 1), "parameters": params}
    _record_timing(out_dir, result)
    return result


@contextlib.contextmanager
def _environ(name: str, value: str):
    """``os.environ[name] = value`` for the body (kernels started inside inherit it), then as it was."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _training_progress(path: Path, enabled: bool):
    """The kernel's loops write their steps to ``path`` (it inherits the variable); this terminal shows them."""
    if not enabled:
        yield
        return
    with _environ(PROGRESS_FILE_ENV, str(path)), follow_progress(path):
        yield


def _notebook_params(
    path: Path, profile: str, run_dir: Path, beta: float | None, seed: int | None, parameters: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The papermill parameters of one notebook; a parameter its ``parameters`` cell does not declare is an error."""
    name = path.name
    declared = notebook_parameters(path)
    params: dict[str, Any] = {"profile": profile, "run_dir": str(run_dir)}
    if seed is not None:
        params["seed"] = seed
    if beta is not None and "beta" in declared:
        params["beta"] = beta
    for key, value in parameters.get("*", {}).items():
        if key in declared:  # a parameter given for "every notebook" goes to those that declare it
            params[key] = value
    for key in (name, name[:2]):
        params.update(parameters.get(key, {}))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{name}: no parameter(s) {unknown}; its parameters cell declares {sorted(declared)}")
    if "beta" in declared:
        params.setdefault("beta", declared["beta"])
        if params["beta"] is None:  # "the profile's default": named in the executed copy, so each beta keeps its own
            from ..run.config import get_config, resolve_profile

            params["beta"] = get_config(resolve_profile(profile)).beta
    return params


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names and default values of a notebook's ``parameters`` cell (it holds only literal assignments)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            scope: dict[str, Any] = {}
            exec(cell.source, {}, scope)
            return scope
    raise ValueError(f"{Path(path).name} has no cell tagged 'parameters'")


def _record_timing(out_dir: Path, result: dict[str, Any]) -> None:
    path = out_dir / "timings.json"
    timings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    timings[Path(result["output"]).name] = {
        "seconds": result["seconds"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(path, json.dumps(timings, indent=2, sort_keys=True) + "\n")
