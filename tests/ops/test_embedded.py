"""The embedded Redis really stops, even while other clients are still connected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from service.embedded import EmbeddedRedis


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_shuts_the_server_down_while_other_clients_are_connected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    pid = int(embedded._server.pid)  # type: ignore[union-attr]
    other = redis.Redis.from_url(url)  # like the API's or a worker's connection pool
    other.set("k", "v")
    assert _alive(pid)

    embedded.stop()

    assert not _alive(pid), "redis-server still running after stop()"
    assert "refused SHUTDOWN" not in caplog.text  # the bundled server accepted the command
    other.close()
    embedded.stop()  # a second stop is harmless


def test_data_survives_a_stop_and_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        client = redis.Redis.from_url(first.url)
        client.set("job", "queued")
        client.close()
    with EmbeddedRedis(tmp_path) as second:
        client = redis.Redis.from_url(second.url)
        assert client.get("job") == b"queued"
        client.close()
