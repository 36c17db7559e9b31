"""Paired differences over seeds with a Student-t 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel


class PairedDiff(BaseModel):
    """``method - baseline`` of one metric over seeds (same seed = same data and start)."""

    per_seed: list[float]
    mean: float | None
    sd: float | None
    ci95: tuple[float | None, float | None]
    n: int


def paired_diff(method: Sequence[float | None], baseline: Sequence[float | None]) -> PairedDiff:
    """Differences of paired values (pairs with a missing side are dropped) and the t-interval
    ``mean ± t(0.975, n-1) · sd / sqrt(n)``; the interval is ``[None, None]`` below two pairs."""
    from scipy.stats import t as student_t

    if len(method) != len(baseline):
        raise ValueError("method and baseline need one value per seed each")
    diffs = [
        m - b
        for m, b in zip(method, baseline, strict=True)
        if m is not None and b is not None and math.isfinite(m) and math.isfinite(b)
    ]
    n = len(diffs)
    if n == 0:
        return PairedDiff(per_seed=[], mean=None, sd=None, ci95=(None, None), n=0)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDiff(per_seed=diffs, mean=mean, sd=None, ci95=(None, None), n=n)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return PairedDiff(per_seed=diffs, mean=mean, sd=sd, ci95=(mean - half, mean + half), n=n)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values, ``None`` when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
