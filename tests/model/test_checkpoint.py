"""Checkpoints: round trip, atomic writes, content hash, never unpickling."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    LabelThresholds,
    load_checkpoint,
    new_version_id,
    read_meta,
    save_checkpoint,
    write_atomic,
)
from model.detector import build_detector


def _meta(**update: object) -> CheckpointMeta:
    fields: dict[str, object] = {
        "version": new_version_id(), "arch": "resnet18", "classes": ["a", "b", "c"],
        "input_size": 64, "reflect_padding": True,
        "thresholds": {"a": LabelThresholds(on=0.7, off=0.6)},
        "training_config": {"lr": 1e-4}, "metrics": {"val_map": 0.5}, "parent_version": "m-p",
    }
    fields.update(update)
    return CheckpointMeta.model_validate(fields)


@pytest.fixture(scope="module")
def trained_like() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_detector("resnet18", 3, reflect_padding=True)
    # Non-default BN statistics, as after training, so the buffers are part of the round trip.
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path: Path, trained_like: torch.nn.Module) -> None:
    path = tmp_path / "m.safetensors"
    stored = save_checkpoint(path, trained_like, _meta())
    assert len(stored.content_hash) == 64
    loaded = load_checkpoint(path)
    assert loaded.meta == stored
    assert not loaded.model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), trained_like(x))
    assert read_meta(path) == stored
    assert loaded.meta.thresholds_for("a").on == 0.7
    assert loaded.meta.thresholds_for("b") == LabelThresholds()
    assert loaded.meta.preprocessing.input_size == 64


def test_atomic_write_leaves_no_temporary_file(
    tmp_path: Path, trained_like: torch.nn.Module
) -> None:
    path = tmp_path / "sub" / "m.safetensors"
    save_checkpoint(path, trained_like, _meta())
    save_checkpoint(path, trained_like, _meta())  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]
    assert path.stat().st_mode & 0o044  # readable by a separate worker account


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    write_atomic(path, b"old")

    with pytest.raises(TypeError):
        write_atomic(path, object())  # type: ignore[arg-type]  # write() fails mid-way
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["blob.bin"]


def test_hash_mismatch_is_detected(tmp_path: Path, trained_like: torch.nn.Module) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, trained_like, _meta())
    # Flip one weight in the file's data section while leaving the header (and hash) alone.
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    start, _ = header["fc.weight"]["data_offsets"]
    position = 8 + header_len + start
    raw[position] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its recorded hash"):
        load_checkpoint(path)
    load_checkpoint(path, verify=False)  # explicitly skipping the check still loads


def test_a_pickle_file_is_rejected_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (marker,))

    path = tmp_path / "m.safetensors"
    torch.save({"weights": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        read_meta(path)
    assert not marker.exists()


def test_a_safetensors_file_without_vigil_metadata_is_rejected(
    tmp_path: Path, trained_like: torch.nn.Module
) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in trained_like.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="no Vigil metadata"):
        load_checkpoint(path)
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad), metadata={"vigil": json.dumps({"arch": "vgg"})})
    with pytest.raises(CheckpointError, match="invalid Vigil metadata"):
        read_meta(bad)


def test_tensors_that_do_not_fit_the_metadata_are_rejected(
    tmp_path: Path, trained_like: torch.nn.Module
) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, trained_like, _meta(classes=["a", "b"]))  # head has 3 outputs
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_version_ids_are_unique_and_sortable() -> None:
    ids = [new_version_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(i.startswith("m-") for i in ids)
