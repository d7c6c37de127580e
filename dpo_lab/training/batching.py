"""Turning tokenized examples into batches: shuffled, length-bucketed, reproducible.

Bucketing puts sequences of similar length in the same batch, so less compute goes to padding.
The order is a pure function of (seed, epoch), so a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import random
from typing import Any, Callable


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


def batch_stream(
    examples: list[dict[str, Any]],
    batch_size: int,
    collate: Callable,
    *,
    seed: int,
    shuffle: bool = True,
    bucket: bool = True,
    start_batch: int = 0,
    shard: tuple[int, int] = (0, 1),
):
    """Endless stream of collated batches, epoch after epoch.

    ``start_batch`` skips that many batches of the global order (resume); ``shard=(rank, world)`` keeps
    every world-th batch, so each of several processes trains on different data.
    """
    if not examples:
        raise ValueError("no training examples: check the data stage's output (01_data) and max_pairs")
    rank, world = shard
    epoch, produced = 0, 0
    while True:
        for idx in batch_indices(examples, batch_size, seed=seed, epoch=epoch, shuffle=shuffle, bucket=bucket):
            if produced >= start_batch and produced % world == rank:
                yield collate([examples[i] for i in idx])
            produced += 1
        epoch += 1


def visited_indices(
    examples: list[dict[str, Any]],
    batch_size: int,
    n_batches: int,
    *,
    seed: int,
    shuffle: bool = True,
    bucket: bool = True,
) -> list[int]:
    """The example indices that the first `n_batches` batches of :func:`batch_stream` will contain, in the
    order they are first met (so a cache computed in this order sees the same batches as training)."""
    seen: dict[int, None] = {}
    produced, epoch = 0, 0
    while produced < n_batches and examples:
        for idx in batch_indices(examples, batch_size, seed=seed, epoch=epoch, shuffle=shuffle, bucket=bucket):
            if produced >= n_batches:
                break
            seen.update(dict.fromkeys(idx))
            produced += 1
        epoch += 1
    return list(seen)
