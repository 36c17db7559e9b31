"""``python -m tests.ops.gated_worker GATE_DIR [worker args]``: a real ``vigil worker`` process
that parks in the middle of its first job until the test opens a gate.

Timing alone cannot put a test "in the middle of a job": on an idle machine the tiny detector
finishes a clip between two polls. This launcher wraps the consumer's progress reporter so that,
once a job has reported some progress, the job thread writes ``GATE_DIR/parked`` and then keeps
reporting (so an interrupt still takes effect) until ``GATE_DIR/open`` exists. Everything else is
the production worker: CLI, settings, queue, heartbeats, signal handling.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    gate = Path(sys.argv[1])
    gate.mkdir(parents=True, exist_ok=True)
    _gate(gate)
    sys.exit(main(["worker", *sys.argv[2:]]))
