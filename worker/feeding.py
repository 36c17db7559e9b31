"""Feeding frames from a decoding thread, and keeping the frames that can become key frames.

Both serve :mod:`worker.pipeline`: :class:`FrameFeeder` overlaps decoding with inference;
:class:`PeakFrames` keeps memory proportional to the number of score runs, not to the video length.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator

import torch

from worker.decode import SampledFrame


class FrameFeeder:
    """A daemon thread that iterates a frame source (e.g. a :class:`worker.decode.VideoDecoder`)
    into a bounded queue; the consumer takes batches with :meth:`batches`.

    Use as a context manager: leaving it stops the thread and joins it, whatever happened.
    ``waiting_s`` accumulates the time the consumer spent waiting for frames.
    """

    _END = object()

    def __init__(self, source: Iterable[SampledFrame], size: int) -> None:
        self._source = source
        self.waiting_s = 0.0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-decode", daemon=True)

    def __enter__(self) -> FrameFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _run(self) -> None:
        item: object = self._END
        try:
            for sample in self._source:
                if not self._put(sample):
                    return
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            item = exc
        self._put(item)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def batches(self, size: int) -> Iterator[list[SampledFrame]]:
        """Batches of up to ``size`` frames; a batch is yielded as soon as it is full or the
        stream ends. Exceptions from the decoder are re-raised here."""
        batch: list[SampledFrame] = []
        while True:
            tick = time.perf_counter()
            item = self._queue.get()
            self.waiting_s += time.perf_counter() - tick
            if item is self._END:
                break
            if isinstance(item, BaseException):
                raise item
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


class PeakFrames:
    """Keep, per label, the frame with the highest score of each run of frames whose score is
    at or above the label's ``off`` threshold (and whose best reaches ``on``): an event's key
    frame is always one of these (see :mod:`worker.events`), so memory stays proportional to
    the number of runs, not to the video length."""

    def __init__(self, off: list[float], on: list[float], hole_s: float) -> None:
        self._off, self._on, self._hole_s = off, on, hole_s
        self._best: list[tuple[float, int, torch.Tensor] | None] = [None] * len(off)
        self._last_t: float | None = None
        self._kept: dict[int, torch.Tensor] = {}

    def add(self, sample: SampledFrame, scores: list[float]) -> None:
        """Account for one sampled frame (frames arrive in time order)."""
        hole = self._last_t is not None and sample.t_s - self._last_t > self._hole_s
        self._last_t = sample.t_s
        for c, score in enumerate(scores):
            best = self._best[c]
            if best is not None and (score < self._off[c] or hole):
                self._close(c)
                best = None
            if score >= self._off[c] and (best is None or score > best[0]):
                self._best[c] = (score, sample.index, sample.frame)

    def _close(self, c: int) -> None:
        best = self._best[c]
        if best is not None and best[0] >= self._on[c]:
            self._kept[best[1]] = best[2]
        self._best[c] = None

    def finish(self) -> dict[int, torch.Tensor]:
        """Close every open run; the kept frames by sampled-frame index."""
        for c in range(len(self._best)):
            self._close(c)
        return self._kept


__all__ = ["FrameFeeder", "PeakFrames"]
