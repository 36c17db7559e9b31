"""The API as a real process (uvicorn, no worker) killed mid-upload: its ``Idempotency-Key``
claim lapses within the pending TTL instead of 24 h, and the next start removes the ``.part``
file it left (issue "Never stall, never lose a trace", item 3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.schemas import Role
from service.store import Store
from tests.ops.conftest import REPO, event_clip

START = "2026-01-05T08:00:00Z"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "service.main:app_from_env",
        "--http", "service.server:ProblemH11Protocol",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)


def _post(port: int, data: bytes, key: str, idem: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/streams/bed-1/segments?start={START}",
        data=data,
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "video/mp4",
            "Idempotency-Key": idem,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_killed_api_frees_its_idempotency_key_and_part_file(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 2.0)], 3.0).read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        {
            "VIGIL_REDIS_URL": redis_url,
            "VIGIL_REDIS_PREFIX": redis_prefix,
            "VIGIL_DATA_DIR": str(data_dir),
            "VIGIL_IDEMPOTENCY_PENDING_TTL_S": "1",
            "VIGIL_STALE_UPLOAD_AGE_S": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    store = Store.from_url(redis_url, redis_prefix)
    record, key = store.api_keys.create("recorder", Role.ingest)
    claim = store.keys.idempotency(record.key_id, "rec-9")
    port = _free_port()
    proc = _api(env, port, tmp_path / "first.log")
    try:
        head = (
            f"POST /v1/streams/bed-1/segments?start={START} HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: video/mp4\r\n"
            f"Content-Length: {len(clip)}\r\nIdempotency-Key: rec-9\r\n\r\n"
        )
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(head.encode() + clip[: len(clip) // 2])
        deadline = time.monotonic() + 10
        while not (store.r.exists(claim) and list((data_dir / "segments").glob("*.part"))):
            assert time.monotonic() < deadline, "the upload did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the API dies mid-upload
        proc.wait(timeout=10)
        conn.close()
        parts = list((data_dir / "segments").glob("*.part"))
        assert len(parts) == 1 and store.r.exists(claim)
        deadline = time.monotonic() + 5
        while store.r.exists(claim):  # nothing renews the claim any more
            assert time.monotonic() < deadline, "the claim of the dead request did not lapse"
            time.sleep(0.05)
        time.sleep(1.1)  # the .part file is now older than VIGIL_STALE_UPLOAD_AGE_S
        proc = _api(env, port, tmp_path / "second.log")
        assert not parts[0].exists()
        status, body = _post(port, clip, key, "rec-9")
        assert status == 202, body
        assert _post(port, clip, key, "rec-9") == (202, body)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        store.close()
