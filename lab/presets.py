"""Experiment presets: data, pre-training, few-shot budget and ATCON settings, fixed per name.

Sizes are chosen for a shared 2-core CPU machine (see ``docs/results.md``): ``smoke`` checks the
mechanics in about a minute, ``synthetic`` and ``upfall`` are the benchmark runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.recipes import CorpusSpec

DataSource = Literal["synthetic", "upfall"]
TARGET_CLASSES: tuple[str, ...] = ("person_present", "multiple_people", "falling", "fallen")
PRETRAIN_CLASSES: tuple[str, ...] = ("person_present", "in_bed", "staff_present")
"""The pre-training task differs from the target task (as ImageNet does): the backbone learns
rooms and people, never falls or head counts."""


class Pretraining(BaseModel):
    """Supervised pre-training of the backbone on synthetic rooms kept apart from the target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: CorpusSpec
    classes: tuple[str, ...] = PRETRAIN_CLASSES
    epochs: int = 2
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float = 1e-3


class FineTuning(BaseModel):
    """The few-shot budget, identical for every method of a seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(description="Labeled frames per class (plus k frames with no label).")
    labeled_steps: int = Field(description="Supervised steps; ATCON adds unlabeled steps on top.")
    evaluations: int = Field(default=4, description="Validation checks (best by val mAP is kept).")
    batch_size: int = 8
    unlabeled_batch_size: int = 4
    lr: float = 1e-4
    alpha: float = 8.0
    mask_intensity: float = 8.0
    ig_steps: int = 8
    freeze_bn: bool = True
    start: Literal["pretrained", "baseline"] = Field(
        default="pretrained",
        description="Where every method starts: 'pretrained' = the pre-trained backbone with a "
        "fresh seeded head; 'baseline' = a stage-1 supervised model of the seed (the normal "
        "baseline run from the pre-trained backbone, best by val mAP), so each method's own "
        "schedule runs on top of the same trained model.",
    )


class SyntheticTarget(BaseModel):
    """Target rooms: per room, clip 0 gives the k-shot pool, clips 1..u the unlabeled pool,
    the next clip validation and the remaining clips the test set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rooms: int
    clips_per_room: int
    unlabeled_clips: int = 2
    room_offset: int = 500
    duration_s: float = 20.0
    width: int = 160
    height: int = 120
    fps: float = 1.0
    event_fps: float = 5.0


class Preset(BaseModel):
    """One named experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: DataSource
    input_size: int
    pretraining: Pretraining
    finetuning: FineTuning
    synthetic: SyntheticTarget | None = None
    upfall_fps: float = 2.0
    consistency_frames: int = Field(default=48, description="Test frames scored for consistency.")
    iou_frames: int = Field(default=96, description="Test frames scored for CAM-box IoU.")
    classes: tuple[str, ...] = TARGET_CLASSES


_PRETRAIN = Pretraining(
    corpus=CorpusSpec(rooms=20, clips_per_room=2, room_offset=100, fps=1.0, event_fps=0.0), epochs=3
)
# Sized for a shared 2-core machine: ~5 minutes of CPU per seed for the three methods.
_FEW_SHOT = FineTuning(k=5, labeled_steps=40, evaluations=2, ig_steps=4)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        source="synthetic",
        input_size=64,
        pretraining=Pretraining(
            corpus=CorpusSpec(
                rooms=1, clips_per_room=1, room_offset=100, duration_s=4.0, fps=1.0, event_fps=0.0
            ),
            epochs=1,
            steps_per_epoch=2,
            batch_size=4,
        ),
        finetuning=FineTuning(
            k=1, labeled_steps=2, evaluations=1, batch_size=2, unlabeled_batch_size=2, ig_steps=2
        ),
        synthetic=SyntheticTarget(
            rooms=1, clips_per_room=4, unlabeled_clips=1, duration_s=4.0, fps=1.0, event_fps=2.0
        ),
        consistency_frames=2,
        iou_frames=4,
    ),
    "synthetic": Preset(
        name="synthetic",
        source="synthetic",
        input_size=112,
        pretraining=_PRETRAIN,
        finetuning=_FEW_SHOT,
        synthetic=SyntheticTarget(
            rooms=8, clips_per_room=4, unlabeled_clips=1, fps=1.0, event_fps=5.0
        ),
        consistency_frames=32,
        iou_frames=48,
    ),
    "upfall": Preset(
        name="upfall",
        source="upfall",
        input_size=112,
        pretraining=_PRETRAIN,
        # 1 frame/s and unlabeled batches of 2: the 2 frames/s version needed ~26 min per seed
        # on the shared machine (see docs/results.md).
        finetuning=_FEW_SHOT.model_copy(update={"unlabeled_batch_size": 2}),
        upfall_fps=1.0,
        consistency_frames=32,
        iou_frames=48,
    ),
}


def with_overrides(preset: Preset, assignments: list[str]) -> Preset:
    """``preset`` with ``section.field=value`` assignments applied (values parsed as JSON when
    possible), e.g. ``finetuning.mask_intensity=16``; the name gets the assignments appended."""
    import json

    data = preset.model_dump(mode="json")
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ValueError(f"unknown setting {key!r}")
        try:
            node[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            node[leaf] = raw
    if assignments:
        data["name"] = f"{preset.name}[{','.join(assignments)}]"
    return Preset.model_validate(data)
