"""Recipes: a checkpoint trained once, cached by the recipe's hash, with per-class thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.recipes import GENERATED_RECIPE, CorpusSpec, Recipe, ensure_recipe, run_recipe
from model.checkpoint import load_checkpoint

TINY = Recipe(
    name="tiny",
    version=1,
    classes=("person_present", "fallen"),
    train=CorpusSpec(rooms=1, clips_per_room=1, room_offset=0, duration_s=4.0, fps=2.0),
    val=CorpusSpec(rooms=1, clips_per_room=1, room_offset=900, duration_s=4.0, fps=2.0),
    test=CorpusSpec(rooms=1, clips_per_room=1, room_offset=950, duration_s=4.0, fps=2.0),
    train_config={
        "arch": "resnet18",
        "input_size": 32,
        "mode": "supervised",
        "lr": 1e-3,
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 4,
        "freeze_bn": False,
        "val_consistency_frames": 0,
    },
)


def test_recipe_trains_once_and_is_cached(tmp_path: Path) -> None:
    path = ensure_recipe(TINY, tmp_path, progress=False)
    assert path.name == f"tiny-{TINY.digest()}.safetensors"
    stamp = path.stat().st_mtime_ns
    loaded = load_checkpoint(path)
    assert loaded.meta.classes == ["person_present", "fallen"]
    assert set(loaded.meta.thresholds) == {"person_present", "fallen"}
    assert loaded.meta.input_size == 32
    assert ensure_recipe(TINY, tmp_path, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # served from the cache, not retrained
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".train-")]


def test_recipe_hash_changes_with_the_recipe() -> None:
    other = TINY.model_copy(update={"train_config": {**TINY.train_config, "lr": 2e-3}})
    assert other.digest() != TINY.digest()
    assert GENERATED_RECIPE.classes == ("person_present", "multiple_people", "falling", "fallen")


def test_run_recipe_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe"):
        run_recipe("nope", tmp_path)


def test_fp16_export_loads_and_keeps_the_outputs(tmp_path: Path) -> None:
    import torch

    from lab.real_recipe import export_fp16
    from model.checkpoint import CheckpointMeta, read_meta, save_checkpoint
    from model.detector import build_detector, preprocessing_for

    torch.manual_seed(0)
    model = build_detector("efficientnet_lite0", 4, weights="IMAGENET1K", input_size=64).eval()
    prep = preprocessing_for("efficientnet_lite0", 64)
    meta = CheckpointMeta(version="m-x", arch="efficientnet_lite0", classes=list("abcd"),
                          input_size=64, mean=prep.mean, std=prep.std)
    save_checkpoint(tmp_path / "full.safetensors", model, meta)
    out = export_fp16(tmp_path / "full.safetensors", tmp_path / "half.safetensors",
                      version="default-test", sources={"generated": "rooms"})
    assert out.stat().st_size < 0.55 * (tmp_path / "full.safetensors").stat().st_size
    assert read_meta(out).metrics["data_sources"] == {"generated": "rooms"}
    loaded = load_checkpoint(out)  # the content hash of the fp16 tensors is verified
    assert loaded.meta.version == "default-test"
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0.02, atol=0.02)


def test_default_detector_is_the_shipped_file_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lab.recipes as recipes

    shipped = tmp_path / "weights" / "default-detector.safetensors"
    monkeypatch.setattr(recipes, "SHIPPED_DETECTOR", shipped)
    trained: list[object] = []
    monkeypatch.setattr(recipes, "ensure_recipe", lambda *a, **k: trained.append(a) or "fallback")
    assert recipes.ensure_default_detector(tmp_path) == "fallback" and trained
    shipped.parent.mkdir()
    shipped.write_bytes(b"x")
    assert recipes.ensure_default_detector(tmp_path) == shipped
