"""Which runs stage 04 compares: every finished, up-to-date DPO run, identified by its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..infra.checkpoints import StaleCheckpointError, verify_checkpoint
from ..infra.manifest import read_manifest
from ..run.layout import DATA_DIR, RUN_02, RUN_03, SFT_DIR, beta_dirs, number_text, run_identity
from ..run.pipeline import data_id


def model_label(run: dict[str, Any]) -> str:
    """How 04 names a DPO run (:func:`dpo_lab.run.layout.run_identity`): ``DPO β=0.1``, ``IPO β=0.1``,
    ``cDPO ε=0.1 β=0.1``, ``DPO β=0.1 · round 2``. A display name only: nothing parses it back."""
    from ..core.losses import LOSSES

    label = LOSSES[run["loss_type"]].label
    if run["label_smoothing"]:
        label += f" ε={number_text(run['label_smoothing'])}"
    label += f" β={number_text(run['beta'])}"  # two betas never share a label (nor a folder)
    return label + (" · round 2" if run["round"] == 2 else "")


def discover_models(run_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``{"SFT": 02_sft, "DPO β=0.1": 03_dpo/beta_0.1, …}``, and the folders skipped, with why.

    Each run is identified by its manifest (:func:`dpo_lab.run.layout.run_identity`), not its folder's name.
    Order: the DPO (sigmoid) runs by increasing beta, then the loss variants, then the second rounds.
    A DPO folder counts only if it is complete and was trained from the CURRENT 02_sft and 01_data
    (a second round: from its first round as it is now); an incomplete or stale one — or a copy of a run
    already found — is listed in the second value, never silently compared.
    """
    run_dir = Path(run_dir)
    sft = verify_checkpoint(run_dir / SFT_DIR, produced_by=RUN_02, expected_inputs={DATA_DIR: data_id(run_dir)})
    models: dict[str, Path] = {"SFT": run_dir / SFT_DIR}
    skipped: list[str] = []
    found = []
    for folder in beta_dirs(run_dir):
        try:
            run = run_identity(read_manifest(folder, produced_by=RUN_03))
            expected = {DATA_DIR: data_id(run_dir), SFT_DIR: sft["id"]}
            if run["round"] == 2:
                first = folder.parent / run["first_round"]
                expected = {DATA_DIR: expected[DATA_DIR], first.name: read_manifest(first, produced_by=RUN_03)["id"]}
            verify_checkpoint(folder, produced_by=RUN_03, expected_inputs=expected)
        except (FileNotFoundError, StaleCheckpointError) as e:
            skipped.append(f"{folder.name}: {e}")
            continue
        order = (run["round"], run["loss_type"] != "sigmoid", run["loss_type"], run["label_smoothing"], run["beta"])
        found.append((order, model_label(run), folder))
    for _, label, folder in sorted(found):
        if label in models:  # a copied or renamed folder: its manifest says it is a run already compared
            skipped.append(f"{folder.name}: the same run as {models[label].name} ({label}, by its manifest)")
            continue
        models[label] = folder
    return models, skipped


def run_identities(models: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``{model name: run_identity}`` of every DPO run in ``models`` (SFT has none)."""
    return {
        name: run_identity(read_manifest(folder, produced_by=RUN_03))
        for name, folder in models.items()
        if name != "SFT"
    }
