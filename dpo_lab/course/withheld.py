"""What a withheld package function raises inside the grading sandbox (see :mod:`dpo_lab.course.withhold`).

A ``BaseException``, so a student's ``except Exception`` does not turn it into a quiet wrong answer; the
worker reports the first one of an exercise as "calls the package's own …".
"""

from __future__ import annotations

CALLED: list[str] = []  # qualified names of withheld functions called since the worker last looked


class Withheld(BaseException):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name
        CALLED.append(name)
