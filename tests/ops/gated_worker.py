"""``python -m tests.ops.gated_worker GATE_DIR [worker args]``: a real ``vigil worker`` process
that parks in the middle of its first job until the test opens a gate.

Timing alone cannot put a test "in the middle of a job": on an idle machine the tiny detector
finishes a clip between two polls. This launcher wraps the consumer's progress reporter so that,
once a job has reported some progress, the job thread writes ``GATE_DIR/parked`` and then keeps
reporting (so an interrupt still takes effect) until ``GATE_DIR/open`` exists. Everything else is
the production worker: CLI, settings, queue, heartbeats, signal handling.

With ``GATE_AT=put_frames`` in the environment the worker parks instead where an analysis stores
its frames, inside the stream's timeline lock (``GATE_DIR/parked`` then holds the segment id).
A parked worker exits by itself (status 3) after ``GATE_MAX_S`` seconds (default 120).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cli.main import main
from service.jobs import Claim
from worker.consumer import Consumer

PARK_AT = 0.05  # park once the job has reported at least this fraction


def _gate(gate_dir: Path) -> None:
    original = Consumer._progress_fn
    parked_once = False

    def gated(self: Consumer, claim: Claim) -> Callable[[float], None]:
        report = original(self, claim)

        def gated_report(fraction: float) -> None:
            nonlocal parked_once
            report(fraction)
            if parked_once or not PARK_AT <= fraction < 1.0:
                return
            parked_once = True
            self.queue.progress(claim, fraction)  # make the mid-job state visible now
            (gate_dir / "parked").write_text(claim.job_id)
            while not (gate_dir / "open").exists():
                report(fraction)  # raises Interrupted once the grace period is over
                time.sleep(0.05)

        return gated_report

    Consumer._progress_fn = gated  # type: ignore[method-assign]


def _gate_put_frames(gate_dir: Path) -> None:
    from service.store.segments import SegmentRepo

    original = SegmentRepo.put_frames
    limit_s = float(os.environ.get("GATE_MAX_S", "120"))

    def gated(self: SegmentRepo, frames: object, *args: object, **kwargs: object) -> object:
        (gate_dir / "parked").write_text(frames.segment_id)  # type: ignore[attr-defined]
        deadline = time.monotonic() + limit_s
        while not (gate_dir / "open").exists():
            if time.monotonic() > deadline:
                os._exit(3)  # nobody came: do not outlive the test
            time.sleep(0.05)
        return original(self, frames, *args, **kwargs)  # type: ignore[arg-type]

    SegmentRepo.put_frames = gated  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    gate = Path(sys.argv[1])
    gate.mkdir(parents=True, exist_ok=True)
    if os.environ.get("GATE_AT") == "put_frames":
        _gate_put_frames(gate)
    else:
        _gate(gate)
    sys.exit(main(["worker", *sys.argv[2:]]))
