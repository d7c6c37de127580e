"""What each exercise is tested on, and for how many points — the ONE set of checks behind both the
notebooks' inline self-checks (:mod:`dpo_lab.course.selfcheck`) and the autograder (:mod:`dpo_lab.course.grader`).

Every check compares the student's function with the package's reference on small fixed inputs (the
shipped tiny tokenizer and model pair of :mod:`dpo_lab.course.grading_fixture`), or tests an invariant
(ln 2 when policy = reference, swapping chosen and rejected flips the margin, unscored tokens do not
count, …). Checks compare VALUES, never code, so any correct style passes: loops or vectorised,
``cross_entropy`` or log-softmax + gather, ``softplus`` or ``-logsigmoid``. Each check carries a
hint naming the classic bug it catches. Two checks are exact values in the spirit of Stanford CS336:
numbers a student can reproduce from the rules written in the exercise text.

A check never touches the student's object directly: it asks a *subject* to run it on given inputs and
gets plain values back (tensors, numbers, strings, containers). :class:`LocalSubject` runs it in this
process (the notebooks' self-checks); the autograder's subject runs it in a guarded worker process and
judges the returned values here, so code in a submission can change what its own function returns but
never the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import torch

from ..core.collator import PreferenceDataCollator
from ..core.losses import dpo_loss, sequence_logprobs
from ..data.sources import extract_prompt
from ..evaluation.winrate import win_rate
from ..fast.scored_logprobs import sequence_logprobs_lean
from ..training.dpo import dpo_step
from . import grading_fixture as fx

# The published exact values (quoted in notebooks 02 and 03; tests recompute them independently).
EXACT_CHOSEN_LOGP = -247.2251  # log π_policy(chosen | prompt), summed over the response tokens incl. EOS
EXACT_LOSS = 0.2560  # DPO loss of the pair at beta = 0.1
EXACT_TOLERANCE = 1e-3  # the values are printed with 4 decimals


NOT_IMPLEMENTED = "not implemented yet"  # the grader's marker for an untouched exercise
HINT_MARK = " — 提示："  # separates what went wrong from the hint (the grader's summary groups failures by it)


@dataclass(frozen=True)
class Check:
    name: str
    points: int
    run: Callable[[Any], None]  # raises AssertionError (or anything) when the student's object fails
    hint: str
    label: str = ""  # what a student reads (zh-TW); ``name`` stays the stable English identifier


@dataclass(frozen=True)
class CheckResult:
    name: str
    points: int
    max_points: int
    message: str = ""  # why it failed ("" when it passed)
    label: str = ""  # the check as the student reads it (zh-TW)

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


def run_check(check: Check, obj: Any) -> CheckResult:
    """One check on one student object: full points or none, never an exception."""
    try:
        check.run(obj)
        return CheckResult(check.name, check.points, check.points, label=check.label)
    except NotImplementedError:
        return CheckResult(check.name, 0, check.points, NOT_IMPLEMENTED, label=check.label)
    except Exception as e:  # a student's code may fail in any way: report it, never crash
        text = str(e).strip().splitlines() or [""]
        detail = f"{type(e).__name__}: {text[0]}" + "".join(
            f"\n      {line}" for line in text[1:10]
        )  # e.g. the masks, row by row
        return CheckResult(check.name, 0, check.points, f"{detail}{HINT_MARK}{check.hint}", label=check.label)


def grade_object(name: str, obj: Any) -> list[CheckResult]:
    """Run every check of exercise `name` on `obj`: the student's function or class, or a subject wrapping it."""
    if obj is None:
        return [CheckResult(c.name, 0, c.points, f"no {name} defined", label=c.label) for c in EXERCISES[name]]
    subject = obj if isinstance(obj, Subject) else LocalSubject(obj)
    return [run_check(c, subject) for c in EXERCISES[name]]


def preload() -> None:
    """Load the fixture files and tokenize the fixed pairs now, before grading threads use them:
    ``from_pretrained`` patches torch functions while it runs, and a fast tokenizer is not shared by threads."""
    fx.fixture_tokenizer()
    fx.fixture_models()
    fx.exact_pair_batch()
    _tokenized_pairs()


def max_points(name: str) -> int:
    return sum(c.points for c in EXERCISES[name])


def _close(a, b, what: str, atol: float = 1e-5) -> None:
    a = torch.as_tensor(a.detach() if isinstance(a, torch.Tensor) else a).to(torch.float64)
    b = torch.as_tensor(b.detach() if isinstance(b, torch.Tensor) else b).to(torch.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=0):
        raise AssertionError(f"{what}: got {_short(a)}, expected {_short(b)}")


def _short(t: torch.Tensor) -> str:
    values = [round(v, 4) for v in t.flatten().tolist()[:6]]
    return str(values if t.dim() else values[0]) + (" …" if t.numel() > 6 else "")


def _raises(exc_type, fn, *args) -> None:
    try:
        fn(*args)
    except exc_type:
        return
    raise AssertionError(f"no {exc_type.__name__} raised")


# ----------------------------------------------------------------------------------------------- subjects

_MAX_DEPTH = 8


def plain(value: Any, _depth: int = 0) -> Any:
    """`value` as data only (detached CPU tensors, numbers, strings, lists, tuples, dicts): what a check may
    look at, and all that crosses from the grading worker to the grader (``torch.load(weights_only=True)``)."""
    import numbers
    from collections.abc import Mapping

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

    def collate(self, max_length: int | None = None) -> Any:
        """The class built on the fixture tokenizer, called on the fixture pairs: the batch."""
        raise NotImplementedError

    def steps(self, steps: int = 1, max_grad_norm: float = 1.0, trainable_reference: bool = False) -> dict[str, Any]:
        """`steps` calls of the step function on fresh fixture models: ``{"metrics", "policy", "reference",
        "reference_grads"}`` (parameters by name; names of reference parameters that received a gradient)."""
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

    def collate(self, max_length=None):
        return plain(self.obj(fx.fixture_tokenizer(), max_length=max_length)(_pair_examples()))

    def steps(self, steps=1, max_grad_norm=1.0, trainable_reference=False):
        from collections.abc import Mapping

        metrics, policy, reference = _run_steps(
            self.obj, steps=steps, max_grad_norm=max_grad_norm, trainable_reference=trainable_reference
        )
        return {
            "metrics": plain(metrics) if isinstance(metrics, Mapping) else f"<{type(metrics).__name__}>",
            "policy": {n: p.detach().clone() for n, p in policy.named_parameters()},
            "reference": {n: p.detach().clone() for n, p in reference.named_parameters()},
            "reference_grads": [n for n, p in reference.named_parameters() if p.grad is not None],
        }


# ----------------------------------------------------------------------------------------------- 01 extract_prompt

_TRANSCRIPTS = [
    (
        "\n\nHuman: What is DPO?\n\nAssistant: A way to align a model with preferences.",
        "\n\nHuman: What is DPO?\n\nAssistant: No idea.",
    ),
    (
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: I think blue.",
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: I think red.",
    ),
]


def _same_split(i: int):
    def run(fn):
        from ..data.sources import extract_prompt

        got, want = tuple(fn(*_TRANSCRIPTS[i])), extract_prompt(*_TRANSCRIPTS[i])
        if got != want:
            raise AssertionError(f"got {got!r}, expected {want!r}")

    return run


EXTRACT_PROMPT = [
    Check(
        "single turn",
        3,
        _same_split(0),
        "the prompt ends with '\\n\\nAssistant:'; the response keeps its leading space",
    ),
    Check(
        "multi-turn, responses that start alike",
        3,
        _same_split(1),
        "split at the LAST '\\n\\nAssistant:' (str.rfind), not at the first one or the first differing character",
    ),
    Check(
        "no Assistant turn → ValueError",
        2,
        lambda fn: _raises(ValueError, fn, "\n\nHuman: Hi", "\n\nHuman: Hi"),
        "raise ValueError when the tag is missing",
    ),
    Check(
        "different prompts → ValueError",
        2,
        lambda fn: _raises(ValueError, fn, _TRANSCRIPTS[0][0], _TRANSCRIPTS[1][1]),
        "raise ValueError when the two prompts differ",
    ),
]

# ----------------------------------------------------------------------------------------------- 01 collator


def _pair_examples():
    import copy

    return copy.deepcopy(_tokenized_pairs())


@lru_cache(maxsize=1)
def _tokenized_pairs():
    """Tokenized once: the grader judges several submissions in threads, and one fast tokenizer must not be
    used by two threads at once."""
    from ..core.tokenization import tokenize_pair
    from ..data.sources import extract_prompt

    tok = fx.fixture_tokenizer()
    # rejected longer than chosen in one pair and shorter in the other, so row order and padding both show
    return [tokenize_pair(tok, *extract_prompt(*pair)) for pair in _TRANSCRIPTS]


def _collate(subject, max_length=None):
    from ..core.collator import PreferenceDataCollator

    got = subject.collate(max_length)
    want = PreferenceDataCollator(fx.fixture_tokenizer(), max_length=max_length)(_pair_examples())
    if all(key in got for key in ("input_ids", "attention_mask", "loss_mask")):
        got = _drop_masked_columns(got, want["input_ids"].shape[1])
    for key in ("input_ids", "attention_mask", "loss_mask"):
        if key not in got:
            raise AssertionError(f"no '{key}' in the batch (keys: {sorted(got)})")
        if tuple(torch.as_tensor(got[key]).shape) != tuple(want[key].shape):
            raise AssertionError(
                f"'{key}' has shape {tuple(torch.as_tensor(got[key]).shape)}, expected {tuple(want[key].shape)}"
            )
    return {k: torch.as_tensor(got[k]).long() for k in ("input_ids", "attention_mask", "loss_mask")}, want


def _drop_masked_columns(got: dict, width: int) -> dict:
    """Accept padding wider than the longest row (e.g. to max_length): extra columns that are fully masked
    change nothing a model computes, so they are dropped before comparing."""
    attention, loss = torch.as_tensor(got["attention_mask"]), torch.as_tensor(got["loss_mask"])
    if (
        attention.dim() == 2
        and attention.shape[1] > width
        and not attention[:, width:].any()
        and not loss[:, width:].any()
    ):
        return {
            k: (torch.as_tensor(v)[:, :width] if k in ("input_ids", "attention_mask", "loss_mask") else v)
            for k, v in got.items()
        }
    return got


def _rows(tensor) -> str:
    return "\n".join(str(r) for r in tensor.tolist())


def _collator_tokens(cls):
    got, want = _collate(cls)
    real = want["attention_mask"].bool()  # the pad value itself may be anything: it is never attended to
    if not torch.equal(got["input_ids"][real], want["input_ids"][real]):
        raise AssertionError(
            f"input_ids differ from the reference:\n{_rows(got['input_ids'])}\nexpected\n{_rows(want['input_ids'])}"
        )
    if not torch.equal(got["attention_mask"], want["attention_mask"]):
        raise AssertionError(
            f"attention_mask differs:\n{_rows(got['attention_mask'])}\nexpected\n{_rows(want['attention_mask'])}"
        )


def _collator_loss_mask(cls):
    got, want = _collate(cls)
    if not torch.equal(got["loss_mask"], want["loss_mask"]):
        raise AssertionError(f"loss_mask differs:\n{_rows(got['loss_mask'])}\nexpected\n{_rows(want['loss_mask'])}")


def _collator_eos(cls):
    got, _ = _collate(cls)
    tok = fx.fixture_tokenizer()
    for row, n in enumerate(got["attention_mask"].sum(dim=1).tolist()):
        if got["input_ids"][row, n - 1] != tok.eos_token_id or got["loss_mask"][row, n - 1] != 1:
            raise AssertionError(f"row {row}: its last real token must be EOS (id {tok.eos_token_id}) with loss_mask 1")


def _collator_truncation(cls):
    got, want = _collate(cls, max_length=12)
    real = want["attention_mask"].bool()
    for key in ("input_ids", "attention_mask", "loss_mask"):
        g, w = (got[key][real], want[key][real]) if key == "input_ids" else (got[key], want[key])
        if not torch.equal(g, w):
            raise AssertionError(
                f"with max_length=12, '{key}' differs:\n{_rows(got[key])}\nexpected\n{_rows(want[key])}"
            )


COLLATOR = [
    Check(
        "rows = [all chosen; all rejected], tokens and attention_mask",
        4,
        _collator_tokens,
        "chosen rows first, then rejected rows; each row = prompt_ids + response ids, right-padded",
    ),
    Check(
        "loss_mask: 1 on response tokens only",
        4,
        _collator_loss_mask,
        "0 on the prompt and on padding, 1 on every response token (EOS included); build it from lengths",
    ),
    Check(
        "EOS is scored even though pad == eos",
        3,
        _collator_eos,
        "never build loss_mask from token values (ids != pad_token_id also removes the real EOS)",
    ),
    Check(
        "max_length keeps the first tokens",
        2,
        _collator_truncation,
        "cut each row (and its masks) to its FIRST max_length tokens",
    ),
]

# ----------------------------------------------------------------------------------------------- 02 sequence_logprobs


def _logits_fixture():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 11, generator=g) * 2
    ids = torch.randint(0, 11, (4, 7), generator=g)
    # prompt zeros, response ones, padding zeros; row 1's response reaches the last column (its EOS)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0]])
    return logits, ids, mask


def _logprobs_sum(fn):
    from ..core.losses import sequence_logprobs

    logits, ids, mask = _logits_fixture()
    _close(fn(logits, ids, mask), sequence_logprobs(logits, ids, mask), "log-probs")


def _logprobs_average(fn):
    from ..core.losses import sequence_logprobs

    logits, ids, mask = _logits_fixture()
    _close(
        fn(logits, ids, mask, average=True),
        sequence_logprobs(logits, ids, mask, average=True),
        "log-probs with average=True",
    )


def _logprobs_unscored(fn):
    logits, ids, mask = _logits_fixture()
    scored = torch.zeros_like(mask)
    scored[:, 1:] = mask[:, 1:]  # the labels that are scored; every other id may change freely
    changed = torch.where(scored.bool(), ids, (ids + 5) % 11)
    changed_logits = logits.clone()
    changed_logits[:, -1] += 7.0  # the last position predicts nothing
    _close(fn(changed_logits, changed, mask), fn(logits, ids, mask), "log-probs after changing prompt/padding ids")


def _logprobs_grad(fn):
    logits, ids, mask = _logits_fixture()
    probe = fn.with_grad(logits, ids, mask)
    if not probe["requires_grad"] or not probe["requires_grad"][0]:
        raise AssertionError("the log-probs carry no gradient (no grad_fn)")
    if probe["grad"] is None or not probe["grad"].abs().sum() > 0:
        raise AssertionError("no gradient reached the logits")


def _logprobs_half(fn):
    from ..core.losses import sequence_logprobs

    logits, ids, mask = _logits_fixture()
    logits = (logits * 4).to(torch.bfloat16)
    got = fn(logits, ids, mask)
    _close(got.float(), sequence_logprobs(logits, ids, mask), "log-probs from bf16 logits", atol=1e-3)


def _logprobs_exact(fn):
    policy, _ = fx.fixture_models()
    batch = fx.exact_pair_batch()
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = float(fn(logits, batch["input_ids"], batch["loss_mask"])[0])
    if not abs(got - EXACT_CHOSEN_LOGP) < EXACT_TOLERANCE:
        raise AssertionError(f"log π(chosen) of the exact-value pair is {got:.4f}, expected {EXACT_CHOSEN_LOGP:.4f}")


SEQUENCE_LOGPROBS = [
    Check(
        "sum over response tokens",
        5,
        _logprobs_sum,
        "shift by one (logits[:, :-1] predict input_ids[:, 1:]), shift the mask WITH the labels, "
        "log-softmax over the vocabulary (dim=-1), SUM (not mean)",
    ),
    Check(
        "average=True gives the mean over response tokens",
        2,
        _logprobs_average,
        "divide the masked sum by the number of scored tokens",
    ),
    Check(
        "prompt and padding tokens do not count",
        2,
        _logprobs_unscored,
        "multiply by the (shifted) loss_mask before summing",
    ),
    Check("gradients flow to the logits", 2, _logprobs_grad, "no .detach(), .item() or torch.no_grad() inside"),
    Check(
        "bf16 logits are scored in fp32",
        2,
        _logprobs_half,
        "cast the logits with .float() before log_softmax: half precision loses the small probabilities",
    ),
    Check(
        f"exact value: log π(chosen) = {EXACT_CHOSEN_LOGP:.4f}",
        2,
        _logprobs_exact,
        "EOS is part of the response and is scored; sum, do not average",
    ),
]

# ----------------------------------------------------------------------------------------------- 03 dpo_loss


def _logp_fixture():
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(5, generator=g) * 10 - 50 for _ in range(4))


def _loss_ln2(fn):
    pc, pr, _, _ = _logp_fixture()
    losses, chosen, rejected = fn(pc, pr, pc.clone(), pr.clone(), 0.1)
    _close(losses, torch.full((5,), math.log(2)), "per-pair losses when policy == reference")
    _close(chosen, torch.zeros(5), "chosen rewards when policy == reference")


def _loss_values(fn):
    from ..core.losses import dpo_loss

    args = _logp_fixture()
    got, want = fn(*args, 0.3), dpo_loss(*args, 0.3)
    _close(got[0], want[0], "per-pair losses", atol=1e-4)


def _loss_rewards(fn):
    from ..core.losses import dpo_loss

    args = _logp_fixture()
    got, want = fn(*args, 0.3), dpo_loss(*args, 0.3)
    _close(got[1], want[1], "chosen rewards", atol=1e-4)
    _close(got[2], want[2], "rejected rewards", atol=1e-4)


def _loss_swap(fn):
    pc, pr, rc, rr = _logp_fixture()
    a, b = fn(pc, pr, rc, rr, 0.3), fn(pr, pc, rr, rc, 0.3)
    _close(a[1] - a[2], -(b[1] - b[2]), "margin after swapping chosen and rejected", atol=1e-4)


def _loss_detached(fn):
    flags = fn.with_grad(*_logp_fixture(), 0.3)["requires_grad"]
    if len(flags) != 3 or None in flags:
        raise AssertionError(
            f"expected three tensors (losses, chosen_rewards, rejected_rewards), got {len(flags)} value(s)"
        )
    losses, chosen, rejected = flags
    if chosen or rejected:
        raise AssertionError("the rewards carry gradients")
    if not losses:
        raise AssertionError("the losses carry no gradient")


def _loss_stable(fn):
    from ..core.losses import dpo_loss

    pc, pr, rc, rr = _logp_fixture()
    got, want = fn(pc, pr + 2000, rc, rr, 0.5), dpo_loss(pc, pr + 2000, rc, rr, 0.5)
    if not torch.isfinite(got[0]).all():
        raise AssertionError(f"losses {_short(got[0])} for a margin of -1000: not finite")
    _close(got[0], want[0], "losses for a very negative margin", atol=1e-3)


def _loss_exact(fn):
    policy, reference = fx.fixture_models()
    batch = fx.exact_pair_batch()
    from ..fast.scored_logprobs import batch_logprobs

    with torch.no_grad():
        pc, pr = batch_logprobs(policy, batch)
        rc, rr = batch_logprobs(reference, batch)
    got = float(fn(pc, pr, rc, rr, fx.EXACT_BETA)[0][0])
    if not abs(got - EXACT_LOSS) < EXACT_TOLERANCE:
        raise AssertionError(f"the exact-value pair's loss is {got:.4f}, expected {EXACT_LOSS:.4f}")


DPO_LOSS = [
    Check(
        "policy == reference → every loss is ln 2",
        3,
        _loss_ln2,
        "loss = -logsigmoid(beta * margin); a margin of 0 gives ln 2 = 0.6931",
    ),
    Check(
        "per-pair losses",
        3,
        _loss_values,
        "margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected); beta multiplies it INSIDE the "
        "sigmoid; return one loss per pair, not the mean",
    ),
    Check(
        "implicit rewards = beta * (policy - reference)",
        3,
        _loss_rewards,
        "chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps); same for rejected",
    ),
    Check(
        "swapping chosen and rejected flips the margin",
        1,
        _loss_swap,
        "chosen_rewards - rejected_rewards must change sign",
    ),
    Check(
        "rewards detached, losses differentiable",
        2,
        _loss_detached,
        "rewards are for logging: .detach() them; the losses must keep their graph",
    ),
    Check(
        "finite for large margins",
        1,
        _loss_stable,
        "use F.logsigmoid (or softplus), not torch.log(torch.sigmoid(x)), which gives inf when sigmoid underflows",
    ),
    Check(f"exact value: loss = {EXACT_LOSS:.4f}", 2, _loss_exact, "beta = 0.1; see the exercise text"),
]

# ----------------------------------------------------------------------------------------------- 03 dpo_step


def _step_batch():
    from ..core.collator import PreferenceDataCollator

    return PreferenceDataCollator(fx.fixture_tokenizer())(_pair_examples())


def _run_steps(step_fn, *, steps: int = 1, max_grad_norm: float = 1.0, trainable_reference: bool = False):
    """(metrics of the last step, the policy after the steps, the reference) for one implementation (run by a
    subject).
    """
    policy, reference = fx.fixture_models()
    if not trainable_reference:
        for p in reference.parameters():
            p.requires_grad_(False)
    batch = _step_batch()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    metrics = None
    for _ in range(steps):
        metrics = step_fn(
            policy, reference, {k: v.clone() for k, v in batch.items()}, optimizer, 0.1, max_grad_norm=max_grad_norm
        )
    return metrics, policy, reference


def _compare_steps(fn, **kwargs):
    from ..training.dpo import dpo_step

    got_run, want_run = fn.steps(**kwargs), LocalSubject(dpo_step).steps(**kwargs)
    (got, got_policy), (want, want_policy) = (
        (got_run["metrics"], got_run["policy"]),
        (want_run["metrics"], want_run["policy"]),
    )
    if not isinstance(got, dict):
        raise AssertionError(f"dpo_step returned {str(got).strip('<>')}, expected the metrics dict")
    missing = [key for key in want if key not in got]  # the training loop logs and checks every one of them
    if missing:
        raise AssertionError(
            f"the returned metrics lack {missing} (keys: {sorted(got)}): return "
            "{**dpo_lab.dpo_metrics(policy_chosen, policy_rejected, chosen_rewards, rejected_rewards, losses), "
            "'grad_norm': float(grad_norm)}"
        )
    for key in want:
        if key != "grad_norm":  # compared where clipping matters (the clipping check)
            _close(float(got[key]), want[key], f"metrics['{key}']", atol=1e-4)
    for (name, a), b in zip(got_policy.items(), want_policy.values()):
        _close(a, b, f"policy parameter {name} after the step", atol=1e-5)
    return got, want


def _step_no_clip(fn):
    _compare_steps(fn, max_grad_norm=1e9)


def _step_clip(fn):
    got, want = _compare_steps(fn, max_grad_norm=1e-3)
    if "grad_norm" in got:
        _close(float(got["grad_norm"]), want["grad_norm"], "metrics['grad_norm'] (the norm BEFORE clipping)", atol=1e-3)


def _step_twice(fn):
    _compare_steps(fn, steps=2, max_grad_norm=1e9)


def _step_reference(fn):
    run = fn.steps(trainable_reference=True)
    _, fresh = fx.fixture_models()
    if run["reference_grads"]:
        raise AssertionError("the reference received gradients (its forward pass built a graph)")
    for (name, a), b in zip(run["reference"].items(), fresh.parameters()):
        _close(a, b, f"reference parameter {name}")


DPO_STEP = [
    Check(
        "loss, rewards and updated weights match the reference step",
        6,
        _step_no_clip,
        "policy log-probs → reference log-probs → dpo_loss → losses.MEAN() → backward → optimizer.step(); "
        "chosen rows are the first half of the batch",
    ),
    Check(
        "the gradient norm is clipped to max_grad_norm",
        3,
        _step_clip,
        "torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm) between backward() and step()",
    ),
    Check("two steps in a row (gradients zeroed)", 3, _step_twice, "optimizer.zero_grad() before every backward()"),
    Check(
        "the reference gets no gradient and does not change",
        3,
        _step_reference,
        "compute the reference log-probs under torch.no_grad() (even when its parameters require grad)",
    ),
]

# ----------------------------------------------------------------------------------------------- 04 win_rate


def _rate(outcomes, expected):
    def run(fn):
        _close(float(fn(list(outcomes))), expected, f"win_rate({outcomes})", atol=1e-9)

    return run


WIN_RATE = [
    Check("['A', 'B', 'tie'] → 0.5", 2, _rate(["A", "B", "tie"], 0.5), "'A' = 1, 'B' = 0, 'tie' = 0.5"),
    Check(
        "[1, 1, 0, 0.5] → 0.625", 2, _rate([1, 1, 0, 0.5], 0.625), "numbers are scores already: 1 win, 0 loss, 0.5 tie"
    ),
    Check(
        "['A', 'tie', 'tie', 'B', 'A'] → 0.6",
        2,
        _rate(["A", "tie", "tie", "B", "A"], 0.6),
        "ties count as HALF a win and stay in the denominator",
    ),
    Check("['tie'] * 4 → 0.5", 2, _rate(["tie"] * 4, 0.5), "a model against itself, all ties, is at 50 %"),
    Check(
        "empty list → ValueError",
        2,
        lambda fn: _raises(ValueError, fn, []),
        "a win rate of zero comparisons is undefined",
    ),
]

# ----------------------------------------------------------------------------------------------- the table

# What students read (zh-TW, English terms kept): check name -> (label, hint). The English names stay the
# identifiers that tests, mutations and grade reports use.
ZH_TW: dict[str, tuple[str, str]] = {
    "single turn": ("單輪對話", "prompt 以 '\\n\\nAssistant:' 結尾（含）；response 保留開頭的空白"),
    "multi-turn, responses that start alike": (
        "多輪對話、開頭相同的兩個回答",
        "在最後一個 '\\n\\nAssistant:' 切開（str.rfind），不是第一個，也不是第一個不同的字元",
    ),
    "no Assistant turn → ValueError": ("沒有 Assistant 回合 → ValueError", "找不到標記時 raise ValueError"),
    "different prompts → ValueError": ("兩個 prompt 不同 → ValueError", "兩段逐字稿的 prompt 不同時 raise ValueError"),
    "rows = [all chosen; all rejected], tokens and attention_mask": (
        "列順序 [所有 chosen；所有 rejected]、token 與 attention_mask",
        "先放所有 chosen 列、再放所有 rejected 列；每一列 = prompt_ids + response ids，右側補齊",
    ),
    "loss_mask: 1 on response tokens only": (
        "loss_mask 只在 response token 為 1",
        "prompt 與 padding 為 0，每個 response token（含 EOS）為 1；用長度建遮罩",
    ),
    "EOS is scored even though pad == eos": (
        "pad == eos 時 EOS 仍然計分",
        "不要用 token 的值建 loss_mask（ids != pad_token_id 會把真正的 EOS 也遮掉）",
    ),
    "max_length keeps the first tokens": (
        "max_length 保留前段 token",
        "每一列（連同遮罩）只保留前 max_length 個 token",
    ),
    "sum over response tokens": (
        "對 response token 加總",
        "位移一格（logits[:, :-1] 預測 input_ids[:, 1:]），遮罩跟著 labels 一起位移，"
        "在詞彙維度（dim=-1）做 log-softmax，加總（不是平均）",
    ),
    "average=True gives the mean over response tokens": (
        "average=True 時為 response token 的平均",
        "遮罩後的總和除以計分的 token 數",
    ),
    "prompt and padding tokens do not count": ("prompt 與 padding 不計分", "加總前乘上（位移後的）loss_mask"),
    "gradients flow to the logits": ("梯度能回傳到 logits", "函式裡不要 .detach()、.item() 或 torch.no_grad()"),
    "bf16 logits are scored in fp32": (
        "bf16 的 logits 以 fp32 計算",
        "log_softmax 之前先 .float()：bf16 的 8 位元尾數讓加總的誤差達到零點幾 nats",
    ),
    f"exact value: log π(chosen) = {EXACT_CHOSEN_LOGP:.4f}": (
        f"精確值：log π(chosen) = {EXACT_CHOSEN_LOGP:.4f}",
        "EOS 屬於 response、要計分；加總，不要平均",
    ),
    "policy == reference → every loss is ln 2": (
        "policy == reference → 每個 loss 都是 ln 2",
        "loss = -logsigmoid(beta * margin)；margin 為 0 時是 ln 2 = 0.6931",
    ),
    "per-pair losses": (
        "每一對的 loss",
        "margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)；beta 在 sigmoid 裡面乘上 margin；"
        "回傳每一對的 loss，不是平均",
    ),
    "implicit rewards = beta * (policy - reference)": (
        "implicit rewards = beta * (policy - reference)",
        "chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)；rejected 同理",
    ),
    "swapping chosen and rejected flips the margin": (
        "交換 chosen 與 rejected，margin 變號",
        "chosen_rewards - rejected_rewards 必須變號",
    ),
    "rewards detached, losses differentiable": (
        "rewards 已 detach、losses 可微分",
        "rewards 只用來記錄：要 .detach()；losses 要保留計算圖",
    ),
    "finite for large margins": (
        "margin 很大時仍是有限值",
        "用 F.logsigmoid（或 softplus），不要用 torch.log(torch.sigmoid(x))：sigmoid 下溢成 0 時會得到 inf",
    ),
    f"exact value: loss = {EXACT_LOSS:.4f}": (f"精確值：loss = {EXACT_LOSS:.4f}", "beta = 0.1；見練習說明"),
    "loss, rewards and updated weights match the reference step": (
        "loss、rewards 與更新後的權重和參考實作相同",
        "policy log-probs → reference log-probs → dpo_loss → losses.mean() → backward → "
        "optimizer.step()；batch 的前半是 chosen 列；dpo_metrics 要傳入全部五個引數",
    ),
    "the gradient norm is clipped to max_grad_norm": (
        "梯度範數被裁剪到 max_grad_norm",
        "在 backward() 與 step() 之間呼叫 torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)，"
        "回傳它的值（裁剪之前的範數）",
    ),
    "two steps in a row (gradients zeroed)": ("連續兩步（梯度有歸零）", "每次 backward() 之前先 optimizer.zero_grad()"),
    "the reference gets no gradient and does not change": (
        "reference 沒有梯度、權重不變",
        "reference 的 log-prob 在 torch.no_grad() 下計算（即使它的參數 requires_grad 是 True）",
    ),
    "['A', 'B', 'tie'] → 0.5": ("['A', 'B', 'tie'] → 0.5", "'A' = 1、'B' = 0、'tie' = 0.5"),
    "[1, 1, 0, 0.5] → 0.625": ("[1, 1, 0, 0.5] → 0.625", "數字本身就是分數：1 勝、0 敗、0.5 平手"),
    "['A', 'tie', 'tie', 'B', 'A'] → 0.6": ("['A', 'tie', 'tie', 'B', 'A'] → 0.6", "平手算半勝，而且留在分母裡"),
    "['tie'] * 4 → 0.5": ("['tie'] * 4 → 0.5", "模型和自己比、全部平手，是 50 %"),
    "empty list → ValueError": ("空 list → ValueError", "零次比較的勝率沒有定義：raise ValueError"),
}

EXERCISES: dict[str, list[Check]] = {
    name: [replace(c, label=ZH_TW[c.name][0], hint=ZH_TW[c.name][1]) for c in checks]
    for name, checks in {
        "extract_prompt": EXTRACT_PROMPT,
        "PreferenceDataCollator": COLLATOR,
        "sequence_logprobs": SEQUENCE_LOGPROBS,
        "dpo_loss": DPO_LOSS,
        "dpo_step": DPO_STEP,
        "win_rate": WIN_RATE,
    }.items()
}

# Names an exercise's code may call that belong to ANOTHER exercise: the grader binds them to the package's
# reference while grading it, so one bug costs points once (dpo_step is graded with the reference dpo_loss).
USES: dict[str, dict[str, str]] = {"dpo_step": {"dpo_loss": "dpo_loss", "loss_fn": "dpo_loss"}}


# The one table of the exercises' reference implementations: what the notebooks fall back to, what
# the rubric compares against, and what the grader watches for delegation (wherever the package binds
# it: sandbox finds every module attribute holding one of these objects, so moving a module moves nothing).
REFERENCES: dict[str, Any] = {
    "extract_prompt": extract_prompt,
    "PreferenceDataCollator": PreferenceDataCollator,
    "sequence_logprobs": sequence_logprobs,
    "dpo_loss": dpo_loss,
    "dpo_step": dpo_step,
    "win_rate": win_rate,
}
# Other package functions that compute an exercise's answer: calling them is delegating too.
EQUIVALENTS: dict[str, tuple[Any, ...]] = {"sequence_logprobs": (sequence_logprobs_lean,)}
assert REFERENCES.keys() == EXERCISES.keys()


def reference_object(name: str) -> Any:
    """The package's own implementation of exercise `name`."""
    return REFERENCES[name]
