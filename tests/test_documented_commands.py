"""Every command README.md and docs/ show runs, so a documented command that breaks fails CI.

The commands are read from the documents themselves (``bash`` blocks and inline code), not copied here: a new
command in the docs is run without anyone editing this file. Each runs in a scratch folder, offline, on the
``smoke`` profile (``--profile cpu|gpu`` becomes ``--profile smoke``; ``auto`` means smoke through
``$DPO_LAB_PROFILE``), its run folder a fresh copy of one finished smoke run (made by the README's own
``python -m dpo_lab run``). It must exit as documented (0; ``doctor`` may say 1 = "problems found", which it
does offline: the Hub is unreachable) with no traceback. Commands that differ only in values (``--beta 0.1`` vs
``0.5``, another run folder name) share one code path, so one of each shape runs.

What cannot run here is listed below with the reason, and is still checked as far as it can be: a ``dpo_lab``
command that needs the Hub or an outside endpoint is parsed by the real argument parser (a renamed flag fails),
a template must name a real command, and every entry of these lists must still match a documented command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = (
    "python -m dpo_lab",
    "python scripts/",
    "papermill ",
    "jupyter lab",
    "vllm ",
    "pip install",
    "python -m pytest",
)

# Not run here, with why. Each must still match a documented command (a stale entry fails).
NOT_RUN = {
    "pip install": "installs packages: CI runs the README's install lines themselves",
    "python -m pytest": "the test suite itself (CI runs it)",
    "jupyter lab": "tests/test_jupyterlab.py runs JupyterLab in a real browser",
    "vllm ": "vLLM is not installed here; the docs say its row is not measured",
}
# Run only through the argument parser: they need what an offline machine without a GPU does not have.
PARSE_ONLY = {
    "meta-llama/": "reads the model's config from the Hugging Face Hub",
    "mistralai/": "downloads a 7B model from the Hugging Face Hub",
    "OpenAssistant/": "downloads a reward model from the Hugging Face Hub",
    "--llm-judge": "needs an OpenAI-compatible endpoint ($DPO_LAB_JUDGE_URL)",
}
RUN_FOLDER_OPTIONS = ("--run-dir", "--from")  # options whose value is an existing run folder
CREATES_RUN = {"pipeline", "data"}  # subcommands that make their run folder from nothing
SHAPE_VALUES = ("--only",)  # options whose value changes what runs (others: only the numbers differ)
EXIT_CODES = {"doctor": (0, 1), "round2": (0, 1)}  # doctor: 1 = problems found (offline: the Hub), one line each
# round2: 1 = every sampled pair tied, nothing to learn (the smoke model's answers all score the same); it must say so
EXIT_SAYS = {("round2", 1): "不訓練第二輪"}


@dataclasses.dataclass(frozen=True)
class Command:
    source: str
    text: str
    env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]

    @property
    def is_dpo_lab(self) -> bool:
        return self.argv[:3] == ("python", "-m", "dpo_lab")

    @property
    def subcommand(self) -> str | None:
        return self.argv[3] if self.is_dpo_lab and len(self.argv) > 3 else None


def _snippets(text: str) -> list[str]:
    """Lines of the ``bash`` blocks (continuations joined) and inline code spans (up to one line break)."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S):
        out += re.sub(r"\\\n\s*", " ", block).splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [span.replace("\n", " ") for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", prose)]
    return out


def documented_commands() -> list[Command]:
    found = []
    for path in DOCUMENTS:
        for snippet in _snippets(path.read_text(encoding="utf-8")):
            snippet = re.sub(r"(^|\s)#.*$", "", snippet).strip()
            for part in snippet.split("&&"):
                if not re.sub(r"^(\s*[A-Z_][A-Z0-9_]*=\S*)*\s*", "", part).startswith(PROGRAMS):
                    continue  # prose in backticks, a file name, a Python expression …
                env = []
                words = shlex.split(part.strip())  # a command with an unclosed quote fails here
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    env.append(tuple(words.pop(0).split("=", 1)))
                text = " ".join(words)
                if words and text.startswith(PROGRAMS):
                    found.append(Command(path.name, part.strip(), tuple(env), tuple(words)))
    return found


def _subcommands() -> dict:
    from dpo_lab.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and "run" in a.choices]
    return sub.choices


def _is_template(command: Command) -> bool:
    return any(re.search(r"<[^>]*>|\.\.\.$|\[|\]", word) for word in command.argv)


def _is_mention(command: Command) -> bool:
    """``python -m dpo_lab`` or ``python -m dpo_lab grade``: the prose naming a command, not running it."""
    if not command.is_dpo_lab or len(command.argv) > 4:
        return False
    if command.subcommand is None:
        return True
    parser = _subcommands().get(command.subcommand)
    return parser is not None and any(a.required for a in parser._actions if a.option_strings or a.nargs != 0)


def _smoke(argv: tuple[str, ...]) -> list[str]:
    argv = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word == "--profile" and argv[i + 1] in ("cpu", "gpu", "auto"):
            argv[i + 1] = "smoke"
    return argv


def _shape(command: Command) -> tuple:
    """What decides the code path: the program, the subcommand, the option names (``-p``/``--set``/``--param``
    keys included) and the values of :data:`SHAPE_VALUES`; not the numbers or the folder names."""
    argv = list(command.argv)
    shape = argv[:4] if command.is_dpo_lab else argv[:2]
    for i, word in enumerate(argv):
        previous = argv[i - 1] if i else ""
        if word.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", word):
            if word not in ("--profile", "--run-dir", "--quiet"):
                shape.append(word)
        elif previous in ("-p", "--param", "--set"):
            shape.append(word.split("=")[0])
        if word in SHAPE_VALUES:
            values = argv[i + 1 :]
            shape += values[: next((j for j, w in enumerate(values) if w.startswith("-")), len(values))]
    return tuple(shape)


def _classify() -> tuple[list, list, list, list]:
    """``(run, parse_only, templates_and_mentions, not_run)``; ``run`` holds one command per shape."""
    run, parse_only, named, not_run, shapes = [], [], [], [], set()
    for command in documented_commands():
        text = " ".join(command.argv)
        if any(text.startswith(p) for p in NOT_RUN):
            not_run.append(command)
        elif any(key in text for key in PARSE_ONLY):
            parse_only.append(command)
        elif _is_template(command) or _is_mention(command):
            named.append(command)
        elif _shape(command) not in shapes:
            shapes.add(_shape(command))
            run.append(command)
    return run, parse_only, named, not_run


def _run_folders(argv: list[str]) -> list[str]:
    """The run folders a command reads (``--run-dir D``, ``--from D``, papermill's ``-p run_dir D``)."""
    out = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w in RUN_FOLDER_OPTIONS]
    out += [argv[i + 2] for i, w in enumerate(argv[:-2]) if w == "-p" and argv[i + 1] == "run_dir"]
    if argv[:4] == ["python", "-m", "dpo_lab", "run"] and "--run-dir" not in argv:
        out.append("runs/default")  # the command's default
    return out


def _creates_run(argv: list[str]) -> bool:
    if argv[:3] != ["python", "-m", "dpo_lab"] or len(argv) < 4:
        return False
    if argv[3] in CREATES_RUN:
        return True
    if argv[3] == "run":
        only = argv[argv.index("--only") + 1 :] if "--only" in argv else ["01"]
        return bool(only) and only[0] == "01"
    return False


def _env(workspace: Path) -> dict:
    env = {
        **os.environ,
        "DPO_LAB_PROFILE": "smoke",
        "DPO_LAB_CACHE": str(workspace / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
    }
    return env


def _prepare(workspace: Path, base: Path, argv: list[str]) -> None:
    """Give the command what the docs assume exists: its run folder (a copy of the base run unless the command
    makes it), the notebooks (papermill names one), a class of submissions (``grade``), a copy of student/."""
    for name in _run_folders(argv):
        folder = workspace / name
        if not folder.exists() and not _creates_run(argv):
            shutil.copytree(base, folder, symlinks=True)
    for notebook in ROOT.glob("0*.ipynb"):
        if not (workspace / notebook.name).exists():
            shutil.copy(notebook, workspace / notebook.name)
    for folder in (workspace / "submissions" / "alice", workspace / "alice", workspace / "student"):
        if not folder.exists():
            shutil.copytree(ROOT / "student", folder)


def _python(argv: list[str]) -> list[str]:
    if argv[0] == "python" and argv[1].startswith("scripts/"):
        return [sys.executable, str(ROOT / argv[1]), *argv[2:]]  # the docs run them from the checkout
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "papermill":
        return [sys.executable, "-m", "papermill", *argv[1:]]
    return argv


def _run(number: int, command: Command, workspace: Path, base: Path, timeout: float = 900) -> str:
    """Run one documented command in its own scratch folder; return a failure message or ''."""
    argv = _smoke(command.argv)
    if argv[:2] == ["python", "scripts/seed_study.py"] and "--profile" not in argv:
        argv += ["--profile", "smoke"]  # its default is the cpu profile (15 minutes a seed)
    if command.subcommand == "student-notebooks" and "--out" not in argv:
        argv += ["--out", "student"]  # its default is student/ in this checkout: write (or check) a copy here
    folder = workspace / (f"{number:02d}_" + re.sub(r"\W+", "_", " ".join(argv[1:]))[:60])
    folder.mkdir()
    _prepare(folder, base, argv)
    # two commands run at once: one thread each (two torch processes with two threads each on two cores spin on
    # each other and run ~8x slower than one after the other)
    env = {**_env(workspace), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **dict(command.env)}
    if command.subcommand == "serve":
        return _serve(command, argv, folder, env)
    started = time.perf_counter()
    done = subprocess.run(
        _python(argv), cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    allowed = EXIT_CODES.get(command.subcommand, (0,))
    says = EXIT_SAYS.get((command.subcommand, done.returncode), "")
    if done.returncode not in allowed or says not in done.stdout or "Traceback (most recent call last)" in done.stderr:
        return (
            f"{command.source}: `{command.text}` exited {done.returncode} after {time.perf_counter() - started:.0f} s"
            f"\n--- stdout (end)\n{done.stdout[-1500:]}\n--- stderr (end)\n{done.stderr[-3000:]}"
        )
    return ""


def _run_reporting(number: int, command: Command, workspace: Path, base: Path) -> str:
    """:func:`_run`, with an error of the test's own machinery reported like a failed command (the others go on)."""
    try:
        return _run(number, command, workspace, base)
    except Exception as e:  # noqa: BLE001 - reported with the command that caused it
        return f"{command.source}: `{command.text}`: {type(e).__name__}: {e}"


def _serve(command: Command, argv: list[str], folder: Path, env: dict) -> str:
    """Start the documented ``serve`` on a free loopback port, list its models and chat once, stop it."""
    from dpo_lab.evaluation.chat_client import ChatClient
    from dpo_lab.evaluation.serving import free_port

    port = free_port()
    log = folder / "serve.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [*_python(argv), "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(base + "/models", timeout=5) as response:
                    models = json.loads(response.read())
                break
            except OSError as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    return f"{command.source}: `{command.text}` never answered /v1/models ({e}):\n{log.read_text()}"
                time.sleep(1)
        (model,) = [m["id"] for m in models["data"]]
        answer = ChatClient(base, model, timeout=120).chat([{"role": "user", "content": "What a lock?"}], max_tokens=8)
        if not isinstance(answer, str):
            return f"{command.source}: `{command.text}`: no answer from {model}"
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl+C, as the command says
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text(encoding="utf-8", errors="replace")
    return f"{command.source}: `{command.text}` logged a traceback:\n{text[-3000:]}" if "Traceback" in text else ""


# ------------------------------------------------------------------------------------------------- tests
def test_the_documents_show_commands_and_every_exception_still_matches_one():
    run, parse_only, named, not_run = _classify()
    texts = [" ".join(c.argv) for c in run + parse_only + named + not_run]
    assert len(run) >= 20, [c.text for c in run]  # README + docs show dozens; a broken extractor finds few
    stale = [key for key in (*NOT_RUN, *PARSE_ONLY) if not any(key in t for t in texts)]
    assert stale == [], "entries that match no documented command any more"
    assert any(c.argv[:4] == ("python", "-m", "dpo_lab", "pipeline") for c in run)


def test_commands_that_cannot_run_offline_still_parse_and_templates_name_real_commands():
    from dpo_lab.cli import build_parser

    _, parse_only, named, _ = _classify()
    subcommands = _subcommands()
    for command in parse_only:
        if command.is_dpo_lab:
            try:
                build_parser().parse_args(list(command.argv[3:]))
            except SystemExit:
                pytest.fail(f"{command.source}: `{command.text}` does not parse")
    for command in named:
        if command.is_dpo_lab:
            assert command.subcommand is None or command.subcommand in subcommands, command
        elif command.argv[0] == "python":
            assert (ROOT / command.argv[1]).is_file(), command


def test_the_extractor_and_the_shapes():
    """The test's own parsing, on a made-up document (so a change that finds nothing fails here first)."""
    text = (
        "```bash\nFOO=1 python -m dpo_lab run --only 03 04 --beta 0.1   # comment\n"
        "python -m dpo_lab dpo --run-dir R \\\n  --beta 0.5 && python -m dpo_lab evaluate --run-dir R\n```\n"
        "Prose `python -m dpo_lab grade` and `python scripts/x.py --out <名字>` and `not a command`.\n"
    )
    snippets = _snippets(text)
    joined = [" ".join(snippet.split()) for snippet in snippets]
    assert "python -m dpo_lab dpo --run-dir R --beta 0.5 && python -m dpo_lab evaluate --run-dir R" in joined

    def command(line: str) -> Command:
        return Command("x", line, (), tuple(line.split()))

    one = command("python -m dpo_lab run --only 03 04 --beta 0.1")
    other = command("python -m dpo_lab run --run-dir D --only 03 04 --beta 1")
    third = command("python -m dpo_lab run --only 01 02 03 --beta 0.1")
    assert _shape(one) == _shape(other) != _shape(third)
    assert _is_mention(Command("x", "", (), ("python", "-m", "dpo_lab", "grade")))
    assert not _is_mention(Command("x", "", (), ("python", "-m", "dpo_lab", "doctor")))
    assert _is_template(Command("x", "", (), ("python", "scripts/x.py", "--out", "<名字>")))
    assert _smoke(("python", "-m", "dpo_lab", "run", "--profile", "cpu")) == [
        "python", "-m", "dpo_lab", "run", "--profile", "smoke"
    ]  # fmt: skip


def test_every_documented_command_runs(tmp_path):
    run, _, _, _ = _classify()
    first = next(c for c in run if c.argv == ("python", "-m", "dpo_lab", "run"))
    workspace = tmp_path
    # the base run every other command starts from: the README's own first command, then a second beta
    base_home = workspace / "base"
    base_home.mkdir()
    env = _env(workspace)
    for argv in (["python", "-m", "dpo_lab", "run", "--quiet"], ["python", "-m", "dpo_lab", "dpo", "--run-dir",
                 "runs/default", "--beta", "0.5", "--quiet"]):  # fmt: skip
        done = subprocess.run(_python(argv), cwd=base_home, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (first.source, argv, done.stderr[-3000:])
    base = base_home / "runs" / "default"
    others = [c for c in run if c is not first]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(lambda n_c: _run_reporting(*n_c, workspace, base), enumerate(others)) if f]
    assert failures == [], "\n\n".join(failures)
