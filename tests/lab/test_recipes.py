"""Recipes: a checkpoint trained once, cached by the recipe's hash, with per-class thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.recipes import DEFAULT_RECIPE, CorpusSpec, Recipe, ensure_recipe, run_recipe
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
    assert DEFAULT_RECIPE.classes == ("person_present", "multiple_people", "falling", "fallen")


def test_run_recipe_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe"):
        run_recipe("nope", tmp_path)
