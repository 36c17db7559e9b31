"""Redis outages: which errors mean "the store is unavailable, try again later", and the capped,
jittered exponential backoff the workers (and the worker supervisor of ``vigil serve``) wait
with before they try again.

"Unavailable" covers a lost or refused connection, a timeout, a server still loading its data
after a restart (``LOADING``), a server out of memory under ``noeviction`` (``OOM``: writes are
refused until memory is freed), a read-only replica after a failover (``READONLY``) and the
like. The API answers these with 503 + ``Retry-After`` (``service.errors``); workers wait and
reconnect (``worker.consumer``). Nothing here imports torch.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import redis

# Error codes (the first word of a Redis error reply) of a server that works again later.
_TRANSIENT_CODES = (
    "OOM",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "BUSY",
    "MISCONF",
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError (LOADING) and refused connections
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


def is_store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot serve this request now but may later."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, redis.exceptions.ExecAbortError):  # MULTI refused: why, is the cause
        cause = exc.__cause__ or exc.__context__
        return cause is not None and cause is not exc and is_store_unavailable(cause)
    if isinstance(exc, redis.ResponseError):
        words = str(exc).split(maxsplit=1)
        return bool(words) and words[0] in _TRANSIENT_CODES
    return False


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write because ``maxmemory`` is reached."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")
    )


class Backoff:
    """Capped exponential backoff with jitter: ``base_s * 2**n`` capped at ``max_s``, each delay
    drawn uniformly from its upper half (so that workers that lost Redis together do not come
    back in lockstep, and no delay is close to zero).

    Usage::

        backoff = Backoff(0.5, 30.0)
        delay = backoff.next_delay()   # 0.25-0.5, 0.5-1, 1-2, ... 15-30, 15-30, ...
        backoff.reset()                # after a success
    """

    def __init__(
        self, base_s: float = 0.5, max_s: float = 30.0, *, rng: Callable[[], float] = random.random
    ) -> None:
        if base_s <= 0 or max_s < base_s:
            raise ValueError(f"bad backoff: base {base_s}, max {max_s}")
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The delay before the next try (and count one more failure)."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(self.failures, 62))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        """Forget the failures (the next delay is the shortest again)."""
        self.failures = 0
