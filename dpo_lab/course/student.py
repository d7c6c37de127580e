"""Student notebooks, generated from the masters by one command: solutions out, instructor answers out, outputs cleared.

    python -m dpo_lab student-notebooks              # writes student/0N-*.ipynb
    python -m dpo_lab student-notebooks --check      # exit 1 if student/ is stale (CI runs the same check as a test)

In every cell tagged ``exercise`` the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
become ``raise NotImplementedError("練習 N: …")`` at the same indentation; cells tagged ``instructor``
are removed. The self-check after each exercise then says "not implemented yet" and the later cells
use the package's reference, so an untouched student notebook still runs end to end.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from .notebooks import NOTEBOOKS, repo_root

STUDENT_DIR = "student"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_DEFINES = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)


def exercise_name(source: str) -> str:
    """The function or class an exercise cell asks for: the definition that holds the solution block."""
    before = source[: source.index(BEGIN)]
    names = _DEFINES.findall(before)
    if not names:
        raise ValueError(f"exercise cell without a def/class before {BEGIN!r}: {source[:80]!r}")
    return names[-1]


def strip_solution(source: str, number: int) -> str:
    """Replace each solution block with a NotImplementedError naming the exercise (same indentation)."""
    lines, out, inside = source.split("\n"), [], False
    name = exercise_name(source)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{name}: nested {BEGIN!r} at line {i + 1}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(
                f'{indent}raise NotImplementedError("練習 {number}: implement {name} (see the instructions above)")'
            )
        elif stripped == END:
            if not inside:
                raise ValueError(f"{name}: {END!r} without {BEGIN!r} at line {i + 1}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: {BEGIN!r} is never closed")
    return "\n".join(out)


def student_version(master, first_number: int = 1):
    """A student copy of one master notebook (nbformat node) and the number of its next exercise."""
    nb = copy.deepcopy(master)
    cells, number = [], first_number
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "instructor" in tags:
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if "exercise" in tags:
                cell.source = strip_solution(cell.source, number)
                number += 1
        cells.append(cell)
    nb.cells = cells
    return nb, number


def _generated(root: Path) -> list[tuple[str, str]]:
    """``(name, notebook text)`` of each student notebook; exercises are numbered across the four notebooks."""
    import nbformat

    out, number = [], 1
    for name in NOTEBOOKS:
        student, number = student_version(nbformat.read(root / name, as_version=4), number)
        out.append((name, nbformat.writes(student) + "\n"))
    return out


def write_student_notebooks(out_dir: str | Path | None = None, *, root: str | Path | None = None) -> list[Path]:
    """Generate ``student/`` from the masters (atomic writes)."""
    from ..infra.atomic import atomic_write_text

    root = Path(root) if root is not None else repo_root()
    out_dir = Path(out_dir) if out_dir is not None else root / STUDENT_DIR
    return [atomic_write_text(out_dir / name, text) for name, text in _generated(root)]


def stale_student_notebooks(out_dir: str | Path | None = None, *, root: str | Path | None = None) -> list[str]:
    """Names of the student notebooks that differ from what the masters would generate now (or are missing)."""
    root = Path(root) if root is not None else repo_root()
    out_dir = Path(out_dir) if out_dir is not None else root / STUDENT_DIR
    return [
        name
        for name, text in _generated(root)
        if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text
    ]
