"""``Idempotency-Key``: a claim lapses soon after its request dies and is renewed while it
streams; a replay must carry the same video; ``.part`` files of dead uploads are swept (issue
"Never stall, never lose a trace", items 3 and 10)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.schemas import IdempotencyRecord, Role
from service.store import Store
from tests.service.conftest import T0, Api, LiveApi, live_server, read_response, upload
from tests.service.test_api_errors import assert_problem
from tests.support.clips import write_clip

SIGNATURE = f"POST /v1/streams/bed-1/segments?start={T0.isoformat()}"
PATH = f"/v1/streams/bed-1/segments?start={T0.isoformat().replace('+00:00', 'Z')}"


def _start_upload(live: LiveApi, conn, size: int, idem: str) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: video/mp4\r\n"
        f"Content-Length: {size}\r\nIdempotency-Key: {idem}\r\n"
        f"Authorization: Bearer {live.keys[Role.ingest]}\r\n\r\n"
    )
    conn.sendall(head.encode())


def _record(live: LiveApi, idem: str) -> tuple[IdempotencyRecord | None, int]:
    key_id = live.store.api_keys.verify(live.keys[Role.ingest]).key_id
    name = live.store.keys.idempotency(key_id, idem)
    raw = live.store.r.get(name)
    record = IdempotencyRecord.model_validate_json(raw) if raw else None
    return record, live.store.r.pttl(name)


def _wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_pending_claim_lives_a_minute_not_a_day(live_api: LiveApi, clip: Path) -> None:
    data = clip.read_bytes()
    with live_api.connect() as conn:
        _start_upload(live_api, conn, len(data), "rec-1")
        conn.sendall(data[: len(data) // 2])
        _wait_for(lambda: _record(live_api, "rec-1")[0] is not None)
        record, pttl_ms = _record(live_api, "rec-1")
        assert record.state == "pending" and 0 < pttl_ms <= 60_000
    # The client went away mid-upload: the claim is released, the partial file removed.
    _wait_for(lambda: _record(live_api, "rec-1")[0] is None)
    _wait_for(lambda: not any((live_api.settings.data_dir / "segments").glob("*.part")))


def test_claim_is_renewed_while_the_upload_streams(settings: Settings, clip: Path) -> None:
    short = settings.model_copy(update={"idempotency_pending_ttl_s": 0.4})
    data = clip.read_bytes()
    with live_server(short) as live, live.connect() as conn:
        _start_upload(live, conn, len(data), "rec-2")
        pieces = [
            data[i : i + len(data) // 12 + 1] for i in range(0, len(data), len(data) // 12 + 1)
        ]
        started = time.monotonic()
        for piece in pieces[:-1]:  # about 1.2 s: three times the claim's TTL
            conn.sendall(piece)
            time.sleep(0.1)
            record, pttl_ms = _record(live, "rec-2")
            assert record is not None and record.state == "pending", "the claim lapsed"
            assert pttl_ms <= 400
        assert time.monotonic() - started > 1.0
        conn.sendall(pieces[-1])
        status, _, body = read_response(conn)
        assert status == 202, body
        record, pttl_ms = _record(live, "rec-2")
        assert (
            record.state == "done" and record.response.segment_id == json.loads(body)["segment_id"]
        )
        assert pttl_ms > 23 * 3600 * 1000  # completed records keep their 24 h


def test_claim_of_a_dead_request_lapses(settings: Settings, clip: Path) -> None:
    """The API died mid-upload: nothing renews its claim, so the key is free again after the
    pending TTL (here 0.3 s; 60 s by default) instead of 24 h."""
    short = settings.model_copy(update={"idempotency_pending_ttl_s": 0.3})
    with TestClient(create_app(short)) as client:
        store: Store = client.app.state.store
        record, key = store.api_keys.create("recorder", Role.ingest)
        api = Api(client, store, client.app.state.queue, short, {Role.ingest: key})
        # What the dying request left: a claim with the configured TTL, never renewed.
        begin = store.idempotency.begin(record.key_id, "rec-3", SIGNATURE, owner="dead", ttl_s=0.3)
        assert begin is None
        held = upload(api, clip, **{"Idempotency-Key": "rec-3"})
        assert_problem(held, 409, "idempotency_in_progress")
        time.sleep(0.4)
        assert upload(api, clip, **{"Idempotency-Key": "rec-3"}).status_code == 202


def test_replay_with_another_video_is_refused(api: Api, clip: Path, tmp_path: Path) -> None:
    other = write_clip(tmp_path / "other.mp4", 1.0, fps=10)
    first = upload(api, clip, **{"Idempotency-Key": "rec-4"})
    assert first.status_code == 202
    assert upload(api, clip, **{"Idempotency-Key": "rec-4"}).json() == first.json()
    # The same video in a multipart body (other framing) is the same request.
    multipart = api.client.post(
        "/v1/streams/bed-1/segments",
        params={"start": T0.isoformat()},
        files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")},
        headers={**api.auth(Role.ingest), "Idempotency-Key": "rec-4"},
    )
    assert multipart.status_code == 202 and multipart.json() == first.json()
    reused = upload(api, other, **{"Idempotency-Key": "rec-4"})
    assert_problem(reused, 409, "idempotency_body_mismatch")
    assert api.queue.depth() == 1
    assert len(list((api.settings.data_dir / "segments").iterdir())) == 1


def test_stale_part_files_are_swept_at_start(settings: Settings) -> None:
    folder = settings.data_dir / "segments"
    folder.mkdir(parents=True)
    old = time.time() - settings.stale_upload_age_s - 60
    for name in ("seg-dead.part", "seg-kept.mp4"):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (old, old))
    (folder / "seg-live.part").write_bytes(b"x")  # an upload another API process is receiving
    with TestClient(create_app(settings)):
        assert sorted(p.name for p in folder.iterdir()) == ["seg-kept.mp4", "seg-live.part"]
