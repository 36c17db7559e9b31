"""Helpers (no tests): a snapshot of everything an attribution call must leave untouched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals


@dataclass(frozen=True)
class ModelState:
    training: tuple[bool, ...]
    requires_grad: tuple[bool, ...]
    module_ids: tuple[int, ...]
    hook_counts: tuple[int, ...]
    global_hooks: tuple[int, ...]
    params: tuple[torch.Tensor, ...]
    grads: tuple[object, ...]
    instance_attrs: tuple[tuple[str, ...], ...]  # e.g. a patched ``forward`` left behind


def _hook_counts(model: nn.Module) -> tuple[int, ...]:
    counts = []
    for m in model.modules():
        counts += [len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))]
    return tuple(counts)


def _global_hooks() -> tuple[int, ...]:
    names = ["_global_forward_hooks", "_global_backward_hooks", "_global_forward_pre_hooks",
             "_global_backward_pre_hooks"]
    return tuple(len(getattr(module_globals, n, {})) for n in names)


def snapshot(model: nn.Module) -> ModelState:
    """Record the model; buffers are left out because a train-mode forward updates BN stats."""
    return ModelState(
        training=tuple(m.training for m in model.modules()),
        requires_grad=tuple(p.requires_grad for p in model.parameters()),
        module_ids=tuple(id(m) for m in model.modules()),
        hook_counts=_hook_counts(model),
        global_hooks=_global_hooks(),
        params=tuple(p.detach().clone() for p in model.parameters()),  # buffers: see note
        grads=tuple(None if p.grad is None else p.grad.clone() for p in model.parameters()),
        instance_attrs=tuple(tuple(sorted(m.__dict__)) for m in model.modules()),
    )


def assert_unchanged(model: nn.Module, before: ModelState) -> None:
    after = snapshot(model)
    assert after.training == before.training
    assert after.requires_grad == before.requires_grad
    assert after.module_ids == before.module_ids
    assert after.hook_counts == before.hook_counts
    assert after.global_hooks == before.global_hooks
    assert all(torch.equal(a, b) for a, b in zip(after.params, before.params, strict=True))
    assert [g is None for g in after.grads] == [g is None for g in before.grads]
    assert after.instance_attrs == before.instance_attrs


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one intra-op thread: on a shared, oversubscribed 2-core machine OpenMP's
    two-thread barriers make small convolutions ~20x slower than a single thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
