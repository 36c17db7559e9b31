"""Shared pieces of the store: the client type, opaque cursors and a keyset scan over a ZSET."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import redis

from service.keys import Keys

T = TypeVar("T")
Client = redis.Redis
"""A redis-py client created with ``decode_responses=True``."""

SCAN_BATCH = 200


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not produce (or for another listing)."""


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the last returned item's sort score and member, in listing ``kind``."""

    kind: str
    score: float
    member: str

    def encode(self) -> str:
        """Opaque URL-safe string."""
        raw = json.dumps([self.kind, repr(self.score), self.member], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, kind: str) -> Cursor:
        """Parse ``text``; raises :class:`InvalidCursor` if it is malformed or of another kind."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            got_kind, score, member = json.loads(raw)
            cursor = cls(kind=str(got_kind), score=float(score), member=str(member))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidCursor("malformed cursor") from exc
        if cursor.kind != kind:
            raise InvalidCursor("cursor belongs to another listing")
        return cursor


@dataclass
class Repo:
    """Base of the store's repositories: a client and the key names."""

    r: Client
    keys: Keys


def scan_zset(
    client: Client,
    key: str,
    *,
    low: str,
    high: str,
    after: Cursor | None,
    reverse: bool = False,
) -> Iterator[tuple[str, float]]:
    """Members of ``key`` with scores in ``[low, high]`` (Redis range syntax), in order,
    strictly after ``after`` in (score, member) order; fetched in batches.

    Within one score Redis orders members lexicographically, so (score, member) is a total
    order and a keyset cursor resumes exactly where the previous page ended.
    """
    if after is not None:
        bound = repr(after.score)
        low, high = (low, bound) if reverse else (bound, high)
    offset = 0
    while True:
        if reverse:
            batch = client.zrevrangebyscore(
                key, high, low, start=offset, num=SCAN_BATCH, withscores=True
            )
        else:
            batch = client.zrangebyscore(
                key, low, high, start=offset, num=SCAN_BATCH, withscores=True
            )
        for member, score in batch:
            if after is not None and not _beyond(score, member, after, reverse):
                continue
            yield member, score
        if len(batch) < SCAN_BATCH:
            return
        offset += SCAN_BATCH


def _beyond(score: float, member: str, after: Cursor, reverse: bool) -> bool:
    if reverse:
        return (score, member) < (after.score, after.member)
    return (score, member) > (after.score, after.member)


def paginate(
    items: Iterator[tuple[str, float]],
    load: Callable[[list[str]], list[T | None]],
    keep: Callable[[T], bool],
    *,
    limit: int,
    kind: str,
) -> tuple[list[T], str | None]:
    """Load members in batches, keep those passing ``keep``, stop after ``limit``.

    Returns the page and the cursor of its last item when more items may follow.
    """
    page: list[T] = []
    positions: list[tuple[float, str]] = []
    pending: list[tuple[str, float]] = []

    def flush() -> bool:
        loaded = load([m for m, _ in pending])
        for (member, score), item in zip(pending, loaded, strict=True):
            if item is not None and keep(item):
                page.append(item)
                positions.append((score, member))
                if len(page) > limit:
                    return True
        pending.clear()
        return False

    for pair in items:
        pending.append(pair)
        if len(pending) >= SCAN_BATCH and flush():
            break
    else:
        flush()
    if len(page) > limit:
        score, member = positions[limit - 1]
        return page[:limit], Cursor(kind, score, member).encode()
    return page, None
