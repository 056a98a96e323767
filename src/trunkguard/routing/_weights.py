"""Spreading calls by weight: a weighted random order, one draw per place."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def weighted_order(items: Sequence[T], weight: Callable[[T], int], rng: random.Random) -> list[T]:
    """``items`` in a random order where each next place goes by weight among those left.

    Items of weight 0 come last (in their given order) while others have weight.
    """
    if len(items) < 2:
        return list(items)
    pool = list(items)
    out: list[T] = []
    while pool:
        total = sum(max(weight(m), 0) for m in pool)
        if total <= 0:
            return out + pool
        pick = rng.uniform(0, total)
        for i, m in enumerate(pool):
            pick -= max(weight(m), 0)
            if pick <= 0:
                out.append(pool.pop(i))
                break
        else:
            out.append(pool.pop())
    return out
