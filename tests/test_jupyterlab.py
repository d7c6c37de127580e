"""The lab in JupyterLab, driven the way a student drives it: a real browser, Run ▸ Run All Cells, buttons clicked.

Every other notebook test goes through papermill; this one starts the pinned ``jupyter lab`` on 127.0.0.1 with a
temporary root, opens each notebook in headless Chromium (the system's package, driven by Playwright), runs all
cells from the menu, waits until every code cell has run and the kernel is idle, and reads the rendered page:
no error output, the self-check lines, a figure as an image, the live tqdm widget of the training loops. In 04 it
clicks the blind A/B buttons and checks the labels on disk and in the re-run count cell. The ``smoke`` profile is
chosen from outside the notebooks, as an instructor's dry run would: ``DPO_LAB_PROFILE=smoke jupyter lab``.

A screenshot of each notebook's end state is saved in the test's temporary folder (its path is printed; set
``DPO_LAB_SCREENSHOTS=<folder>`` to keep copies). Without Chromium the tests are skipped with the install command
(``.ci/run`` installs it and sets ``DPO_LAB_REQUIRE_BROWSER=1``, which turns that skip into a failure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dpo_lab.course.notebooks import NOTEBOOKS, repo_root
from dpo_lab.evaluation.human_ab import CHOICES
from dpo_lab.run.config import PROFILE_ENV
from dpo_lab.run.layout import HUMAN_AB_DIR

INSTALL = (
    "apt-get install -y chromium fonts-noto-cjk fonts-noto-color-emoji && pip install -r requirements-dev.txt"
    " (or set DPO_LAB_CHROMIUM to a Chromium/Chrome binary)"
)
TOKEN = "dpo-lab-test"
EXERCISE_CHECKS = {"01": 2, "02": 1, "03": 2, "04": 1}  # self-check cells per notebook (tests/test_notebooks.py)
TRAINING_BARS = {"02": "SFT", "03": "DPO beta="}  # notebooks whose loops must show a live tqdm widget
CELL_TIMEOUT_S = 300  # one notebook on the smoke profile takes 15-40 s here


def _chromium() -> str | None:
    candidates = [os.environ.get("DPO_LAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """Every cell kept in the page (no windowing: the test reads all outputs), no dialogs or pop-ups."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
            "autoStartDefaultKernel": True,  # the notebook's own kernel, without the "Select Kernel" dialog
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a temporary root holding the four masters and student/; yields (url, root, shots)."""
    chromium = _chromium()
    missing = None if chromium else "no Chromium on this machine"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "Playwright is not installed"
    if missing:  # .ci/run sets DPO_LAB_REQUIRE_BROWSER=1 where it installed Chromium: there, skipping is a failure
        (pytest.fail if os.environ.get("DPO_LAB_REQUIRE_BROWSER") == "1" else pytest.skip)(f"{missing}: {INSTALL}")
    base = tmp_path_factory.mktemp("jupyterlab")
    root, shots = base / "root", base / "screenshots"
    (root / "student").mkdir(parents=True)
    shots.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(repo_root() / name, root / name)
        shutil.copy(repo_root() / "student" / name, root / "student" / name)
    _write_settings(base / "settings")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DPO_LAB_PROGRESS", "DPO_LAB_PROGRESS_FILE")}
    env[PROFILE_ENV] = "smoke"  # the notebooks stay at profile = "auto"
    port = _free_port()
    log = open(base / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={base / 'settings'}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start: {(base / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield {"url": url, "root": root, "shots": shots, "browser": browser}
        finally:
            browser.close()
            server.terminate()
            server.wait(timeout=30)
            log.close()
            print(f"\nJupyterLab screenshots: {shots}")
            keep = os.environ.get("DPO_LAB_SCREENSHOTS")
            if keep:
                shutil.copytree(shots, keep, dirs_exist_ok=True)


# ---------------------------------------------------------------------- what the page shows
PAGE_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return {prompts: [], idle: false, errors: [], outputs: [], images: 0, bars: 0, bar_labels: []};
  const text = (sel) => [...panel.querySelectorAll(sel)].map(e => e.innerText);
  return {
    prompts: [...panel.querySelectorAll('.jp-CodeCell')].map(
      c => (c.querySelector('.jp-InputArea-prompt') || {}).innerText || ''),
    idle: !!panel.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]'),
    errors: text('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
    outputs: text('.jp-OutputArea-output'),
    images: panel.querySelectorAll('.jp-OutputArea-output img').length,
    bars: panel.querySelectorAll('.jp-OutputArea-output .widget-hprogress').length,
    bar_labels: text('.jp-OutputArea-output .widget-hbox'),
  };
}"""


def _executed(prompt: str) -> bool:
    return re.fullmatch(r"\[\d+\]:", prompt.strip()) is not None


def _wait_until_done(page, timeout_s: float) -> dict:
    """Until every code cell shows an execution count and the kernel is idle, or an error stops the run."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(PAGE_STATE)
        busy = any(p.strip() == "[*]:" for p in state["prompts"])
        if state["idle"] and not busy and (state["errors"] or all(_executed(p) for p in state["prompts"])):
            return state
        if time.monotonic() > deadline:
            return state
        page.wait_for_timeout(1000)


def _open(lab, page, path: str) -> None:
    """A workspace of its own for each notebook (``?reset``): no tab of an earlier notebook is restored."""
    workspace = re.sub(r"\W", "-", path)
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{path}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function(
        """() => document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
            && /\\| Idle/.test(document.querySelector('#jp-main-statusbar').innerText)
            && !document.querySelector('.jp-Dialog')""",
        timeout=60_000,
    )


def _menu(page, menu: str, item: str) -> None:
    page.click(f'.lm-MenuBar-itemLabel:text-is("{menu}")')
    page.click(f'.lm-Menu-itemLabel:text-is("{item}")')


def run_in_jupyterlab(lab, path: str) -> tuple[dict, object]:
    """Open ``path`` (relative to the server's root), Run ▸ Run All Cells, wait; return the page state and page."""
    page = lab["browser"].new_page(viewport={"width": 1400, "height": 900})
    _open(lab, page, path)
    _menu(page, "Run", "Run All Cells")
    return _wait_until_done(page, CELL_TIMEOUT_S), page


def _problems(name: str, state: dict) -> list[str]:
    """What a student would see go wrong in this notebook's rendered page."""
    number = name[:2]
    found = [f"error output: {e[:1500]}" for e in state["errors"]]
    not_run = [i for i, p in enumerate(state["prompts"]) if not _executed(p)]
    if not_run:
        first = not_run[0]
        found.append(f"{len(not_run)} code cells did not run (first: code cell {first}, {state['prompts'][first]!r})")
    checks = [o for o in state["outputs"] if "項檢查通過" in o]
    if len(checks) < EXERCISE_CHECKS[number]:
        found.append(f"{len(checks)} self-check outputs rendered, expected {EXERCISE_CHECKS[number]}")
    if state["images"] < 1:
        found.append("no figure rendered as an image")
    if number in TRAINING_BARS:
        label = TRAINING_BARS[number]
        bars = [b.replace("\u2007", " ") for b in state["bar_labels"]]  # tqdm's widget pads with figure spaces
        if state["bars"] < 1 or not any(label in b and "4/4" in b for b in bars):
            found.append(f"no finished tqdm widget '{label}… 4/4' (bars {state['bars']}: {state['bar_labels'][:3]})")
    return found


def _shut_down_kernels(lab) -> None:
    """Free the memory of the notebooks already run (the REST API: the menu item asks for confirmation)."""
    api = f"{lab['url']}/api/kernels"
    headers = {"Authorization": f"token {TOKEN}"}
    for kernel in json.loads(urllib.request.urlopen(urllib.request.Request(api, headers=headers)).read()):
        request = urllib.request.Request(f"{api}/{kernel['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(request).close()


def _screenshot(lab, page, label: str) -> Path:
    path = lab["shots"] / f"{label}.png"
    page.screenshot(path=str(path))
    return path


def _click_ab_buttons(lab, page, run_dir: Path, clicks: list[str], label: str) -> list[str]:
    """Click the blind A/B buttons; return problems with the saved labels and the re-run count cell."""
    folder = run_dir / HUMAN_AB_DIR
    for n, choice in enumerate(clicks, start=1):
        page.get_by_role("button", name=CHOICES[choice]).click()
        page.wait_for_function(  # the panel's counter moves once the kernel has saved the click
            "([text]) => document.body.innerText.includes(text)", arg=[f"已標註 {n} /"], timeout=30_000
        )
    page.locator(".jp-OutputArea-output", has=page.get_by_role("button", name=CHOICES["tie"])).screenshot(
        path=str(lab["shots"] / f"{label}-04-ab-buttons.png")
    )
    files = sorted(folder.glob("*.json"))
    if len(files) != 1:
        return [f"{len(files)} label files in {folder}, expected 1"]
    saved = [row["choice"] for row in json.loads(files[0].read_text(encoding="utf-8"))["labels"]]
    problems = [] if saved == clicks else [f"saved labels {saved}, clicked {clicks}"]
    count_cell = page.locator(".jp-CodeCell", has_text="ev.add_human_labels")
    before = count_cell.locator(".jp-InputArea-prompt").inner_text()
    count_cell.locator(".jp-InputArea-prompt").click()  # select the cell (command mode), as a student would
    _menu(page, "Run", "Run Selected Cell")
    page.wait_for_function(  # a new execution count: the cell ran again (not the output of Run All)
        "([cell, before]) => { const p = cell.querySelector('.jp-InputArea-prompt').innerText.trim();"
        " return /^\\[\\d+\\]:$/.test(p) && p !== before.trim(); }",
        arg=[count_cell.element_handle(), before],
        timeout=60_000,
    )
    page.wait_for_timeout(500)
    shown = count_cell.locator(".jp-OutputArea").inner_text()
    if f"{len(clicks)} of " not in shown:
        problems.append(f"the re-run count cell does not show {len(clicks)} labels: {shown[:400]!r}")
    return problems


def _run_folder(lab, folder: str, label: str) -> dict[str, dict]:
    """Run the four notebooks of ``folder`` in order; fail with every problem seen; return each page's state."""
    problems, seconds, states = [], {}, {}
    for name in NOTEBOOKS:
        t0 = time.monotonic()
        state, page = run_in_jupyterlab(lab, f"{folder}{name}")
        seconds[name] = round(time.monotonic() - t0, 1)
        states[name] = state
        found = [f"{label} {name}: {p}" for p in _problems(name, state)]
        if name[:2] in TRAINING_BARS and not found:
            bar = page.locator(".jp-OutputArea-output", has=page.locator(".widget-hprogress")).first
            bar.screenshot(path=str(lab["shots"] / f"{label}-{name[:2]}-progress.png"))
        if name.startswith("04") and not found:
            run_dir = lab["root"] / folder / "runs" / "default"
            found += [
                f"{label} {name}: {p}" for p in _click_ab_buttons(lab, page, run_dir, ["left", "tie", "right"], label)
            ]
        page.keyboard.press("Control+End")
        _screenshot(lab, page, f"{label}-{name[:2]}")
        page.close()
        _shut_down_kernels(lab)
        problems += found
        if found:
            break  # the next notebooks read this one's output
    print(f"\n{label}: seconds per notebook in JupyterLab {seconds}")
    assert not problems, "\n".join(problems)
    return states


def test_master_notebooks_run_in_jupyterlab(lab):
    _run_folder(lab, "", "master")


def test_student_notebooks_run_in_jupyterlab_on_the_reference_fallback(lab):
    states = _run_folder(lab, "student/", "student")
    for name, state in states.items():  # the untouched exercises fall back to the package's reference, visibly
        fallbacks = [o for o in state["outputs"] if "改用參考實作" in o]
        assert len(fallbacks) >= EXERCISE_CHECKS[name[:2]], f"{name}: {len(fallbacks)} reference-fallback messages"


def test_a_cell_that_raises_is_reported(lab):
    """The check above can fail: a notebook whose second cell raises shows an error and stops there."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('deliberately broken cell')"),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    nbformat.write(nb, lab["root"] / "broken.ipynb")
    state, page = run_in_jupyterlab(lab, "broken.ipynb")
    page.close()
    _shut_down_kernels(lab)
    problems = _problems("01-broken", state)
    assert any("deliberately broken cell" in p for p in problems), problems
    assert any("code cells did not run" in p for p in problems), problems
