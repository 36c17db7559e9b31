"""Checkpoints: tensors in safetensors, metadata as JSON in the same file's header.

One ``.safetensors`` file holds the state dict and, under the header key ``vigil``, the JSON
metadata below. Writes are atomic (temporary file in the same folder, fsync, ``os.replace``);
loading never unpickles.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from model.detector import Architecture, build_detector
from model.preprocess import Preprocessing

METADATA_KEY = "vigil"
FORMAT_VERSION = 1


class LabelThresholds(BaseModel):
    """How one label's frame scores become events.

    Hysteresis: an event opens at ``on`` and closes below ``off``. ``min_length_s`` and
    ``merge_gap_s`` override the analysis-wide values for this label (a fall lasts 0.3-1 s: a
    1 s minimum would never let ``falling`` through). ``clamped`` says that the validation rule
    wanted a threshold outside its allowed range and ``on`` sits on the bound. A label that is not
    ``reliable`` (validation AP below the training rule's minimum) is scored but never segmented
    into events: it raises no alert.
    """

    model_config = ConfigDict(extra="forbid")
    on: float = Field(default=0.5, ge=0.0, le=1.0)
    off: float = Field(default=0.4, ge=0.0, le=1.0)
    min_length_s: float | None = Field(default=None, ge=0.0)
    merge_gap_s: float | None = Field(default=None, ge=0.0)
    clamped: Literal["on_min", "on_max"] | None = None
    reliable: bool = True
    val_ap: float | None = Field(default=None, ge=0.0, le=1.0)


class CheckpointMeta(BaseModel):
    """Everything needed to rebuild and trust a detector, stored beside its tensors."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    version: str = Field(
        description="Model version id, unique in a registry (e.g. 'm-20261129-1a2b3c')."
    )
    arch: Architecture
    classes: list[str] = Field(min_length=1)
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    reflect_padding: bool = False
    thresholds: dict[str, LabelThresholds] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    parent_version: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    content_hash: str = Field(
        default="", description="sha256 over tensor names, dtypes, shapes and bytes."
    )

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing this model was trained with."""
        return Preprocessing(input_size=self.input_size, mean=self.mean, std=self.std)

    def thresholds_for(self, label: str) -> LabelThresholds:
        """Thresholds of ``label`` (defaults when the checkpoint does not set them)."""
        return self.thresholds.get(label, LabelThresholds())

    def event_thresholds(self) -> dict[str, LabelThresholds]:
        """Thresholds of the labels that are segmented into events (the reliable ones)."""
        return {c: t for c in self.classes if (t := self.thresholds_for(c)).reliable}


@dataclass(frozen=True)
class LoadedModel:
    """A detector in eval mode with its metadata."""

    model: nn.Module
    meta: CheckpointMeta


class CheckpointError(ValueError):
    """The file is not a Vigil checkpoint, or its content does not match its hash."""


def content_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_atomic(path: str | Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically: a temporary file in the same folder, fsync,
    ``os.replace``, then fsync of the folder. Readers see the old file or the new one, never a
    partial one; a failed write leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; other local users (a separate worker account) must read it.
        # (Not derived from the umask: reading the umask means setting it, which races threads.)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> CheckpointMeta:
    """Write ``model``'s state dict and ``meta`` atomically to ``path``; returns the stored meta
    (with ``content_hash`` filled in)."""
    return save_state(path, model.state_dict(), meta)


def save_state(path: str | Path, state: dict[str, torch.Tensor], meta: CheckpointMeta
               ) -> CheckpointMeta:
    """:func:`save_checkpoint` of a state dict (e.g. one converted to float16 for shipping)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = meta.model_copy(update={"content_hash": content_hash(state)})
    blob = safetensors_save(state, metadata={METADATA_KEY: meta.model_dump_json()})
    write_atomic(path, blob)
    return meta


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (cheap: the header, not the tensors)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        # SafetensorError derives from Exception only (not OSError): a pickle or any other
        # non-safetensors file lands here and is never unpickled.
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path}: no Vigil metadata in the header")
    try:
        return CheckpointMeta.model_validate_json(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: invalid Vigil metadata ({exc})") from exc


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True
) -> LoadedModel:
    """Rebuild the detector stored at ``path`` (eval mode, on ``device``)."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    state = load_file(str(path))
    if verify and meta.content_hash and content_hash(state) != meta.content_hash:
        raise CheckpointError(f"{path}: tensor content does not match its recorded hash")
    model = build_detector(meta.arch, len(meta.classes), reflect_padding=meta.reflect_padding,
                           input_size=meta.input_size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: tensors do not fit {meta.arch} with {len(meta.classes)} classes"
        ) from exc
    model.eval().to(device)
    return LoadedModel(model=model, meta=meta)


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique model version id such as ``m-20261129T181500-3f2a9c``."""
    now = now or datetime.now(UTC)
    return f"m-{now:%Y%m%dT%H%M%S}-{os.urandom(3).hex()}"
