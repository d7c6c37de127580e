"""Deploy a checkpoint: chat with it in-process, or serve it with ``transformers serve`` (OpenAI-compatible).

The lab does not write a server. ``transformers serve`` (transformers' own FastAPI/uvicorn server, the
``serving`` extra) loads a checkpoint folder and answers ``/v1/chat/completions``; the checkpoint's
tokenizer carries the HH chat template (:data:`dpo_lab.core.hh_format.HH_CHAT_TEMPLATE`), so the
server builds exactly the prompt the model was trained on. At class scale (many students, one GPU)
the same folder is served by vLLM (``vllm serve <folder>``), which speaks the same API; any client
of that API — the lab's :class:`~dpo_lab.evaluation.chat_client.ChatClient`, the ``openai`` package,
``curl`` — talks to either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..infra.checkpoints import verify_checkpoint
from ..run.layout import DPO_DIR, RUN_02, RUN_03, SFT_DIR, beta_dirs, dpo_run_name
from .chat_client import ChatClient

LOOPBACK = "127.0.0.1"


def model_folder(run_dir: str | Path, *, model: str | None = None, beta: float | None = None) -> Path:
    """The verified checkpoint to deploy: ``model`` = ``02_sft`` (or ``sft``) or a ``03_dpo/`` folder name
    (``beta_0.1``, ``ipo_beta_0.1`` …); or ``beta`` = the DPO run at that beta."""
    run_dir = Path(run_dir)
    if (model is None) == (beta is None):
        raise ValueError("give exactly one of model (02_sft, beta_0.1, ipo_beta_0.1 …) or beta")
    if model is not None and model.lower() in ("sft", SFT_DIR):
        folder, produced_by = run_dir / SFT_DIR, RUN_02
    else:
        folder, produced_by = run_dir / DPO_DIR / (model or dpo_run_name(beta)), RUN_03
    if not folder.is_dir():
        found = [p.name for p in beta_dirs(run_dir)]
        raise FileNotFoundError(f"{folder} does not exist; DPO runs in {run_dir / DPO_DIR}: {found or 'none'}")
    verify_checkpoint(folder, produced_by=produced_by)
    add_missing_chat_template(folder)
    return folder


def add_missing_chat_template(folder: str | Path, log=print) -> bool:
    """Give a checkpoint saved before the lab stored chat templates the HH template, as ``chat_template.jinja``.

    Only a NEW file is written (atomically); the files the manifest hashes are untouched, so the checkpoint
    stays verified. Returns True when the file was added.
    """
    from transformers import AutoTokenizer

    from ..core.hh_format import HH_CHAT_TEMPLATE
    from ..infra.atomic import atomic_write_text

    folder = Path(folder)
    if AutoTokenizer.from_pretrained(folder).chat_template:
        return False
    atomic_write_text(folder / "chat_template.jinja", HH_CHAT_TEMPLATE)
    log(f"{folder}：這個 checkpoint 存檔時還沒有 chat template，已加上 HH 格式的 chat_template.jinja（其他檔案不變）")
    return True


def chat_pipeline(folder: str | Path, device=None):
    """``pipeline("text-generation")`` on a checkpoint: call it with a list of messages, as any chat model."""
    from transformers import pipeline

    from ..infra.device import pick_device

    return pipeline("text-generation", model=str(folder), device=pick_device(device))


def serve_command(
    folder: str | Path, *, host: str = LOOPBACK, port: int = 8000, device: str | None = None
) -> list[str]:
    """The ``transformers serve`` command line for one checkpoint (run with this Python, so in this venv), through
    :func:`main` below so that ``GET /v1/models`` lists the checkpoint it serves."""
    command = [sys.executable, "-m", "dpo_lab.evaluation.serving", str(Path(folder).resolve())]
    command += ["--host", host, "--port", str(port), "--log-level", "warning"]
    return command + (["--device", device] if device else [])


def list_the_pinned_model(folder: str | Path) -> dict:
    """Make ``GET /v1/models`` of a server pinned to `folder` list that model, and only it.

    transformers serve (5.x) answers ``/v1/models`` from the Hugging Face cache: it never lists the local folder
    it was started with, and answers 500 when that cache folder does not exist (``CacheNotFound``) — what an
    OpenAI client calling ``models.list()`` first would see. A pinned server refuses any other model, so the
    honest list is the one model a client may request: its id is the folder's absolute path.
    """
    from transformers.cli.serving.model_manager import ModelManager

    folder = Path(folder).resolve()
    entry = {"id": str(folder), "object": "model", "created": int(folder.stat().st_mtime), "owned_by": "dpo_lab"}
    ModelManager.get_gen_models = staticmethod(lambda cache_dir=None: [dict(entry)])
    return entry


def main(argv: list[str] | None = None) -> None:
    """``python -m dpo_lab.evaluation.serving FOLDER [transformers serve options]``: ``transformers serve FOLDER``
    with :func:`list_the_pinned_model` applied."""
    argv = list(sys.argv[1:] if argv is None else argv)
    list_the_pinned_model(argv[0])
    from transformers.cli.transformers import app

    app(["serve", *argv], prog_name="transformers")


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@contextmanager
def served(
    folder: str | Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    device: str | None = None,
    startup_timeout: float = 300.0,
) -> Iterator[ChatClient]:
    """Start ``transformers serve`` on ``folder`` (loopback by default), wait until it answers, yield a client
    of its OpenAI-compatible API, and stop the server on exit (also on an error or a notebook interrupt)."""
    port = port or free_port(host)
    base = f"http://{host}:{port}"
    log = Path(tempfile.mkstemp(prefix=f"dpo-lab-serve-{port}-", suffix=".log")[1])
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    with open(log, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            serve_command(folder, host=host, port=port, device=device),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(base):
            if process.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
                raise RuntimeError(f"transformers serve exited with code {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not answer on {base} within {startup_timeout:.0f} s")
            time.sleep(0.5)
        yield ChatClient(base + "/v1", str(Path(folder).resolve()), timeout=120.0)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
