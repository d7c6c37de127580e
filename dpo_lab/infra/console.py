"""What the user sees while things run: transformers' messages kept quiet, progress bars that can be turned off."""

from __future__ import annotations

import os


def quiet_hf() -> None:
    """Hide transformers' per-call progress bars and info warnings (notebook and CLI output stay readable)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


PROGRESS_ENV = (
    "DPO_LAB_PROGRESS"  # "0" turns the loops' progress bars off (set by `python -m dpo_lab run` for its kernels)
)


def progress_bar(enabled: bool = True, **tqdm_kwargs):
    """A tqdm bar (a widget in Jupyter), or None when disabled by the caller or by ``DPO_LAB_PROGRESS=0``.

    Executed notebook copies would otherwise keep a frozen "0%" bar, since widget state is not saved.
    """
    if not enabled or os.environ.get(PROGRESS_ENV) == "0":
        return None
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **tqdm_kwargs)
