"""The course around the lab: the exercises' rubric and reference table, the notebooks' self-checks, the
autograder and its sandboxed worker, the student notebooks, and the notebook runner (``python -m dpo_lab run``)."""
