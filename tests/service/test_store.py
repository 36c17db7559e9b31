"""service.store against a real Redis: events, segments, registry, keys, audit, idempotency."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from service.schemas import (
    AuditAction,
    Event,
    FrameScores,
    ModelVersion,
    Role,
    Segment,
    UploadAccepted,
    to_epoch,
)
from service.store import EventQuery, InvalidCursor, Store

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[Store]:
    s = Store.from_url(redis_url, redis_prefix)
    yield s
    s.close()


def make_event(
    event_id: str, start_s: float, end_s: float, label: str = "fall", **kw: object
) -> Event:
    fields: dict[str, object] = {
        "event_id": event_id,
        "stream_id": "bed-1",
        "label": label,
        "start": T0 + timedelta(seconds=start_s),
        "end": T0 + timedelta(seconds=end_s),
        "peak_score": 0.9,
        "mean_score": 0.7,
        "model_version": "m-1",
        "keyframe_time": T0 + timedelta(seconds=start_s),
        "segment_ids": ["seg-1"],
    }
    fields.update(kw)
    return Event.model_validate(fields)


def test_event_write_is_idempotent(store: Store) -> None:
    events = [make_event("e1", 0, 5), make_event("e2", 10, 12, label="bed_exit")]
    first = store.events.write("bed-1", events)
    assert sorted(first.created) == ["e1", "e2"]
    stamp = store.events.get("e1").updated_at
    again = store.events.write("bed-1", events)
    assert sorted(again.unchanged) == ["e1", "e2"] and not again.created and not again.updated
    assert store.events.get("e1").updated_at == stamp
    page, cursor = store.events.list("bed-1", EventQuery())
    assert [e.event_id for e in page] == ["e1", "e2"] and cursor is None
    assert store.events.counts("bed-1") == {"bed_exit": 1, "fall": 1}


def test_window_rewrite_supersedes_and_updated_since_sees_it(store: Store) -> None:
    store.events.write(
        "bed-1", [make_event("a", 0, 5), make_event("b", 8, 9), make_event("far", 100, 101)]
    )
    mark = datetime.now(UTC)
    # The timeline recomputation merged a and b into one grown event "a" (now open).
    grown = make_event("a", 0, 9, open=True)
    result = store.events.write("bed-1", [grown], window=(T0, T0 + timedelta(seconds=20)))
    assert result.updated == ["a"] and result.superseded == ["b"]
    live, _ = store.events.list("bed-1", EventQuery())
    assert [e.event_id for e in live] == ["a", "far"]
    changed, _ = store.events.list("bed-1", EventQuery(updated_since=mark))
    by_id = {e.event_id: e for e in changed}
    assert set(by_id) == {"a", "b"}
    assert by_id["b"].superseded and by_id["a"].open and not by_id["a"].superseded
    assert store.events.counts("bed-1") == {"fall": 2}


def test_time_window_filters_and_cursor_pages(store: Store) -> None:
    events = [
        make_event(f"e{i:02d}", i * 10, i * 10 + 4, peak_score=0.5 + i / 100) for i in range(25)
    ]
    events.append(make_event("long", 0, 400, label="agitation"))
    store.events.write("bed-1", events)
    window = EventQuery(start=T0 + timedelta(seconds=52), end=T0 + timedelta(seconds=80))
    got, _ = store.events.list("bed-1", window)
    # e05 [50,54] overlaps, e08 starts at 80 (excluded: end is exclusive); "long" spans it all.
    assert [e.event_id for e in got] == ["long", "e05", "e06", "e07"]
    high, _ = store.events.list("bed-1", EventQuery(min_score=0.7, label="fall"))
    assert [e.event_id for e in high] == ["e20", "e21", "e22", "e23", "e24"]
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.events.list("bed-1", EventQuery(limit=7, cursor=cursor))
        seen += [e.event_id for e in page]
        if cursor is None:
            break
    assert len(seen) == 26 and len(set(seen)) == 26
    with pytest.raises(InvalidCursor):
        store.events.list("bed-1", EventQuery(cursor="not-a-cursor"))


def test_segments_frames_and_streams(store: Store) -> None:
    for i, stream in enumerate(["icu-2", "bed-1", "bed-1"]):
        store.segments.put(
            Segment(
                segment_id=f"seg-{i}",
                stream_id=stream,
                start=T0 + timedelta(seconds=60 * i),
                duration_s=60,
                size_bytes=10,
                content_type="video/mp4",
                path=f"segments/seg-{i}.mp4",
                width=64,
                height=48,
            )
        )
    times = [to_epoch(T0) + 60 + t for t in (0.0, 0.5, 1.0)]
    store.segments.put_frames(
        FrameScores(
            segment_id="seg-1",
            stream_id="bed-1",
            model_version="m",
            classes=["fall", "x"],
            times=times,
            scores=[[0.1, 0.2], [0.9, 0.0], [0.3, 0.3]],
        )
    )
    points = store.segments.frames_between(
        "bed-1", T0 + timedelta(seconds=60.4), T0 + timedelta(seconds=61)
    )
    assert [p.scores["fall"] for p in points] == [0.9, 0.3]
    assert store.segments.at("bed-1", T0 + timedelta(seconds=150)).segment_id == "seg-2"
    streams, cursor = store.streams.list(1, None)
    assert [s.stream_id for s in streams] == ["bed-1"] and streams[0].segment_count == 2
    assert streams[0].last_segment_end == T0 + timedelta(seconds=180)
    rest, end = store.streams.list(1, cursor)
    assert [s.stream_id for s in rest] == ["icu-2"] and end is None


def test_api_keys_hash_verify_revoke(store: Store, redis_client) -> None:
    record, key = store.api_keys.create("recorder", Role.ingest)
    assert store.api_keys.verify(key).key_id == record.key_id
    assert store.api_keys.verify(key + "x") is None
    # The plaintext key is nowhere in Redis.
    for k in redis_client.scan_iter(match=f"{store.keys.prefix}*"):
        dump = str(redis_client.hgetall(k)) if redis_client.type(k) == "hash" else ""
        assert key not in dump
    store.api_keys.revoke(record.key_id)
    assert store.api_keys.verify(key) is None
    assert store.api_keys.get(record.key_id).revoked_at is not None
    _, boot = store.api_keys.create("boot", Role.admin, plaintext="my-bootstrap-secret")
    assert boot == "my-bootstrap-secret" and store.api_keys.verify(boot).role is Role.admin
    assert store.api_keys.has_live(Role.admin) and not store.api_keys.has_live(Role.ingest)


def test_model_registry_activate_and_rollback(store: Store) -> None:
    for i, version in enumerate(["m-a", "m-b"]):
        store.models.register(
            ModelVersion(
                version=version,
                path=f"models/{version}.safetensors",
                arch="resnet18",
                classes=["fall"],
                metrics={"macro_f1": 0.5 + i / 10},
                created_at=T0 + timedelta(minutes=i),
            )
        )
    assert store.models.active() is None
    assert store.models.activate("m-b").active
    assert [m.version for m in store.models.list()] == ["m-b", "m-a"]
    assert store.models.activate("m-a").version == "m-a"
    assert store.models.active_version() == "m-a"
    assert store.models.activate("nope") is None


def test_audit_log_newest_first_with_cursor(store: Store) -> None:
    for i in range(5):
        store.audit.append(f"k{i % 2}", AuditAction.read_event, f"event:e{i}")
    page, cursor = store.audit.list(3)
    assert [e.resource for e in page] == ["event:e4", "event:e3", "event:e2"]
    rest, end = store.audit.list(3, cursor)
    assert [e.resource for e in rest] == ["event:e1", "event:e0"] and end is None
    only, _ = store.audit.list(10, key_id="k1")
    assert [e.resource for e in only] == ["event:e3", "event:e1"]


def test_idempotency_claim_complete_release(store: Store) -> None:
    assert store.idempotency.begin("k", "abc", "POST /x") is None
    assert store.idempotency.begin("k", "abc", "POST /x").state == "pending"
    store.idempotency.complete(
        "k", "abc", "POST /x", 202, UploadAccepted(segment_id="s", job_id="j")
    )
    done = store.idempotency.begin("k", "abc", "POST /x")
    assert done.state == "done" and done.response.job_id == "j"
    assert store.idempotency.begin("other-key", "abc", "POST /x") is None
    store.idempotency.release("other-key", "abc")  # a failed request frees its claim
    assert store.idempotency.begin("other-key", "abc", "POST /x") is None


def test_only_the_owner_renews_completes_or_releases_a_claim(store: Store) -> None:
    repo = store.idempotency
    done = UploadAccepted(segment_id="s", job_id="j")
    assert repo.begin("k", "x", "POST /a", owner="first", ttl_s=30) is None
    store.r.delete(store.keys.idempotency("k", "x"))  # the first request's claim lapsed
    assert repo.begin("k", "x", "POST /a", owner="second", ttl_s=30) is None
    assert not repo.renew("k", "x", owner="first", ttl_s=30)
    assert not repo.complete("k", "x", "POST /a", 202, done, owner="first")
    repo.release("k", "x", owner="first")
    held = repo.begin("k", "x", "POST /a", owner="third")
    assert held.state == "pending" and held.owner == "second"
    assert repo.renew("k", "x", owner="second", ttl_s=30)
    assert repo.complete("k", "x", "POST /a", 202, done, owner="second", body_sha256="ab")
    finished = repo.begin("k", "x", "POST /a")
    assert finished.state == "done" and finished.body_sha256 == "ab"
    repo.release("k", "x", owner="second")  # a finished request is not released
    assert repo.begin("k", "x", "POST /a").state == "done"
