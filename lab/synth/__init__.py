"""Procedural clinical-room video generator (``vigil synth``).

Rooms (:mod:`.room`), stick-figure people (:mod:`.figure`), their timelines (:mod:`.script`,
:mod:`.scenario`), frame rendering with labels and boxes (:mod:`.render`) and the dataset writer
(:mod:`.writer`). See ``docs/synthetic.md``.
"""

from lab.synth.render import DEFAULT_CLASSES, KNOWN_CLASSES, SynthClip, render_frame
from lab.synth.writer import SynthConfig, build_clip, clip_refs, write_dataset

__all__ = [
    "DEFAULT_CLASSES",
    "KNOWN_CLASSES",
    "SynthClip",
    "SynthConfig",
    "build_clip",
    "clip_refs",
    "render_frame",
    "write_dataset",
]
