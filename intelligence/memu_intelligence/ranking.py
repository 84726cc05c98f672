"""Combining ranked result lists (full-text and semantic) into one order.

Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): each list contributes
``1 / (k + rank)`` for every item it holds; scores are summed. It needs no calibration
between ``ts_rank_cd`` values and cosine similarities, which live on different scales.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

RRF_K = 60
#: A hit found only by the vector index must be at least this similar to count
#: (cosine similarity, -1..1); otherwise any question would "match" some memory.
MIN_VECTOR_ONLY_SIMILARITY = 0.5


def fuse(*rankings: Sequence[K], k: int = RRF_K) -> list[tuple[K, float]]:
    """Fuse best-first lists of keys; returns (key, score) best first, ties in first-seen order."""
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two equal-length vectors (0.0 when either is all zeros)."""
    if len(a) != len(b):
        raise ValueError(f"vector lengths differ: {len(a)} != {len(b)}")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
