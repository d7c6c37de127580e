"""Turning tokenized examples into batches: shuffled, length-bucketed, reproducible.

Bucketing puts sequences of similar length in the same batch, so less compute goes to padding.
The order is a pure function of (seed, epoch), so a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


def _length(ex: dict[str, Any]) -> int:
    return len(ex.get("prompt_ids", ())) + max(
        len(ex.get(k, ())) for k in ("chosen_ids", "rejected_ids", "response_ids") if k in ex
    )


def batch_indices(
    examples: list[dict[str, Any]], batch_size: int, *, seed: int, epoch: int, shuffle: bool = True, bucket: bool = True
) -> list[list[int]]:
    """Index lists, one per batch, for one pass over `examples`.

    ``shuffle=False, bucket=False`` gives plain sequential batches (what TRL's "sequential" sampler does).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(examples)))
    rng = random.Random(f"{seed}-{epoch}")
    if shuffle:
        rng.shuffle(order)
    if bucket:  # sort inside windows of 50 batches, then shuffle the batches themselves
        window = batch_size * 50
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lambda i: _length(examples[i]))
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if bucket and shuffle:
        rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class BatchPlan:
    """The loop's batch order, epoch after epoch: which examples each micro-batch holds.

    The training stream and anything prepared ahead for those very batches (the reference log-prob cache)
    read this one plan — built by :meth:`dpo_lab.training.loop_args.LoopArgs.batch_plan` —, so they cannot
    drift apart. ``world`` processes take every ``world``-th batch of the one global order.
    """

    batch_size: int
    seed: int
    shuffle: bool = True
    bucket: bool = True
    world: int = 1

    def batches(self, examples: list[dict[str, Any]], *, start_batch: int = 0, rank: int = 0) -> Iterator[list[int]]:
        """Endless index lists for process ``rank``; ``start_batch`` skips that many batches of the global order
        (resume)."""
        for produced, idx in enumerate(self._global_order(examples)):
            if produced >= start_batch and produced % self.world == rank:
                yield idx

    def _global_order(self, examples: list[dict[str, Any]]) -> Iterator[list[int]]:
        """Every process's batches, in the one order they are dealt out from."""
        if not examples:
            raise ValueError("no training examples: check the data stage's output (01_data) and max_pairs")
        epoch = 0
        while True:
            yield from batch_indices(
                examples, self.batch_size, seed=self.seed, epoch=epoch, shuffle=self.shuffle, bucket=self.bucket
            )
            epoch += 1

    def first_visits(self, examples: list[dict[str, Any]], n_batches: int) -> list[int]:
        """The example indices the first ``n_batches`` global batches (all processes') contain, in the order they are
        first met (a cache computed in this order sees the same batches as training)."""
        seen: dict[int, None] = {}
        if examples and n_batches > 0:
            for produced, idx in enumerate(self._global_order(examples)):
                if produced >= n_batches:
                    break
                seen.update(dict.fromkeys(idx))
        return list(seen)


def batch_stream(
    examples: list[dict[str, Any]], plan: BatchPlan, collate: Callable, *, start_batch: int = 0, rank: int = 0
) -> Iterator[Any]:
    """Endless stream of collated batches in ``plan``'s order (see :meth:`BatchPlan.batches`)."""
    for idx in plan.batches(examples, start_batch=start_batch, rank=rank):
        yield collate([examples[i] for i in idx])
