"""What the user sees while things run: transformers kept quiet, and a loop's progress shown where people wait.

A training loop reports each step to a :class:`Progress`, which shows it three ways:

- a tqdm bar — a live widget in JupyterLab, a text bar on a terminal (``DPO_LAB_PROGRESS=0`` turns the bar
  off: ``python -m dpo_lab run`` sets it for its kernels, since an executed notebook would keep a frozen bar);
- JSON lines appended to the file named by ``DPO_LAB_PROGRESS_FILE``, which ``python -m dpo_lab run`` sets
  and prints on its own terminal while the notebook runs (:func:`follow_progress`);
- once, after a few measured steps, the expected duration of the whole loop on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROGRESS_ENV = "DPO_LAB_PROGRESS"  # "0": no tqdm bar (the kernels of `python -m dpo_lab run`)
PROGRESS_FILE_ENV = "DPO_LAB_PROGRESS_FILE"  # where the kernels of `python -m dpo_lab run` report their steps


def quiet_hf() -> None:
    """Hide transformers' per-call progress bars and info warnings (notebook and CLI output stay readable)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def duration(seconds: float) -> str:
    """``754`` → ``"12 分 34 秒"`` (how long something takes, for people).

    >>> duration(754), duration(42.4), duration(3725)
    ('12 分 34 秒', '42 秒', '1 小時 2 分')
    """
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} 小時 {seconds % 3600 // 60} 分"
    if seconds >= 60:
        return f"{seconds // 60} 分 {seconds % 60} 秒"
    return f"{seconds} 秒"


class Progress:
    """One loop's progress: ``step(**metrics)`` after every step, ``close()`` at the end.

    ``eval_every`` / ``eval_seconds``: when the loop evaluates on held-out data and how long one evaluation
    took (measured by the caller), so the announced estimate includes the evaluations still to come.
    """

    WARMUP_STEPS = 3  # at least this many timed steps before an estimate (the first one, with its warm-up, is not)
    WINDOW_SECONDS = 15.0  # ... and this long, or a tenth of the loop: batches differ in length, a few mislead

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        initial: int = 0,
        eval_every: int | None = None,
        eval_seconds: float | None = None,
        announce: bool = True,
    ):
        self.total, self.desc, self.step_count = total, desc, initial
        self.eval_every, self.eval_seconds, self.announce = eval_every, eval_seconds, announce
        self.started = time.perf_counter()
        self._first_done: float | None = None
        self._measured = 0
        self._last_write = 0.0
        self.estimate_seconds: float | None = None
        self.bar = None
        if os.environ.get(PROGRESS_ENV) != "0":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
        path = os.environ.get(PROGRESS_FILE_ENV)
        self.file = Path(path) if path else None
        self._write({"event": "start"}, force=True)

    # ---------------------------------------------------------------- reporting
    def step(self, **metrics: float) -> None:
        """One step done; ``metrics`` (loss, and held-out values on the steps that evaluate) are shown beside it."""
        self.step_count += 1
        now = time.perf_counter()
        if self._first_done is None:
            self._first_done = now
        else:
            self._measured += 1
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()}
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(shown, refresh=False)
        held_out = any(k.startswith("eval") for k in metrics)
        self._write({"event": "step", "metrics": shown}, force=held_out or self.step_count == self.total)
        if self.announce and self.estimate_seconds is None and self.step_count < self.total:
            long_enough = now - self._first_done >= self.WINDOW_SECONDS or self._measured >= self.total / 10
            if self._measured >= self.WARMUP_STEPS and long_enough:
                self._announce(now)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._write({"event": "done"}, force=True)

    # ---------------------------------------------------------------- the estimate
    def _evals_between(self, done: int) -> int:
        if not self.eval_every:
            return 0
        steps = range(done + 1, self.total + 1)
        return sum(1 for s in steps if s % self.eval_every == 0 or s == self.total)

    def _announce(self, now: float) -> None:
        first_step = self.step_count - self._measured  # the step whose end started the clock
        evals_timed = self._evals_between(first_step) - self._evals_between(self.step_count) if self.eval_seconds else 0
        per_step = max(0.0, now - self._first_done - evals_timed * (self.eval_seconds or 0.0)) / self._measured
        left = self.total - self.step_count
        evals = self._evals_between(self.step_count) if self.eval_seconds else 0
        remaining = per_step * left + evals * (self.eval_seconds or 0.0)
        self.estimate_seconds = (now - self.started) + remaining
        finish = time.strftime("%H:%M", time.localtime(time.time() + remaining))
        how = f"每步 {per_step:.2f} s × 剩下 {left:,} 步"
        if evals:
            how += f" + {evals} 次 held-out 評估 × {self.eval_seconds:.1f} s"
        text = f"⏱ {self.desc}：預估全程約 {duration(self.estimate_seconds)}，約 {finish} 完成（本機實測：{how}）"
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)
        self._write({"event": "estimate", "text": text}, force=True)

    def _write(self, record: dict[str, Any], *, force: bool) -> None:
        """Append one JSON line for the runner's terminal (at most one a second, except the lines that matter)."""
        if self.file is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_write < 1.0:
            return
        self._last_write = now
        rate = self._measured / (now - self._first_done) if self._measured else None
        line = {
            "desc": self.desc,
            "step": self.step_count,
            "total": self.total,
            "elapsed": round(now - self.started, 2),
            "eta": round((self.total - self.step_count) / rate, 1) if rate else None,
            **record,
        }
        with open(self.file, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def track(enabled: bool = True, **kwargs) -> Progress | None:
    """A :class:`Progress`, or None when the caller asked for silence (``progress=False``: tests, the grader)."""
    return Progress(**kwargs) if enabled else None


def progress_line(record: dict[str, Any]) -> str:
    """One JSON line of a :class:`Progress` file as a line of text for a log.

    >>> progress_line({"desc": "SFT", "step": 300, "total": 1500, "elapsed": 151.0, "eta": 604.0,
    ...                "metrics": {"loss": "3.21", "eval_loss": "3.4"}})
    '[SFT] 300/1,500 (20%) · loss 3.21 · eval_loss 3.4 · 已用 2 分 31 秒 · 剩約 10 分 4 秒'
    """
    total = max(record["total"], 1)
    parts = [f"[{record['desc']}] {record['step']:,}/{record['total']:,} ({record['step'] / total:.0%})"]
    parts += [f"{k} {v}" for k, v in record.get("metrics", {}).items()]
    parts.append(f"已用 {duration(record['elapsed'])}")
    if record.get("eta") is not None and record["step"] < record["total"]:
        parts.append(f"剩約 {duration(record['eta'])}")
    return " · ".join(parts)


class _Follower(threading.Thread):
    """Tails a progress file and shows it on a terminal: a tqdm bar on a TTY, a line every ``every`` s in a log."""

    def __init__(self, path: Path, stream, every: float = 30.0):
        super().__init__(daemon=True)
        self.path, self.stream, self.every = path, stream, every
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.stopped = threading.Event()
        self.offset, self.buffer = 0, ""
        self.bar, self.desc, self.last_line, self.last_shown = None, None, 0.0, None

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.poll()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.poll()  # what was written after the last look
        if self.bar is not None:
            self.bar.close()

    def poll(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self.buffer + chunk).split("\n")
        self.buffer = lines.pop()  # a line still being written
        for line in lines:
            if line.strip():
                with contextlib.suppress(json.JSONDecodeError):
                    self.show(json.loads(line))

    def show(self, record: dict[str, Any]) -> None:
        if record["desc"] != self.desc or record["event"] == "start":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            self.desc = record["desc"]
        if record["event"] == "estimate":
            self._print(record["text"])
            return
        if self.tty:
            self._bar(record)
            return
        held_out = any(k.startswith("eval") for k in record.get("metrics", {}))
        now = time.monotonic()
        due = held_out or now - self.last_line >= self.every or record["step"] == record["total"]
        if record["event"] == "done":
            due = record["step"] != self.last_shown  # the last step, if not shown yet
        if due:
            self.last_line, self.last_shown = now, record["step"]
            self._print(progress_line(record))

    def _bar(self, record: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=record["total"], initial=record["step"], desc=f"  {record['desc']}", file=self.stream)
        self.bar.n = record["step"]
        self.bar.set_postfix(record.get("metrics", {}), refresh=False)
        self.bar.refresh()
        if record["event"] == "done":
            self.bar.close()
            self.bar = None

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(f"  {text}", file=self.stream, flush=True)


@contextlib.contextmanager
def follow_progress(path: str | Path, stream=None):
    """While the body runs, show on ``stream`` (stderr) what loops in other processes write to ``path``.

    The file starts empty and is removed afterwards; set :data:`PROGRESS_FILE_ENV` to ``path`` for the
    processes (``python -m dpo_lab run`` does, for the notebook kernels it starts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    follower = _Follower(path, stream if stream is not None else sys.stderr)
    follower.start()
    try:
        yield follower
    finally:
        follower.stop()
        path.unlink(missing_ok=True)
