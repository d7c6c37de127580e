"""Classic DPO bugs as small edits of the master notebooks' own solutions (mutation testing).

Each :class:`Bug` names the exercise, the rubric check that must catch it, and the edits that turn the
master's correct solution into the bug. Every edit's ``old`` text must occur exactly once in the
master solution, so a bug can never silently become a no-op when a master changes.
Bugs that are a different algorithm rather than an edit live as whole files in ``bugs/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Bug:
    exercise: str
    name: str
    caught_by: str  # the rubric check that must fail
    edits: tuple[tuple[str, str], ...]  # (text in the master solution, replacement)


BUGS = [
    # ------------------------------------------------------------------ 1 extract_prompt
    Bug("extract_prompt", "first_assistant_tag", "multi-turn, responses that start alike",
        (("text.rfind(ASSISTANT_TAG)", "text.find(ASSISTANT_TAG)"),)),
    Bug("extract_prompt", "strips_leading_space", "single turn",
        (("chosen_text[len(prompt):], rejected_text[len(prompt):]", "chosen_text[len(prompt):].strip(), rejected_text[len(prompt):].strip()"),)),
    Bug("extract_prompt", "no_validation", "no Assistant turn → ValueError",
        (("if cut < 0:", "if False:"), ("if prompts[0] != prompts[1]:", "if False:"))),
    # ------------------------------------------------------------------ 2 PreferenceDataCollator
    Bug("PreferenceDataCollator", "rejected_first", "rows = [all chosen; all rejected], tokens and attention_mask",
        (('("chosen_ids", "rejected_ids")', '("rejected_ids", "chosen_ids")'),)),
    Bug("PreferenceDataCollator", "interleaved_rows", "rows = [all chosen; all rejected], tokens and attention_mask",
        (('for response_key in ("chosen_ids", "rejected_ids"):', "for ex in examples:"),
         ("            for ex in examples:", '            for response_key in ("chosen_ids", "rejected_ids"):'))),
    Bug("PreferenceDataCollator", "eos_masked_when_pad_is_eos", "EOS is scored even though pad == eos",
        (("[1] * len(response)", "[int(t != self.pad_token_id) for t in response]"),)),
    Bug("PreferenceDataCollator", "prompt_not_masked", "loss_mask: 1 on response tokens only",
        (("[0] * len(prompt) + [1] * len(response)", "[1] * (len(prompt) + len(response))"),)),
    Bug("PreferenceDataCollator", "padding_scored", "loss_mask: 1 on response tokens only",
        (('"loss_mask": right_pad(masks, 0)', '"loss_mask": right_pad(masks, 1)'),)),
    Bug("PreferenceDataCollator", "left_padding", "rows = [all chosen; all rejected], tokens and attention_mask",
        (("r + [value] * (width - len(r))", "[value] * (width - len(r)) + r"),)),
    Bug("PreferenceDataCollator", "truncates_the_start", "max_length keeps the first tokens",
        (("seq[: self.max_length], mask[: self.max_length]", "seq[-self.max_length:], mask[-self.max_length:]"),)),
    # ------------------------------------------------------------------ 3 sequence_logprobs
    Bug("sequence_logprobs", "no_shift", "sum over response tokens",
        (("logits[:, :-1, :].float()", "logits.float()"), ("labels = input_ids[:, 1:]", "labels = input_ids"),
         ("mask = loss_mask[:, 1:].float()", "mask = loss_mask.float()"))),
    Bug("sequence_logprobs", "mean_instead_of_sum", "sum over response tokens", (("    if average:", "    if True:"),)),
    Bug("sequence_logprobs", "mask_not_shifted", "sum over response tokens", (("loss_mask[:, 1:]", "loss_mask[:, :-1]"),)),
    Bug("sequence_logprobs", "no_mask", "prompt and padding tokens do not count",
        (("(token_logps * mask).sum(dim=-1)", "token_logps.sum(dim=-1)"),)),
    Bug("sequence_logprobs", "eos_dropped", "sum over response tokens",
        (("    total = (token_logps * mask)", "    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)\n"
          "    mask = mask.clone()\n    mask[torch.arange(mask.shape[0]), last] = 0  # 'EOS is padding'\n"
          "    total = (token_logps * mask)"),)),
    Bug("sequence_logprobs", "log_softmax_over_positions", "sum over response tokens",
        (("torch.log_softmax(logits, dim=-1)", "torch.log_softmax(logits, dim=1)"),)),
    Bug("sequence_logprobs", "detached", "gradients flow to the logits",
        (("    total = (token_logps * mask)", "    token_logps = token_logps.detach()\n    total = (token_logps * mask)"),)),
    Bug("sequence_logprobs", "half_precision", "bf16 logits are scored in fp32", (("logits[:, :-1, :].float()", "logits[:, :-1, :]"),)),
    Bug("sequence_logprobs", "average_over_padded_width", "average=True gives the mean over response tokens",
        (("return total / mask.sum(dim=-1).clamp(min=1)", "return total / mask.shape[1]"),)),
    # ------------------------------------------------------------------ 4 dpo_loss
    Bug("dpo_loss", "beta_outside_sigmoid", "per-pair losses",
        (("-F.logsigmoid(beta * (chosen_logratios - rejected_logratios))", "-beta * F.logsigmoid(chosen_logratios - rejected_logratios)"),)),
    Bug("dpo_loss", "margin_sign_flipped", "per-pair losses",
        (("(chosen_logratios - rejected_logratios)", "(rejected_logratios - chosen_logratios)"),)),
    Bug("dpo_loss", "reference_added", "per-pair losses",
        (("policy_chosen_logps - ref_chosen_logps", "policy_chosen_logps + ref_chosen_logps"),
         ("policy_rejected_logps - ref_rejected_logps", "policy_rejected_logps + ref_rejected_logps"))),
    Bug("dpo_loss", "beta_divides_the_margin", "per-pair losses",
        (("beta * (chosen_logratios - rejected_logratios)", "(chosen_logratios - rejected_logratios) / beta"),)),
    Bug("dpo_loss", "rewards_not_scaled", "implicit rewards = beta * (policy - reference)",
        (("beta * chosen_logratios.detach()", "chosen_logratios.detach()"), ("beta * rejected_logratios.detach()", "rejected_logratios.detach()"))),
    Bug("dpo_loss", "rewards_not_detached", "rewards detached, losses differentiable",
        (("chosen_logratios.detach()", "chosen_logratios"), ("rejected_logratios.detach()", "rejected_logratios"))),
    Bug("dpo_loss", "reduced_mean", "per-pair losses", (("return losses, ", "return losses.mean(), "),)),
    Bug("dpo_loss", "log_of_sigmoid", "finite for large margins",
        (("-F.logsigmoid(beta * (chosen_logratios - rejected_logratios))",
          "-torch.log(torch.sigmoid(beta * (chosen_logratios - rejected_logratios)))"),)),
    # ------------------------------------------------------------------ 5 dpo_step
    Bug("dpo_step", "reference_with_grad", "the reference gets no gradient and does not change",
        (("    with torch.no_grad():\n", "    if True:\n"),)),
    Bug("dpo_step", "no_zero_grad", "two steps in a row (gradients zeroed)", (("    optimizer.zero_grad(set_to_none=True)\n", ""),)),
    Bug("dpo_step", "sum_over_pairs", "loss, rewards and updated weights match the reference step",
        (("losses.mean().backward()", "losses.sum().backward()"),)),
    Bug("dpo_step", "no_clipping", "the gradient norm is clipped to max_grad_norm",
        (("clip_grad_norm_(policy.parameters(), max_grad_norm)", "clip_grad_norm_(policy.parameters(), float('inf'))"),)),
    Bug("dpo_step", "clip_after_step", "the gradient norm is clipped to max_grad_norm",
        (("    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)\n    optimizer.step()\n",
          "    optimizer.step()\n    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)\n"),)),
    Bug("dpo_step", "policy_and_reference_swapped", "loss, rewards and updated weights match the reference step",
        (("(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)", "(ref_chosen, ref_rejected, policy_chosen, policy_rejected, beta)"),)),
    Bug("dpo_step", "chosen_and_rejected_halves_swapped", "loss, rewards and updated weights match the reference step",
        (("policy_chosen, policy_rejected = dpo_lab", "policy_rejected, policy_chosen = dpo_lab"),
         ("ref_chosen, ref_rejected = dpo_lab", "ref_rejected, ref_chosen = dpo_lab"))),
    Bug("dpo_step", "length_normalised_logprobs", "loss, rewards and updated weights match the reference step",
        (("batch_logprobs(policy, batch)", "batch_logprobs(policy, batch, average=True)"),
         ("batch_logprobs(reference, batch)", "batch_logprobs(reference, batch, average=True)"))),
    Bug("dpo_step", "metrics_without_losses", "loss, rewards and updated weights match the reference step",
        (("rejected_rewards, losses)", "rejected_rewards)"),)),
    Bug("dpo_step", "no_grad_norm_returned", "loss, rewards and updated weights match the reference step",
        (('return {**metrics, "grad_norm": float(grad_norm)}', "return metrics"),)),
    # ------------------------------------------------------------------ 6 win_rate
    Bug("win_rate", "ties_as_losses", "'A' / 'B' / 'tie' outcomes", (('"tie": 0.5', '"tie": 0.0'),)),
    Bug("win_rate", "ties_left_out", "ties count half and stay in the denominator",
        (("return sum(scores) / len(scores)", "decided = [s for s in scores if s != 0.5]\n    return sum(decided) / len(decided)"),)),
    Bug("win_rate", "empty_is_zero", "empty list → ValueError",
        (('raise ValueError("win_rate() needs at least one comparison")', "return 0.0"),)),
]


def mutate(source: str, bug: Bug) -> str:
    """The master solution with the bug's edits applied; each edited text must occur exactly once."""
    for old, new in bug.edits:
        count = source.count(old)
        if count != 1:
            raise AssertionError(f"{bug.exercise}/{bug.name}: {old!r} occurs {count} times in the master solution (need 1)")
        source = source.replace(old, new)
    return source


@lru_cache(maxsize=1)
def master_solutions() -> dict[str, str]:
    """``{exercise: the master notebook's exercise cell, solution markers removed}``."""
    import nbformat

    from dpo_lab.course.notebooks import NOTEBOOKS, repo_root
    from dpo_lab.course.student import BEGIN, END, exercise_name

    out = {}
    for name in NOTEBOOKS:
        for cell in nbformat.read(repo_root() / name, as_version=4).cells:
            if "exercise" in cell.metadata.get("tags", []):
                out[exercise_name(cell.source)] = "\n".join(line for line in cell.source.split("\n") if line.strip() not in (BEGIN, END))
    return out


def buggy_source(exercise: str, name: str) -> str:
    """The master solution of `exercise` with bug `name` edited in."""
    bug = next(b for b in BUGS if b.exercise == exercise and b.name == name)
    return mutate(master_solutions()[exercise], bug)
