"""Quick checks a student runs right after writing an exercise: ✅ or ❌ with a hint, in about a second.

The checks are the autograder's own (:mod:`dpo_lab.course.rubric`), with the same fixed inputs, so a notebook
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
        print(f"{name}：{sum(r.passed for r in results)}/{len(results)} 項檢查通過（{points}/{total} 分）")
        for r in results:
            message = "還沒實作（NotImplementedError）" if r.message == rubric.NOT_IMPLEMENTED else r.message
            print(f"  {'✅' if r.passed else '❌'} {r.label or r.name}" + ("" if r.passed else f"：{message}"))
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
        print(f"➡️  後面的儲存格（包括訓練）使用你的 {name}")
        return student
    print(
        f"⚠️  {name}：你的版本還沒完成或有檢查沒通過——後面的儲存格改用參考實作 dpo_lab.{name}。"
        "修好後重新執行這個檢查儲存格，就會換回你的版本。"
    )
    return reference
