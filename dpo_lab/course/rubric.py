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
import random
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from ..core.collator import PreferenceDataCollator, SFTDataCollator, merge_pair_batches
from ..core.collator import _right_pad as collator_right_pad
from ..core.losses import _reduce as losses_reduce
from ..core.losses import _shift as losses_shift
from ..core.losses import dpo_loss, preference_loss, sequence_logprobs
from ..data.sources import extract_prompt
from ..evaluation.elo import _games as elo_games
from ..evaluation.winrate import _as_score as winrate_as_score
from ..evaluation.winrate import win_rate, wins_ties_losses
from ..fast.scored_logprobs import (
    batch_logprobs,
    scored_sequence_logprobs,
    scored_token_logprobs,
    sequence_logprobs_lean,
)
from ..training.dpo import DPOLoop, dpo_step
from . import grading_fixture as fx
from .subject import LocalSubject, Subject, plain  # noqa: F401 - plain and Subject are part of the rubric's API

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
    _tokenized_pairs(current_seed())


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


# ----------------------------------------------------------------------------------------------- drawn inputs

DEFAULT_SEED = 0  # the self-checks' and tests' inputs; the grader draws a fresh seed for every grading run
_SEED: ContextVar[int] = ContextVar("rubric_seed", default=DEFAULT_SEED)


@contextmanager
def drawing(seed: int):
    """Draw every check's inputs from `seed` inside the block (recorded by the grader, so a grade can be
    reproduced; fresh per grading run, so outputs hard-coded for one run's inputs fail the next)."""
    token = _SEED.set(int(seed))
    try:
        yield
    finally:
        _SEED.reset(token)


def current_seed() -> int:
    return _SEED.get()


def _random(tag: str) -> random.Random:
    return random.Random(f"{_SEED.get()}/{tag}")


def _generator(tag: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{_SEED.get()}/{tag}".encode()) + (_SEED.get() % 2**31) * 2**32)


# ----------------------------------------------------------------------------------------------- 01 extract_prompt

_WORDS = (
    "the sky is blue because light scatters in air and a model learns what people prefer from pairs of answers "
    "which one is better why does rain fall water cools into drops tea leaves grow on hills near the river "
    "name a colour think about it please explain how trains run on rails"
).split()


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + rng.choice(".?!")


def _transcripts() -> list[tuple[str, str]]:
    """This run's two pairs of HH transcripts: a single turn, and a multi-turn dialogue whose two responses
    start alike (so a split at the first differing character, or at the first tag, gives the wrong prompt).
    The rejected response is longer than the chosen one in one pair and shorter in the other."""
    rng = _random("transcripts")
    single = f"\n\nHuman: {_sentence(rng, 3, 6)}\n\nAssistant:"
    history = "".join(
        f"\n\nHuman: {_sentence(rng, 2, 3)}\n\nAssistant: {_sentence(rng, 2, 4)}" for _ in range(rng.randint(1, 2))
    )
    multi = f"{history}\n\nHuman: {_sentence(rng, 2, 4)}\n\nAssistant:"
    start = " I think"
    pairs = [
        (single, " " + _sentence(rng, 7, 10), " " + _sentence(rng, 1, 3)),
        (multi, f"{start} {_sentence(rng, 1, 2).lower()}", f"{start} {_sentence(rng, 5, 8).lower()}"),
    ]
    return [(prompt + chosen, prompt + rejected) for prompt, chosen, rejected in pairs]


def _same_split(i: int):
    def run(fn):
        from ..data.sources import extract_prompt

        pair = _transcripts()[i]
        got, want = tuple(fn(*pair)), extract_prompt(*pair)
        if got != want:
            raise AssertionError(f"got {got!r}, expected {want!r}")

    return run


def _no_assistant(fn):
    rng = _random("no assistant")
    text = f"\n\nHuman: {_sentence(rng, 2, 6)}"
    _raises(ValueError, fn, text, text + rng.choice(["", " Thanks."]))


def _different_prompts(fn):
    first, second = _transcripts()
    _raises(ValueError, fn, first[0], second[1])


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
        _no_assistant,
        "raise ValueError when the tag is missing",
    ),
    Check(
        "different prompts → ValueError",
        2,
        _different_prompts,
        "raise ValueError when the two prompts differ",
    ),
]

# ----------------------------------------------------------------------------------------------- 01 collator


def _pair_examples() -> list[dict[str, Any]]:
    import copy

    return copy.deepcopy(_tokenized_pairs(current_seed()))


_TOKENIZED: dict[int, list[dict[str, Any]]] = {}


def _tokenized_pairs(seed: int) -> list[dict[str, Any]]:
    """This run's pairs, tokenized once per seed under the fixture lock: the grader judges several submissions
    in threads, and one fast tokenizer must not be used by two threads at once."""
    from ..core.tokenization import tokenize_pair
    from ..data.sources import extract_prompt

    if seed not in _TOKENIZED:
        tok = fx.fixture_tokenizer()
        with fx._LOADING:
            _TOKENIZED[seed] = [tokenize_pair(tok, *extract_prompt(*pair)) for pair in _transcripts()]
    return _TOKENIZED[seed]


def _truncation_length() -> int:
    """A max_length that cuts every row of this run's pairs (drawn, so no single length can be special-cased)."""
    shortest = min(len(e["prompt_ids"]) + min(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in _pair_examples())
    return _random("max_length").randint(max(2, shortest // 2), shortest - 1)


def _collate(subject, max_length=None):
    from ..core.collator import PreferenceDataCollator

    examples = _pair_examples()
    got = subject.collate(examples, max_length)
    want = PreferenceDataCollator(fx.fixture_tokenizer(), max_length=max_length)(examples)
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
    length = _truncation_length()
    got, want = _collate(cls, max_length=length)
    real = want["attention_mask"].bool()
    for key in ("input_ids", "attention_mask", "loss_mask"):
        g, w = (got[key][real], want[key][real]) if key == "input_ids" else (got[key], want[key])
        if not torch.equal(g, w):
            raise AssertionError(
                f"with max_length={length}, '{key}' differs:\n{_rows(got[key])}\nexpected\n{_rows(want[key])}"
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
    """This run's logits [N, T, V], ids and loss_mask: each row has a prompt (zeros), a response (ones) and
    padding (zeros); one row's response reaches the last column (its EOS), one row has a one-token response."""
    rng, g = _random("logits"), _generator("logits")
    n, t, v = rng.randint(4, 6), rng.randint(7, 10), rng.randint(9, 14)
    logits = torch.randn(n, t, v, generator=g) * 2
    ids = torch.randint(0, v, (n, t), generator=g)
    mask = torch.zeros(n, t, dtype=torch.long)
    for row in range(n):
        start = rng.randint(1, t - 2)
        length = {0: t - start, 1: 1}.get(row, rng.randint(1, t - start))
        mask[row, start : start + length] = 1
    order = torch.randperm(n, generator=g)
    return logits, ids, mask[order]


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
    changed = torch.where(scored.bool(), ids, (ids + 5) % logits.shape[-1])
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
    """This run's (policy_chosen, policy_rejected, ref_chosen, ref_rejected) log-probs, one value per pair."""
    g = _generator("logps")
    size = int(torch.randint(4, 9, (1,), generator=g))
    return tuple(torch.randn(size, generator=g) * 10 - 50 for _ in range(4))


def _beta() -> float:
    return round(_random("beta").uniform(0.05, 0.6), 3)


def _loss_ln2(fn):
    pc, pr, _, _ = _logp_fixture()
    losses, chosen, rejected = fn(pc, pr, pc.clone(), pr.clone(), _beta())
    _close(losses, torch.full(pc.shape, math.log(2)), "per-pair losses when policy == reference")
    _close(chosen, torch.zeros(pc.shape), "chosen rewards when policy == reference")


def _loss_values(fn):
    from ..core.losses import dpo_loss

    args = _logp_fixture()
    got, want = fn(*args, _beta()), dpo_loss(*args, _beta())
    _close(got[0], want[0], "per-pair losses", atol=1e-4)


def _loss_rewards(fn):
    from ..core.losses import dpo_loss

    args = _logp_fixture()
    got, want = fn(*args, _beta()), dpo_loss(*args, _beta())
    _close(got[1], want[1], "chosen rewards", atol=1e-4)
    _close(got[2], want[2], "rejected rewards", atol=1e-4)


def _loss_swap(fn):
    pc, pr, rc, rr = _logp_fixture()
    a, b = fn(pc, pr, rc, rr, _beta()), fn(pr, pc, rr, rc, _beta())
    _close(a[1] - a[2], -(b[1] - b[2]), "margin after swapping chosen and rejected", atol=1e-4)


def _loss_detached(fn):
    flags = fn.with_grad(*_logp_fixture(), _beta())["requires_grad"]
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
    beta = 0.5 + _beta()  # beta * margin far below -80, where sigmoid underflows in float32
    got, want = fn(pc, pr + 2000, rc, rr, beta), dpo_loss(pc, pr + 2000, rc, rr, beta)
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


def _compare_steps(fn, **kwargs):
    from ..training.dpo import dpo_step

    batch, beta = _step_batch(), _beta()
    got_run, want_run = fn.steps(batch, beta=beta, **kwargs), LocalSubject(dpo_step).steps(batch, beta=beta, **kwargs)
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
    run = fn.steps(_step_batch(), trainable_reference=True, beta=_beta())
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


def _outcomes(kind: str) -> list:
    """This run's outcome list for one check (drawn: a lookup table of fixed inputs cannot pass)."""
    rng = _random(f"outcomes/{kind}")
    n = rng.randint(4, 9)
    if kind == "letters":  # every letter at least once
        values = ["A", "B", "tie"] + [rng.choice(["A", "B", "tie"]) for _ in range(n - 3)]
    elif kind == "numbers":
        values = [1, 0, 0.5] + [rng.choice([1, 0, 0.5, 1.0, 0.0]) for _ in range(n - 3)]
    elif kind == "ties":  # wins and ties only: leaving the ties out gives 1.0
        values = ["A"] * rng.randint(1, 3) + ["tie"] * rng.randint(2, 4)
    else:  # "all ties"
        values = ["tie"] * rng.randint(2, 7)
    rng.shuffle(values)
    return values


def _rate(kind: str):
    def run(fn):
        outcomes = _outcomes(kind)
        _close(float(fn(list(outcomes))), win_rate(outcomes), f"win_rate({outcomes})", atol=1e-9)

    return run


WIN_RATE = [
    Check("'A' / 'B' / 'tie' outcomes", 2, _rate("letters"), "'A' = 1, 'B' = 0, 'tie' = 0.5"),
    Check("numbers are scores: 1, 0, 0.5", 2, _rate("numbers"), "numbers are scores already: 1 win, 0 loss, 0.5 tie"),
    Check(
        "ties count half and stay in the denominator",
        2,
        _rate("ties"),
        "ties count as HALF a win and stay in the denominator",
    ),
    Check("all ties → 0.5", 2, _rate("all ties"), "a model against itself, all ties, is at 50 %"),
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
    "'A' / 'B' / 'tie' outcomes": ("'A' / 'B' / 'tie' 的結果", "'A' = 1、'B' = 0、'tie' = 0.5"),
    "numbers are scores: 1, 0, 0.5": ("數字就是分數：1、0、0.5", "數字本身就是分數：1 勝、0 敗、0.5 平手"),
    "ties count half and stay in the denominator": ("平手算半勝、留在分母裡", "平手算半勝，而且留在分母裡"),
    "all ties → 0.5": ("全部平手 → 0.5", "模型和自己比、全部平手，是 50 %"),
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
# Other package code that computes an exercise's answer, or the step that makes it (a wrapper that only calls
# the reference needs no entry: it fails with it). The grader withholds an exercise's reference AND these from
# the copy of the package its worker sees (:mod:`dpo_lab.course.withhold`); a reference of ANOTHER exercise
# stays (dpo_step is written with the package's batch_logprobs and dpo_loss).
EQUIVALENTS: dict[str, tuple[Any, ...]] = {
    "extract_prompt": (),
    "PreferenceDataCollator": (SFTDataCollator, merge_pair_batches, collator_right_pad),
    "sequence_logprobs": (
        sequence_logprobs_lean,
        scored_sequence_logprobs,
        scored_token_logprobs,
        batch_logprobs,
        losses_shift,
        losses_reduce,
    ),
    "dpo_loss": (preference_loss,),
    "dpo_step": (DPOLoop,),
    "win_rate": (winrate_as_score, wins_ties_losses, elo_games),
}
assert REFERENCES.keys() == EXERCISES.keys() == EQUIVALENTS.keys()


def reference_object(name: str) -> Any:
    """The package's own implementation of exercise `name`."""
    return REFERENCES[name]
