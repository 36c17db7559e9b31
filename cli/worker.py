"""``vigil worker``: run analysis, overlay and training jobs from the queue at VIGIL_REDIS_URL."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings
    from worker.consumer import Consumer

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="run a queue worker (needs VIGIL_REDIS_URL)",
        description="Claim jobs from the Redis queue and run them until SIGTERM. Start more "
        "workers (here or on other machines) to scale out: they share one consumer group.",
    )
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, let the running job finish for up to S seconds, then release it "
        "back to the queue (default 30)",
    )
    parser.add_argument(
        "--id", dest="worker_id", default=None, help="consumer name (default: host-pid-random)"
    )
    parser.add_argument(
        "--no-model-bootstrap",
        action="store_true",
        help="do not register a model when the registry is empty (by default VIGIL_MODEL_PATH "
        "or the default detector is registered and activated)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one consumer in this process."""
    from service.config import get_settings
    from worker.consumer import build_consumer

    settings = get_settings()
    if not settings.redis_url:
        logger.error(
            "VIGIL_REDIS_URL is not set (the embedded Redis runs only inside `vigil serve`)"
        )
        return 2
    consumer = build_consumer(settings, grace_s=args.grace, worker_id=args.worker_id)
    consumer.install_signal_handlers()
    if not args.no_model_bootstrap and not _bootstrap_model(consumer, settings):
        return 0  # stopped while Redis was unavailable
    consumer.run(burst=args.burst, max_jobs=args.max_jobs)
    return 0


def _bootstrap_model(consumer: Consumer, settings: Settings) -> bool:
    """Register the default model when the registry is empty, waiting (with backoff) for a
    Redis that is not up yet or restarting. False when a stop signal came first."""
    import redis

    from cli.serve import ensure_active_model
    from service.outage import Backoff, is_store_unavailable

    backoff = Backoff(0.5, settings.reconnect_backoff_max_s)
    while True:
        try:
            ensure_active_model(consumer.store, settings)
            return True
        except redis.RedisError as exc:
            if not is_store_unavailable(exc):
                raise
            delay = backoff.next_delay()
            logger.warning("Redis unavailable (%s); trying again in %.1fs", exc, delay)
            if consumer.wait_for_stop(delay):
                return False
