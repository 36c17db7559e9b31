"""Retraining with ATCON on stored segments: stored clinician labels, an unlabeled pool, the
auto-promotion rule, the registry entry and its file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint, read_meta
from service.jobs import LabeledStream, TrainingHyperParams, TrainingJobSpec
from service.schemas import Label
from service.store import Store
from tests.ops.conftest import T0, add_segment, event_clip, register_model
from worker.handlers import JobFailure, WorkerConfig
from worker.retrain import run_training


@pytest.mark.slow
def test_atcon_retraining_registers_a_child_version_and_follows_the_promotion_rule(
    tiny_checkpoint: Path, store: Store, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    active = register_model(store, tiny_checkpoint)
    for i in range(3):
        clip = event_clip(tmp_path / f"l{i}.mp4", [(1.0 + i, 3.0 + i)], duration_s=6.0)
        add_segment(store, data, "ward", f"lab-{i}", clip, T0 + timedelta(seconds=10 * i), 6.0)
        store.labels.add(
            Label(
                label_id=f"lbl-{i}",
                stream_id="ward",
                label="square",
                created_by="k",
                start=T0 + timedelta(seconds=10 * i + 1 + i),
                end=T0 + timedelta(seconds=10 * i + 3 + i),
            )
        )
    pool = event_clip(tmp_path / "u.mp4", [(2.0, 4.0)], duration_s=6.0)
    add_segment(store, data, "other", "unl-0", pool, T0 + timedelta(hours=1), 6.0)
    spec = TrainingJobSpec(
        streams=[LabeledStream(stream_id="ward")],
        unlabeled_segment_ids=["unl-0"],
        method="atcon_guided_backprop",
        promotion="auto",
        hyperparameters=TrainingHyperParams(
            epochs=1, batch_size=8, sample_fps=1.0, learning_rate=1e-4, val_fraction=0.34
        ),
    )
    config = WorkerConfig(data_dir=data, device="cpu")
    loaded = load_checkpoint(tiny_checkpoint)
    seen: list[float] = []
    result = run_training(store, config, loaded, "job-1", spec, seen.append)

    assert seen == sorted(seen) and seen[-1] >= 0.9  # progress only moves forward
    assert result.parent_version == active.version
    assert result.promoted == (result.metrics.macro_f1 >= result.active_metrics.macro_f1)
    assert result.metrics.frames == result.active_metrics.frames > 0  # the same frames
    registered = store.models.get(result.version)
    assert registered.parent == active.version and registered.training_job_id == "job-1"
    assert registered.metrics["macro_f1"] == pytest.approx(result.metrics.macro_f1)
    assert "active_macro_f1" in registered.metrics
    meta = read_meta(data / registered.path)
    assert meta.version == result.version and meta.parent_version == active.version
    assert meta.training_config["mode"] == "combined"
    # The registry carries the new checkpoint's event thresholds (the viewer's score chart).
    assert {c: (t.on, t.off) for c, t in registered.thresholds.items()} == {
        c: (meta.thresholds_for(c).on, meta.thresholds_for(c).off) for c in meta.classes
    }
    assert store.models.active_version() == (result.version if result.promoted else active.version)


def test_labels_that_the_model_does_not_know_fail_the_job_for_good(
    tiny_checkpoint: Path, store: Store, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    register_model(store, tiny_checkpoint)
    clip = event_clip(tmp_path / "c.mp4", [], duration_s=2.0)
    add_segment(store, data, "ward", "seg-0", clip, T0, 2.0)
    spec = TrainingJobSpec.model_validate(
        {
            "streams": [
                {
                    "stream_id": "ward",
                    "intervals": [
                        {
                            "label": "seizure",
                            "start": T0.isoformat(),
                            "end": (T0 + timedelta(seconds=1)).isoformat(),
                        }
                    ],
                }
            ]
        }
    )
    with pytest.raises(JobFailure) as info:
        run_training(
            store,
            WorkerConfig(data_dir=data, device="cpu"),
            load_checkpoint(tiny_checkpoint),
            "job-2",
            spec,
            lambda _f: None,
        )
    assert info.value.code == "unknown_label" and info.value.permanent
