"""How a check runs a student's object: on inputs it is GIVEN, returning plain data only.

Shared by the notebooks' self-checks (in the student's kernel) and the grading worker (inside the sandbox).
It imports torch and the grading fixture's tokenizer and models, and nothing that computes an exercise's
answer: the worker imports this module in a copy of the package where those answers are withheld, and every
input (tokenized pairs, collated batches, tensors) is drawn and built by the grader outside the sandbox.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from . import grading_fixture as fx

_MAX_DEPTH = 8


def plain(value: Any, _depth: int = 0) -> Any:
    """`value` as data only (detached CPU tensors, numbers, strings, lists, tuples, dicts): what a check may
    look at, and all that crosses from the grading worker to the grader (``torch.load(weights_only=True)``)."""
    if _depth > _MAX_DEPTH:
        raise TypeError("returned a structure nested too deeply")
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else repr(k): plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, _depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if hasattr(value, "__array__"):  # numpy arrays
        return torch.as_tensor(value.__array__())
    raise TypeError(f"returned a {type(value).__name__}, which is not a tensor, number, string, list, tuple or dict")


class Subject:
    """How a check runs the student's object. Every method returns plain data (see :func:`plain`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The function's result."""
        raise NotImplementedError

    def with_grad(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call with ``args[0]`` requiring grad; back-propagate the sum of the (first) output.
        ``{"output", "requires_grad": [per output: its flag, None if not a tensor],
        "grad": d sum / d args[0] or None}``."""
        raise NotImplementedError

    def collate(self, examples: list[dict[str, Any]], max_length: int | None = None) -> Any:
        """The class built on the fixture tokenizer, called on `examples` (tokenized pairs): the batch."""
        raise NotImplementedError

    def steps(
        self,
        batch: dict[str, torch.Tensor],
        steps: int = 1,
        max_grad_norm: float = 1.0,
        trainable_reference: bool = False,
        beta: float = 0.1,
    ) -> dict[str, Any]:
        """`steps` calls of the step function on `batch` with fresh fixture models: ``{"metrics", "policy",
        "reference", "reference_grads"}`` (parameters by name; names of reference parameters that received a
        gradient)."""
        raise NotImplementedError


class LocalSubject(Subject):
    """Runs the object in this process (the notebooks' self-checks, and the grading worker on the grader's behalf)."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __call__(self, *args, **kwargs):
        return plain(self.obj(*args, **kwargs))

    def with_grad(self, *args, **kwargs):
        x = args[0].clone().requires_grad_(True)
        out = self.obj(x, *args[1:], **kwargs)
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        flags = [bool(t.requires_grad) if isinstance(t, torch.Tensor) else None for t in items]
        if flags and flags[0]:
            items[0].sum().backward()
        return {
            "output": plain(out),
            "requires_grad": flags,
            "grad": None if x.grad is None else x.grad.detach().clone(),
        }

    def collate(self, examples, max_length=None):
        return plain(self.obj(fx.fixture_tokenizer(), max_length=max_length)(copy.deepcopy(examples)))

    def steps(self, batch, steps=1, max_grad_norm=1.0, trainable_reference=False, beta=0.1):
        metrics, policy, reference = run_steps(
            self.obj,
            batch,
            steps=steps,
            max_grad_norm=max_grad_norm,
            trainable_reference=trainable_reference,
            beta=beta,
        )
        return {
            "metrics": plain(metrics) if isinstance(metrics, Mapping) else f"<{type(metrics).__name__}>",
            "policy": {n: p.detach().clone() for n, p in policy.named_parameters()},
            "reference": {n: p.detach().clone() for n, p in reference.named_parameters()},
            "reference_grads": [n for n, p in reference.named_parameters() if p.grad is not None],
        }


def run_steps(step_fn, batch, *, steps=1, max_grad_norm=1.0, trainable_reference=False, beta=0.1):
    """(metrics of the last step, the policy after the steps, the reference) for one step implementation."""
    policy, reference = fx.fixture_models()
    if not trainable_reference:
        for p in reference.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    metrics = None
    for _ in range(steps):
        metrics = step_fn(
            policy, reference, {k: v.clone() for k, v in batch.items()}, optimizer, beta, max_grad_norm=max_grad_norm
        )
    return metrics, policy, reference
