"""The resumable training state: one safetensors file, JSON header, no pickle.

``last.safetensors`` in a training run's folder holds, after every epoch:

- ``model.<name>``: the model's state dict (BatchNorm buffers included);
- ``optim.<param index>.<key>``: Adam's per-parameter tensors (``step``, ``exp_avg``, ...);
- ``rng.torch_cpu``: the global CPU generator state;
- header ``vigil_train_state``: :class:`TrainingState` as JSON (epochs done, the run's model
  version, best epoch and mAP, the history of :class:`EpochMetrics`, the training config and the
  optimizer's ``param_groups``).

It is written atomically, so an interrupted run resumes from the last completed epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from model.checkpoint import write_atomic

STATE_KEY = "vigil_train_state"


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or ``None`` when it is missing or not finite (JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


class EpochMetrics(BaseModel):
    """What one epoch did and how the model scored on the validation set afterwards.

    Losses are means over the epoch's steps of that kind (``None`` when the epoch had none);
    ``None`` elsewhere means undefined (e.g. mAP without any positive validation target).
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(description="1-based epoch number.")
    labeled_steps: int = 0
    unlabeled_steps: int = 0
    train_bce: float | None = None
    train_consistency: float | None = None
    val_bce: float | None = None
    val_consistency: float | None = None
    val_map: float | None = None
    val_macro_f1: float | None = None
    val_ap: dict[str, float | None] = Field(default_factory=dict)
    val_f1: dict[str, float] = Field(default_factory=dict)
    seconds: float = 0.0


class TrainingState(BaseModel):
    """Everything besides tensors that a resumed run needs."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    epoch: int = Field(default=0, description="Epochs completed.")
    version: str = Field(description="Model version id of this run's best checkpoint.")
    parent_version: str | None = None
    best_epoch: int | None = None
    best_map: float | None = None
    history: list[EpochMetrics] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    param_groups: list[dict[str, Any]] = Field(default_factory=list)
    optimizer_scalars: dict[str, Any] = Field(
        default_factory=dict, description="Non-tensor optimizer state values, by tensor-key."
    )


class TrainingStateError(ValueError):
    """The training state file is unreadable or does not fit the current run."""


def save_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> None:
    """Write model, optimizer, RNG and ``state`` to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    optim = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, per_param in optim["state"].items():
        for key, value in per_param.items():
            name = f"optim.{index}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    state = state.model_copy(
        update={"param_groups": optim["param_groups"], "optimizer_scalars": scalars}
    )
    write_atomic(path, safetensors_save(tensors, metadata={STATE_KEY: state.model_dump_json()}))


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> TrainingState:
    """Restore model, optimizer and the global CPU RNG from ``path``; returns the JSON state."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(STATE_KEY)
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise TrainingStateError(f"{path}: not a safetensors file ({exc})") from exc
    if raw is None:
        raise TrainingStateError(f"{path}: not a Vigil training state")
    state = TrainingState.model_validate_json(raw)
    device = next(model.parameters()).device
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict({k: v.to(device) for k, v in model_state.items()}, strict=True)
    per_param: dict[int, dict[str, Any]] = {}
    items = [(k, v) for k, v in tensors.items() if k.startswith("optim.")]
    items += list(state.optimizer_scalars.items())
    for name, value in items:
        _, index, key = name.split(".", 2)
        per_param.setdefault(int(index), {})[key] = value
    # Optimizer.load_state_dict moves the moment tensors to each parameter's device.
    optimizer.load_state_dict({"state": per_param, "param_groups": state.param_groups})
    torch.set_rng_state(tensors["rng.torch_cpu"])
    return state


__all__ = [
    "EpochMetrics",
    "TrainingState",
    "TrainingStateError",
    "finite_or_none",
    "load_training_state",
    "save_training_state",
]
