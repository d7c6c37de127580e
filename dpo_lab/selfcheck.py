"""Quick checks a student runs right after writing an exercise: ✅ or ❌ with a hint, in about a second.

The checks are the autograder's own (:mod:`dpo_lab.rubric`), with the same fixed inputs, so a notebook
whose self-checks all pass gets full marks. :func:`pick` then chooses what later cells use: the
student's version when it passes, otherwise the package's reference — said loudly, so an unfinished
notebook still runs end to end.
"""

from __future__ import annotations

from typing import Any

from . import rubric


def check(name: str, obj: Any, verbose: bool = True) -> bool:
    """Run exercise `name`'s rubric on `obj`; print one line per check; True when every check passes."""
    results = rubric.grade_object(name, obj)
    ok = all(r.passed for r in results)
    if verbose:
        points, total = sum(r.points for r in results), sum(r.max_points for r in results)
        print(f"{name}: {sum(r.passed for r in results)}/{len(results)} checks passed ({points}/{total} points)")
        for r in results:
            print(f"  {'✅' if r.passed else '❌'} {r.name}" + ("" if r.passed else f": {r.message}"))
    return ok


def check_extract_prompt(fn, verbose: bool = True) -> bool:
    return check("extract_prompt", fn, verbose)


def check_collator(cls, verbose: bool = True) -> bool:
    return check("PreferenceDataCollator", cls, verbose)


def check_sequence_logprobs(fn, verbose: bool = True) -> bool:
    return check("sequence_logprobs", fn, verbose)


def check_dpo_loss(fn, verbose: bool = True) -> bool:
    return check("dpo_loss", fn, verbose)


def check_dpo_step(fn, verbose: bool = True) -> bool:
    return check("dpo_step", fn, verbose)


def check_win_rate(fn, verbose: bool = True) -> bool:
    return check("win_rate", fn, verbose)


# ----------------------------------------------------------------------------------------------- the switch


def pick(name: str, student: Any, reference: Any, passed: bool) -> Any:
    """What later cells use: the student's implementation if it passed its checks, else the package's reference."""
    if passed:
        print(f"➡️  later cells use YOUR {name}")
        return student
    print(f"⚠️  {name}: your version is unfinished or failed a check — later cells use the reference dpo_lab.{name}."
          " Fix it and re-run the check cell to switch back.")
    return reference
