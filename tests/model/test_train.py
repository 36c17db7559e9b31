"""Trainer: losses go down, exact checkpoint reload, sampling rule, frozen BN, determinism, resume.

Tiny sizes throughout (64x64 generated frames, resnet18, a handful of steps): the point is the
trainer's behaviour, not the accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint, read_meta
from model.data import FrameSet, generated_frameset
from model.evaluate import evaluate
from model.thresholds import event_thresholds
from model.train import (
    BatchCycler,
    TrainConfig,
    TrainResult,
    set_train_mode,
    step_kinds,
    steps_per_epoch,
    train,
)
from model.train_state import TrainingStateError

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def data() -> dict[str, FrameSet]:
    return {
        "labeled": generated_frameset(32, seed=11),
        "unlabeled": generated_frameset(32, seed=12).unlabeled(),
        "val": generated_frameset(24, seed=13),
    }


def _config(**update: object) -> TrainConfig:
    fields: dict[str, object] = {
        "classes": CLASSES, "input_size": 64, "batch_size": 8, "unlabeled_batch_size": 8,
        "eval_batch_size": 24, "val_consistency_frames": 24, "seed": 3,
    }
    fields.update(update)
    return TrainConfig.model_validate(fields)


@pytest.fixture(scope="module")
def baseline(data: dict[str, FrameSet], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A supervised model trained from scratch (BN training): the start of the ATCON runs."""
    config = _config(mode="supervised", freeze_bn=False, lr=1e-3, epochs=2, steps_per_epoch=6)
    return train(config, data["labeled"], None, data["val"],
                 out_dir=tmp_path_factory.mktemp("baseline"), progress=False)


def _atcon_config(baseline: TrainResult, **update: object) -> TrainConfig:
    fields: dict[str, object] = {
        "mode": "alternating", "lr": 1e-4, "epochs": 2, "steps_per_epoch": 3,
        "init_weights": str(baseline.best_checkpoint),
    }
    fields.update(update)
    return _config(**fields)


@pytest.fixture(scope="module")
def reference_run(
    baseline: TrainResult, data: dict[str, FrameSet], tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    """Two alternating epochs from the baseline, uninterrupted (the determinism reference)."""
    return train(_atcon_config(baseline), data["labeled"], data["unlabeled"], data["val"],
                 out_dir=tmp_path_factory.mktemp("reference"), progress=False)


def _last_weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(result.last_state)).items() if k.startswith("model.")}


def test_supervised_training_lowers_the_loss(baseline: TrainResult) -> None:
    first, last = baseline.history[0], baseline.history[-1]
    assert last.train_bce < 0.9 * first.train_bce
    assert first.labeled_steps == 6 and first.unlabeled_steps == 0
    assert first.train_consistency is None


def test_combined_training_lowers_both_losses(
    baseline: TrainResult, data: dict[str, FrameSet], tmp_path: Path
) -> None:
    config = _atcon_config(baseline, mode="combined", lr=3e-4, epochs=3, steps_per_epoch=4)
    result = train(config, data["labeled"], data["unlabeled"], data["val"], out_dir=tmp_path,
                   progress=False)
    first, last = result.history[0], result.history[-1]
    assert first.labeled_steps == first.unlabeled_steps == 4
    assert last.train_bce < first.train_bce
    assert last.train_consistency < first.train_consistency
    # ... and on held-out frames: more consistent maps than the model it started from
    start = baseline.history[baseline.best_epoch - 1]
    assert last.val_consistency < start.val_consistency


def test_best_checkpoint_reloads_to_identical_outputs(
    reference_run: TrainResult, baseline: TrainResult, data: dict[str, FrameSet]
) -> None:
    loaded = load_checkpoint(reference_run.best_checkpoint)
    meta = loaded.meta
    assert meta == read_meta(reference_run.best_checkpoint) == reference_run.meta
    assert meta.classes == CLASSES and meta.arch == "resnet18" and meta.input_size == 64
    assert meta.parent_version == baseline.meta.version
    assert meta.training_config["mode"] == "alternating"
    assert set(meta.thresholds) == set(CLASSES)
    assert all(0 <= t.off <= t.on <= 1 for t in meta.thresholds.values())
    assert meta.metrics["best_epoch"] == reference_run.best_epoch
    assert 0.0 <= meta.metrics["val_mean_iou"] <= 1.0  # the val set has boxes
    # The reloaded model scores the validation set exactly as the model did when it was saved.
    metrics, probs = evaluate(loaded.model, data["val"], meta.preprocessing, batch_size=24)
    # Event thresholds follow the robust rule on the best model's validation scores.
    config = TrainConfig.model_validate(meta.training_config)
    assert meta.thresholds == event_thresholds(probs, data["val"].targets, CLASSES,
                                               config.threshold_rule)
    assert all(0.2 <= t.on <= 0.9 and t.off == pytest.approx(0.8 * t.on)
               for t in meta.thresholds.values())
    recorded = reference_run.history[reference_run.best_epoch - 1]
    assert metrics.val_bce == pytest.approx(recorded.val_bce, rel=1e-6)
    assert metrics.val_map == pytest.approx(recorded.val_map, rel=1e-6)
    if reference_run.best_epoch == len(reference_run.history):  # best is also the last state
        weights = _last_weights(reference_run)
        for name, tensor in loaded.model.state_dict().items():
            assert torch.equal(tensor, weights[f"model.{name}"]), name


def test_frozen_batch_norm_keeps_its_statistics(
    reference_run: TrainResult, baseline: TrainResult
) -> None:
    start = load_file(str(baseline.best_checkpoint))
    weights = _last_weights(reference_run)
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats
    for name in stats:
        assert torch.equal(weights[f"model.{name}"], start[name]), name
    # The baseline trained its BN statistics (they left the init values 0 / 1).
    assert not torch.equal(start["bn1.running_mean"], torch.zeros_like(start["bn1.running_mean"]))
    # ... while the affine parameters do train under freezing.
    assert not torch.equal(weights["model.bn1.weight"], start["bn1.weight"])


def test_set_train_mode_freezes_only_batch_norm() -> None:
    from model.detector import build_detector

    model = build_detector("resnet18", 2)
    set_train_mode(model, freeze_bn=True)
    assert model.training and model.layer1.training
    assert not model.bn1.training and not model.layer4[-1].bn2.training
    set_train_mode(model, freeze_bn=False)
    assert model.bn1.training


def test_same_seed_gives_identical_weights(
    reference_run: TrainResult, baseline: TrainResult, data: dict[str, FrameSet], tmp_path: Path
) -> None:
    again = train(_atcon_config(baseline), data["labeled"], data["unlabeled"], data["val"],
                  out_dir=tmp_path, progress=False)
    reference = _last_weights(reference_run)
    for name, tensor in _last_weights(again).items():
        assert torch.equal(tensor, reference[name]), name
    assert [m.val_map for m in again.history] == [m.val_map for m in reference_run.history]


def test_resume_after_interruption_equals_an_uninterrupted_run(
    reference_run: TrainResult, baseline: TrainResult, data: dict[str, FrameSet], tmp_path: Path
) -> None:
    class Interrupt(Exception):
        pass

    def stop(_metrics: object) -> None:
        raise Interrupt

    config = _atcon_config(baseline)
    with pytest.raises(Interrupt):
        train(config, data["labeled"], data["unlabeled"], data["val"], out_dir=tmp_path,
              progress=False, on_epoch=stop)
    assert not list(tmp_path.glob(".*.tmp"))
    seen: list[int] = []
    fractions: list[float] = []
    resumed = train(config, data["labeled"], data["unlabeled"], data["val"], out_dir=tmp_path,
                    progress=False, on_epoch=lambda m: seen.append(m.epoch),
                    on_progress=fractions.append)
    assert seen == [2]  # only the epoch that was missing ran
    assert fractions == [pytest.approx(f) for f in (4 / 6, 5 / 6, 1.0)]
    reference = _last_weights(reference_run)
    for name, tensor in _last_weights(resumed).items():
        assert torch.equal(tensor, reference[name]), name
    assert [m.train_bce for m in resumed.history] == [m.train_bce for m in reference_run.history]
    assert resumed.meta.version == read_meta(tmp_path / "best.safetensors").version
    # A changed config does not silently continue someone else's run.
    with pytest.raises(TrainingStateError, match="lr"):
        train(config.model_copy(update={"lr": 1e-3, "epochs": 3}), data["labeled"],
              data["unlabeled"], data["val"], out_dir=tmp_path, progress=False)


@pytest.mark.parametrize(("labeled", "unlabeled"), [(10, 30), (40, 8)])
def test_alternating_sampling_rule(labeled: int, unlabeled: int) -> None:
    config = _config(mode="alternating", alpha=8, batch_size=2, unlabeled_batch_size=4)
    expected_steps = math.ceil(8 * labeled / 2 + unlabeled / 4)  # alpha*S/b + U/u
    assert steps_per_epoch(config, labeled, unlabeled) == expected_steps
    p_labeled = 8 * labeled / (8 * labeled + unlabeled)
    gen = torch.Generator().manual_seed(0)
    kinds = [k for _ in range(200) for k in step_kinds(config, labeled, unlabeled, gen)]
    share = sum(k == "labeled" for k in kinds) / len(kinds)
    assert set(kinds) == {"labeled", "unlabeled"}
    sigma = (p_labeled * (1 - p_labeled) / len(kinds)) ** 0.5
    assert share == pytest.approx(p_labeled, abs=4 * sigma)


def test_other_modes_step_rules() -> None:
    gen = torch.Generator().manual_seed(0)
    sup = _config(mode="supervised", batch_size=8)
    assert step_kinds(sup, 20, 100, gen) == ["labeled"] * 3
    uns = _config(mode="unsupervised", unlabeled_batch_size=8)
    assert step_kinds(uns, 20, 100, gen) == ["unlabeled"] * 13
    com = _config(mode="combined", batch_size=8, unlabeled_batch_size=8)
    assert step_kinds(com, 20, 100, gen) == ["combined"] * 13
    assert len(step_kinds(_config(steps_per_epoch=5), 20, 100, gen)) == 5


def test_batch_cycler_visits_every_frame_once_per_pass() -> None:
    cycler = BatchCycler(10, 4, torch.Generator().manual_seed(1))
    drawn = torch.cat([cycler.next() for _ in range(5)])  # 20 indices = two passes
    assert sorted(drawn[:10].tolist()) == list(range(10))
    assert sorted(drawn[10:].tolist()) == list(range(10))
    assert BatchCycler(3, 8, torch.Generator()).next().numel() == 3


def test_inputs_are_checked(data: dict[str, FrameSet], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="classes"):
        train(_config(classes=["a", "b", "c"]), data["labeled"], None, data["val"],
              out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unique"):
        _config(classes=["a", "a"])
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.model_validate({"classes": CLASSES, "learning_rate": 0.1})
