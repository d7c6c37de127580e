"""Quick checks a student runs right after writing an exercise: ✅ or ❌ with a hint, in well under a second.

Each ``check_*`` function compares the student's implementation with the package's reference on
small fixed inputs and prints one line per check. :func:`pick` then chooses what later cells use:
the student's version when it passes, otherwise the reference — said loudly, so an unfinished
notebook still runs end to end.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from . import collator as _collator
from . import losses as _losses
from .data import extract_prompt as _extract_prompt


class _Checks:
    def __init__(self, title: str):
        self.title, self.results = title, []

    def run(self, name: str, fn: Callable[[], None], hint: str) -> None:
        try:
            fn()
            self.results.append((True, name, ""))
        except NotImplementedError:
            self.results.append((False, name, "not implemented yet"))
        except Exception as e:  # a student's code may fail in any way: report it, never crash the notebook
            self.results.append((False, name, f"{type(e).__name__}: {e} — {hint}"))

    def report(self, verbose: bool = True) -> bool:
        ok = all(passed for passed, _, _ in self.results)
        if verbose:
            print(f"{self.title}: {sum(p for p, _, _ in self.results)}/{len(self.results)} checks passed")
            for passed, name, why in self.results:
                print(f"  {'✅' if passed else '❌'} {name}" + ("" if passed else f": {why}"))
        return ok


def _close(a, b, what: str, atol: float = 1e-5) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=0):
        raise AssertionError(f"{what}: got {a.tolist()}, expected {b.tolist()}")


# ----------------------------------------------------------------------------------------------- 01


_TRANSCRIPTS = [
    ("\n\nHuman: What is DPO?\n\nAssistant: A way to align a model with preferences.",
     "\n\nHuman: What is DPO?\n\nAssistant: No idea."),
    ("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: I think blue.",
     "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: I think red."),
]


def check_extract_prompt(fn, verbose: bool = True) -> bool:
    c = _Checks("extract_prompt")
    def same_as_reference(i):
        def run():
            got, want = tuple(fn(*_TRANSCRIPTS[i])), _extract_prompt(*_TRANSCRIPTS[i])
            if got != want:
                raise AssertionError(f"got {got!r}, expected {want!r}")
        return run
    c.run("single turn", same_as_reference(0), "the prompt ends with '\\n\\nAssistant:'; the response keeps its leading space")
    c.run("multi-turn, responses that start alike", same_as_reference(1),
          "split at the LAST '\\n\\nAssistant:' (str.rfind), not at the first differing character")
    def raises(chosen, rejected):
        def run():
            try:
                fn(chosen, rejected)
            except ValueError:
                return
            raise AssertionError("no ValueError raised")
        return run
    c.run("no Assistant turn → ValueError", raises("\n\nHuman: Hi", "\n\nHuman: Hi"), "raise ValueError when the tag is missing")
    c.run("different prompts → ValueError", raises(_TRANSCRIPTS[0][0], _TRANSCRIPTS[1][1]),
          "raise ValueError when the two prompts differ")
    return c.report(verbose)


def check_collator(cls, tokenizer, verbose: bool = True) -> bool:
    from .tokenization import tokenize_pair

    c = _Checks("PreferenceDataCollator")
    examples = [tokenize_pair(tokenizer, *_extract_prompt(*pair)) for pair in _TRANSCRIPTS]
    def same(max_length=None):
        def run():
            got = cls(tokenizer, max_length=max_length)(examples)
            want = _collator.PreferenceDataCollator(tokenizer, max_length=max_length)(examples)
            for key in ("input_ids", "attention_mask", "loss_mask"):
                if key not in got:
                    raise AssertionError(f"no '{key}' in the batch")
                if not torch.equal(torch.as_tensor(got[key]).long(), want[key]):
                    raise AssertionError(f"'{key}' differs from the reference:\n{got[key]}\nexpected\n{want[key]}")
        return run
    c.run("input_ids / attention_mask / loss_mask", same(), "rows = [all chosen; all rejected], right-padded, loss_mask 1 on response tokens")
    c.run("with max_length=12", same(12), "cut each row to its first max_length tokens")
    def eos_scored():
        batch = cls(tokenizer)(examples)
        lengths = batch["attention_mask"].sum(dim=1)
        for row, n in enumerate(lengths.tolist()):
            if batch["input_ids"][row, n - 1] != tokenizer.eos_token_id or batch["loss_mask"][row, n - 1] != 1:
                raise AssertionError(f"row {row}: its last real token must be EOS with loss_mask 1")
    c.run("EOS is scored even though pad == eos", eos_scored, "build loss_mask from lengths, never from token values")
    return c.report(verbose)


# ----------------------------------------------------------------------------------------------- 02/03


def _logits_fixture():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 11, generator=g)
    ids = torch.randint(0, 11, (4, 7), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0]])
    return logits, ids, mask


def check_sequence_logprobs(fn, verbose: bool = True) -> bool:
    c = _Checks("sequence_logprobs")
    logits, ids, mask = _logits_fixture()
    c.run("sum over response tokens", lambda: _close(fn(logits, ids, mask), _losses.sequence_logprobs(logits, ids, mask), "log-probs"),
          "shift by one: logits[:, :-1] predict input_ids[:, 1:], and shift the mask the same way")
    c.run("average=True (mean over response tokens)",
          lambda: _close(fn(logits, ids, mask, average=True), _losses.sequence_logprobs(logits, ids, mask, average=True), "log-probs"),
          "divide the masked sum by the number of scored tokens")
    def padding_invariant():
        changed = ids.clone()
        changed[mask == 0] = 3  # different prompt/padding tokens must not change a response's score...
        changed[:, 0] = ids[:, 0]
        keep = torch.zeros_like(mask)
        keep[:, 1:] = mask[:, 1:]
        _close(fn(logits, ids, mask), fn(logits, torch.where(keep.bool(), ids, changed), mask), "log-probs after changing unscored tokens")
    c.run("unscored tokens do not count", padding_invariant, "multiply by the (shifted) mask before summing")
    def gradient_flows():
        x = logits.clone().requires_grad_(True)
        fn(x, ids, mask).sum().backward()
        if x.grad is None or not x.grad.abs().sum() > 0:
            raise AssertionError("no gradient reached the logits")
    c.run("gradients flow to the logits", gradient_flows, "do not call .detach(), .item() or torch.no_grad() inside")
    return c.report(verbose)


def check_dpo_loss(fn, verbose: bool = True) -> bool:
    c = _Checks("dpo_loss")
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 10 - 50 for _ in range(4))
    def ln2():
        losses, cr, rj = fn(pc, pr, pc.clone(), pr.clone(), 0.1)
        _close(losses, torch.full((5,), math.log(2)), "losses when policy == reference")
        _close(cr, torch.zeros(5), "chosen rewards when policy == reference")
    c.run("policy == reference → every loss is ln 2", ln2, "loss = -logsigmoid(beta * margin); margin 0 gives ln 2")
    def same():
        got, want = fn(pc, pr, rc, rr, 0.3), _losses.dpo_loss(pc, pr, rc, rr, 0.3)
        for name, a, b in zip(("losses", "chosen_rewards", "rejected_rewards"), got, want):
            _close(a, b, name)
    c.run("per-pair losses and rewards", same,
          "rewards = beta * (policy - reference); beta multiplies the margin INSIDE the sigmoid; return per-pair losses, not the mean")
    def swap():
        a = fn(pc, pr, rc, rr, 0.3)
        b = fn(pr, pc, rr, rc, 0.3)
        _close(a[1] - a[2], -(b[1] - b[2]), "margin after swapping chosen and rejected")
    c.run("swapping chosen and rejected flips the margin", swap, "chosen_rewards - rejected_rewards must change sign")
    def detached():
        x = pc.clone().requires_grad_(True)
        losses, cr, rj = fn(x, pr, rc, rr, 0.3)
        if cr.requires_grad or rj.requires_grad:
            raise AssertionError("the rewards carry gradients")
        if not losses.requires_grad:
            raise AssertionError("the losses carry no gradient")
    c.run("rewards detached, losses differentiable", detached, "rewards are for logging: .detach() them; the loss must keep its graph")
    return c.report(verbose)


def check_dpo_step(fn, tokenizer, verbose: bool = True) -> bool:
    from .dpo import dpo_step as reference_step
    from .models import tiny_random_model
    from .runtime import disable_dropout, freeze
    from .tokenization import tokenize_pair

    c = _Checks("dpo_step")
    batch = _collator.PreferenceDataCollator(tokenizer)([tokenize_pair(tokenizer, *_extract_prompt(*p)) for p in _TRANSCRIPTS])
    policy = disable_dropout(tiny_random_model(tokenizer, seed=1))
    reference = freeze(disable_dropout(tiny_random_model(tokenizer, seed=2)))
    def same():
        results = []
        for step in (fn, reference_step):
            model = copy.deepcopy(policy)
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            metrics = step(model, reference, batch, opt, 0.1)
            results.append((metrics, model))
        (got, got_model), (want, want_model) = results
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
            if key not in got:
                raise AssertionError(f"no '{key}' in the returned metrics")
            _close(got[key], want[key], key, atol=1e-4)
        for (name, a), b in zip(got_model.named_parameters(), want_model.parameters()):
            _close(a.detach(), b.detach(), f"parameter {name} after the step", atol=1e-5)
    c.run("metrics and updated weights match the reference step", same,
          "zero_grad → policy log-probs → reference log-probs (no grad) → dpo_loss → mean → backward → clip → step")
    def reference_untouched():
        ref_before = [p.clone() for p in reference.parameters()]
        fn(copy.deepcopy(policy), reference, batch, torch.optim.SGD(policy.parameters(), lr=0.5), 0.1)
        for a, b in zip(ref_before, reference.parameters()):
            _close(a, b.detach(), "reference weights")
    c.run("the reference does not change", reference_untouched, "compute the reference log-probs under torch.no_grad()")
    return c.report(verbose)


# ----------------------------------------------------------------------------------------------- 04


def check_win_rate(fn, verbose: bool = True) -> bool:
    from .winrate import win_rate as reference

    c = _Checks("win_rate")
    for outcomes in (["A", "B", "tie"], [1, 1, 0, 0.5], [0, 0, 0, 1]):
        c.run(f"{outcomes}", lambda o=outcomes: _close(fn(o), reference(o), "win rate", atol=1e-12),
              "(wins + ties / 2) / number of comparisons; 'A' = 1, 'B' = 0, 'tie' = 0.5")
    def empty():
        try:
            fn([])
        except ValueError:
            return
        raise AssertionError("no ValueError for an empty list")
    c.run("empty list → ValueError", empty, "a win rate of zero comparisons is undefined")
    return c.report(verbose)


# ----------------------------------------------------------------------------------------------- the switch


def pick(name: str, student: Any, reference: Any, passed: bool) -> Any:
    """What later cells use: the student's implementation if it passed its checks, else the package's reference."""
    if passed:
        print(f"➡️  later cells use YOUR {name}")
        return student
    print(f"⚠️  {name}: your version is unfinished or failed a check — later cells use the reference dpo_lab.{name}."
          " Fix it and re-run the check cell to switch back.")
    return reference
