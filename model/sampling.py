"""The step schedule of a training epoch: which kind of batch each step takes, and the batches.

The alternating rule is the ATCON reference's: each step takes a labeled batch with probability
``alpha*S / (alpha*S + U)`` (S labeled, U unlabeled frames), else an unlabeled batch; an epoch has
``alpha*S/b + U/u`` steps (b, u the batch sizes).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # only attributes are read; importing model.train here would be circular
    from model.train import TrainConfig

StepKind = Literal["labeled", "unlabeled", "combined"]
_MODE_KIND: dict[str, StepKind] = {
    "supervised": "labeled", "unsupervised": "unlabeled", "combined": "combined",
}


def steps_per_epoch(config: TrainConfig, n_labeled: int, n_unlabeled: int) -> int:
    """Steps in one epoch for ``config.mode`` (``steps_per_epoch`` overrides the rule)."""
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    b, u = config.batch_size, config.unlabeled_batch_size
    rule = {
        "supervised": n_labeled / b,
        "unsupervised": n_unlabeled / u,
        "alternating": config.alpha * n_labeled / b + n_unlabeled / u,
        "combined": max(n_labeled / b, n_unlabeled / u),
    }[config.mode]
    return max(1, math.ceil(rule))


def step_kinds(config: TrainConfig, n_labeled: int, n_unlabeled: int,
               gen: torch.Generator) -> list[StepKind]:
    """The kind of every step of one epoch (random only in ``alternating`` mode)."""
    n = steps_per_epoch(config, n_labeled, n_unlabeled)
    if config.mode == "alternating":
        weight = config.alpha * n_labeled
        p_labeled = weight / (weight + n_unlabeled)
        coins = torch.rand(n, generator=gen) < p_labeled
        return ["labeled" if c else "unlabeled" for c in coins.tolist()]
    kind: StepKind = _MODE_KIND[config.mode]
    return [kind] * n


class BatchCycler:
    """Index batches from successive seeded random permutations of ``range(n)``."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, min(batch_size, n), gen
        self._order = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        """``(batch_size,) int64`` indices; every index appears once per permutation."""
        while self._order.numel() < self.batch_size:
            self._order = torch.cat([self._order, torch.randperm(self.n, generator=self.gen)])
        batch, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return batch


__all__ = ["BatchCycler", "StepKind", "step_kinds", "steps_per_epoch"]
