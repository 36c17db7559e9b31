"""Labels, the model registry, API keys, the audit log and idempotency records."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import redis
from redis.commands.core import Script

from service.schemas import (
    ApiKey,
    AuditAction,
    AuditEntry,
    IdempotencyRecord,
    Label,
    ModelVersion,
    Role,
    UploadAccepted,
    from_epoch,
    to_epoch,
    utcnow,
)
from service.store._base import Cursor, InvalidCursor, Repo, paginate, scan_zset

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
IDEMPOTENCY_TTL_S = 24 * 3600
IDEMPOTENCY_PENDING_TTL_S = 60.0
KEY_PREFIX = "vgl_"


def new_id(prefix: str) -> str:
    """A random id such as ``seg-3f9c0a1b2c4d`` (48 random bits; never patient data)."""
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass
class LabelRepo(Repo):
    """Clinician labels: ``label:{id}`` JSON, per-stream index by start."""

    def add(self, label: Label) -> None:
        """Store a new label."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.label(label.label_id), label.model_dump_json())
            pipe.zadd(
                self.keys.stream_labels(label.stream_id), {label.label_id: to_epoch(label.start)}
            )
            pipe.execute()

    def _load(self, ids: list[str]) -> list[Label | None]:
        if not ids:
            return []
        raws = self.r.mget([self.keys.label(i) for i in ids])
        return [Label.model_validate_json(raw) if raw else None for raw in raws]

    def list(
        self, stream_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Label], str | None]:
        """A page of the stream's labels by start time."""
        after = Cursor.decode(cursor, "labels") if cursor else None
        members = scan_zset(
            self.r, self.keys.stream_labels(stream_id), low="-inf", high="+inf", after=after
        )
        return paginate(members, self._load, lambda _: True, limit=limit, kind="labels")

    def all(self, stream_id: str) -> list[Label]:
        """Every label of the stream (for retraining datasets)."""
        ids = self.r.zrange(self.keys.stream_labels(stream_id), 0, -1)
        return [label for label in self._load(ids) if label is not None]


@dataclass
class ModelRepo(Repo):
    """Model registry: versions (JSON in a hash), creation order, the active pointer."""

    def register(self, model: ModelVersion) -> None:
        """Add (or replace) a version; does not activate it."""
        stored = model.model_copy(update={"active": False})
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.models(), model.version, stored.model_dump_json())
            pipe.zadd(self.keys.models_order(), {model.version: to_epoch(model.created_at)})
            pipe.execute()

    def get(self, version: str) -> ModelVersion | None:
        """A version (with ``active`` filled in) or None."""
        raw = self.r.hget(self.keys.models(), version)
        if raw is None:
            return None
        model = ModelVersion.model_validate_json(raw)
        return model.model_copy(update={"active": version == self.active_version()})

    def list(self) -> list[ModelVersion]:
        """Every version, newest first."""
        versions = self.r.zrevrange(self.keys.models_order(), 0, -1)
        if not versions:
            return []
        active = self.active_version()
        raws = self.r.hmget(self.keys.models(), versions)
        models = [ModelVersion.model_validate_json(raw) for raw in raws if raw]
        return [m.model_copy(update={"active": m.version == active}) for m in models]

    def active_version(self) -> str | None:
        """The active version id, or None when nothing was activated."""
        return self.r.get(self.keys.model_active())

    def active(self) -> ModelVersion | None:
        """The active model, or None."""
        version = self.active_version()
        return self.get(version) if version else None

    def activate(self, version: str) -> ModelVersion | None:
        """Point the registry at ``version`` (also the rollback); None if unknown.

        Workers read the pointer before each job; the reload channel only lets them drop a
        cached model early.
        """
        if self.r.hget(self.keys.models(), version) is None:
            return None
        self.r.set(self.keys.model_active(), version)
        self.r.publish(self.keys.model_reload(), version)
        return self.get(version)


def hash_key(plaintext: str) -> str:
    """sha256 hex of an API key. Keys are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass
class ApiKeyRepo(Repo):
    """API keys: records without secrets, and a hash -> key id index for verification."""

    def create(self, name: str, role: Role, *, plaintext: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns the record and the key, which is never stored or shown again.

        ``plaintext`` imports a given key (``VIGIL_BOOTSTRAP_ADMIN_KEY``) instead of a new one.
        """
        key_id = secrets.token_hex(6)
        plaintext = plaintext or f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id=key_id, name=name, role=role, key_hash=hash_key(plaintext))
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.api_keys(), key_id, record.model_dump_json())
            pipe.hset(self.keys.api_key_hashes(), record.key_hash, key_id)
            pipe.execute()
        return record, plaintext

    def import_bootstrap(
        self, plaintext: str, name: str = "bootstrap-admin"
    ) -> Literal["created", "live", "revoked"]:
        """Import ``VIGIL_BOOTSTRAP_ADMIN_KEY`` once: ``created`` the first time, then ``live``,
        or ``revoked`` once an admin revoked it (it is never created again).

        Every imported value is remembered by its hash in ``apikeys:bootstrapped``; one
        WATCH/MULTI transaction makes two API processes starting at once create one key.
        Values imported before that set existed count as imported when a key record (live or
        revoked) has their hash.
        """
        digest = hash_key(plaintext)
        marker, by_hash = self.keys.api_keys_bootstrapped(), self.keys.api_key_hashes()
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(marker, by_hash, self.keys.api_keys())
                    live = pipe.hget(by_hash, digest) is not None
                    if pipe.sismember(marker, digest):
                        pipe.unwatch()
                        return "live" if live else "revoked"
                    known = live or any(
                        ApiKey.model_validate_json(raw).key_hash == digest
                        for raw in pipe.hvals(self.keys.api_keys())
                    )
                    pipe.multi()
                    pipe.sadd(marker, digest)
                    if not known:
                        record = ApiKey(
                            key_id=secrets.token_hex(6),
                            name=name,
                            role=Role.admin,
                            key_hash=digest,
                        )
                        pipe.hset(self.keys.api_keys(), record.key_id, record.model_dump_json())
                        pipe.hset(by_hash, digest, record.key_id)
                    pipe.execute()
                except redis.WatchError:
                    continue
                if not known:
                    return "created"
                return "live" if live else "revoked"

    def get(self, key_id: str) -> ApiKey | None:
        """A key record or None."""
        raw = self.r.hget(self.keys.api_keys(), key_id)
        return ApiKey.model_validate_json(raw) if raw else None

    def list(self) -> list[ApiKey]:
        """Every key (revoked ones included), oldest first."""
        keys = [ApiKey.model_validate_json(raw) for raw in self.r.hvals(self.keys.api_keys())]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked (idempotent); None if unknown."""
        key = self.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            key = key.model_copy(update={"revoked_at": utcnow()})
            with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.api_keys(), key_id, key.model_dump_json())
                pipe.hdel(self.keys.api_key_hashes(), key.key_hash)
                pipe.execute()
        return key

    def verify(self, plaintext: str) -> ApiKey | None:
        """The live key matching ``plaintext``, or None (unknown or revoked)."""
        digest = hash_key(plaintext)
        key_id = self.r.hget(self.keys.api_key_hashes(), digest)
        key = self.get(key_id) if key_id else None
        if key is None or key.revoked_at is not None:
            return None
        return key if hmac.compare_digest(key.key_hash, digest) else None

    def has_live(self, role: Role) -> bool:
        """Whether any unrevoked key of ``role`` exists (bootstrap check)."""
        return any(k.role is role and k.revoked_at is None for k in self.list())


# KEYS: coalesce key, audit stream, counts hash of today. ARGV: window_s, counts_ttl_s, fields...
# An identical call within the window of the first one counts on that entry (HINCRBY in the
# counts hash of the entry's day); else a new entry is added and becomes the window's entry.
_AUDIT_APPEND = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ' ', 1, true)
  local id = string.sub(current, 1, sep - 1)
  local counts = string.sub(current, sep + 1)
  redis.call('HINCRBY', counts, id, 1)
  redis.call('EXPIRE', counts, ARGV[2])
  return id
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], id .. ' ' .. KEYS[3], 'EX', ARGV[1])
return id
"""
AUDIT_WINDOW_S = 60
# The status of a successful write recorded by its route (everything else answers 200).
_SUCCESS_STATUS = {
    AuditAction.upload_segment: 202,
    AuditAction.create_label: 201,
    AuditAction.create_training_job: 202,
    AuditAction.create_key: 201,
}
AUDIT_TRIM_EVERY_S = 3600


@dataclass
class AuditRepo(Repo):
    """The audit log: a Redis Stream kept ``retention_days``, trimmed by time (``MINID``).

    Identical calls (key, route, resource, status) within ``AUDIT_WINDOW_S`` of the first one
    are one entry with a ``count``: the entry is written once, later calls add to its count.
    """

    retention_days: float = 365.0
    _append: Script = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._append = self.r.register_script(_AUDIT_APPEND)

    def append(
        self,
        key_id: str,
        action: AuditAction,
        resource: str,
        status: int | None = None,
        *,
        route: str = "",
        key_hash: str = "",
    ) -> str:
        """Record one call (or count it on the entry of an identical recent call); returns the
        entry id. ``key_hash`` is a hash prefix of an unknown key, never a key. Without
        ``status`` the call succeeded with the action's success status (201 for a created
        label, 202 for an upload ...)."""
        if status is None:
            status = _SUCCESS_STATUS.get(action, 200)
        now = utcnow()
        identity = "\x1f".join([key_id, key_hash, action.value, route, resource, str(status)])
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
        day = now.strftime("%Y%m%d")
        fields = {
            "time": repr(now.timestamp()),
            "key_id": key_id,
            "key_hash": key_hash,
            "action": action.value,
            "route": route,
            "resource": resource,
            "status": str(status),
            "day": day,
        }
        args: list[str | int] = [AUDIT_WINDOW_S, self._counts_ttl_s()]
        for name, value in fields.items():
            args += [name, value]
        keys = [self.keys.audit_coalesce(digest), self.keys.audit(), self.keys.audit_counts(day)]
        entry_id = self._append(keys=keys, args=args)
        if self.r.set(self.keys.audit_trimmed(), "1", nx=True, ex=AUDIT_TRIM_EVERY_S):
            self.trim()
        return entry_id

    def _counts_ttl_s(self) -> int:
        return int(self.retention_days * 86400) + 2 * 86400

    def trim(self, now: datetime | None = None) -> int:
        """Drop the entries older than the retention (``XTRIM MINID``); returns how many."""
        cutoff = (now or utcnow()).timestamp() - self.retention_days * 86400
        minid = f"{max(0, int(cutoff * 1000))}-0"
        return int(self.r.xtrim(self.keys.audit(), minid=minid, approximate=False))

    def list(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        key_id: str | None = None,
        action: AuditAction | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first; ``cursor`` is the id of the last entry of the previous page."""
        high = "+"
        if cursor:
            member = Cursor.decode(cursor, "audit").member
            if _STREAM_ID.fullmatch(member) is None:
                raise InvalidCursor("malformed cursor")
            high = "(" + member
        page: list[AuditEntry] = []
        while len(page) <= limit:
            batch = self.r.xrevrange(self.keys.audit(), max=high, min="-", count=200)
            for entry in self._entries(batch):
                if (key_id is None or entry.key_id == key_id) and (
                    action is None or entry.action is action
                ):
                    page.append(entry)
            if len(batch) < 200:
                break
            high = "(" + batch[-1][0]
        if len(page) > limit:
            return page[:limit], Cursor("audit", 0.0, page[limit - 1].id).encode()
        return page, None

    def export(self, since: datetime | None, until: datetime | None) -> Iterator[AuditEntry]:
        """Every entry whose first call lies in [since, until], oldest first (in batches)."""
        low = f"{_ms_of(since)}-0" if since else "-"
        high = f"{_ms_of(until)}-{2**64 - 1}" if until else "+"
        return self._export(low, high)

    def _export(self, low: str, high: str) -> Iterator[AuditEntry]:
        while True:
            batch = self.r.xrange(self.keys.audit(), min=low, max=high, count=500)
            yield from self._entries(batch)
            if len(batch) < 500:
                return
            low = "(" + batch[-1][0]

    def _entries(self, batch: list[tuple[str, dict[str, str]]]) -> list[AuditEntry]:
        """Entries with their counts (one HMGET per counts hash)."""
        by_day: dict[str, list[str]] = {}
        for entry_id, fields in batch:
            if fields.get("day"):
                by_day.setdefault(fields["day"], []).append(entry_id)
        extra: dict[str, int] = {}
        if by_day:
            with self.r.pipeline(transaction=False) as pipe:
                for day, ids in by_day.items():
                    pipe.hmget(self.keys.audit_counts(day), ids)
                for ids, values in zip(by_day.values(), pipe.execute(), strict=True):
                    extra.update({i: int(v) for i, v in zip(ids, values, strict=True) if v})
        return [_audit_entry(i, fields, 1 + extra.get(i, 0)) for i, fields in batch]


def _ms_of(moment: datetime) -> int:
    """Epoch milliseconds of ``moment`` for a stream id, clamped to what an id can hold."""
    return min(max(0, int(moment.timestamp() * 1000)), 2**64 - 1)


def _audit_entry(entry_id: str, fields: dict[str, str], count: int = 1) -> AuditEntry:
    status = fields.get("status")
    return AuditEntry(
        id=entry_id,
        time=from_epoch(float(fields["time"])),
        key_id=fields["key_id"],
        key_hash=fields.get("key_hash") or None,
        action=AuditAction(fields["action"]),
        route=fields.get("route") or None,
        resource=fields["resource"],
        status=int(status) if status else None,
        count=count,
    )


# A pending claim is only renewed or released by the request that holds it (its ``owner``
# token): a request whose claim lapsed must not touch a later request's claim.
_PENDING_OWNED_BY = """
local function owned(raw, owner)
  if not raw then return false end
  local ok, rec = pcall(cjson.decode, raw)
  return ok and rec['state'] == 'pending' and rec['owner'] == owner
end
"""
# KEYS: record. ARGV: owner, ttl_ms
_RENEW = (
    _PENDING_OWNED_BY
    + """
if not owned(redis.call('GET', KEYS[1]), ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
# KEYS: record. ARGV: owner, record_json, ttl_ms (a lapsed claim nobody took is completed too)
_COMPLETE = (
    _PENDING_OWNED_BY
    + """
local raw = redis.call('GET', KEYS[1])
if raw and not owned(raw, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
)
# KEYS: record. ARGV: owner
_RELEASE = (
    _PENDING_OWNED_BY
    + """
if not owned(redis.call('GET', KEYS[1]), ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@dataclass
class IdempotencyRepo(Repo):
    """``Idempotency-Key`` records, per API key.

    A request first *claims* the key with a pending record that lives ``pending_ttl_s``
    (default 60 s) and that the request renews while it runs (:meth:`renew`), so the claim
    of a request that died (API killed mid-upload) lapses within a minute instead of blocking
    the key. The finished request binds the key to its response and to the sha256 of the
    video it uploaded, kept ``IDEMPOTENCY_TTL_S`` (24 h).
    """

    _renew: Script = field(init=False, repr=False)
    _complete: Script = field(init=False, repr=False)
    _release: Script = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._renew = self.r.register_script(_RENEW)
        self._complete = self.r.register_script(_COMPLETE)
        self._release = self.r.register_script(_RELEASE)

    def begin(
        self,
        key_id: str,
        idem_key: str,
        request: str,
        *,
        owner: str = "-",
        ttl_s: float = IDEMPOTENCY_PENDING_TTL_S,
    ) -> IdempotencyRecord | None:
        """Claim the key for a new request (pending for ``ttl_s``); returns the existing record
        if it is claimed or done already."""
        key = self.keys.idempotency(key_id, idem_key)
        pending = IdempotencyRecord(state="pending", request=request, owner=owner)
        while True:
            if self.r.set(key, pending.model_dump_json(), nx=True, px=_ms(ttl_s)):
                return None
            raw = self.r.get(key)
            if raw:  # else it expired between SET NX and GET: claim again
                return IdempotencyRecord.model_validate_json(raw)

    def renew(
        self, key_id: str, idem_key: str, *, owner: str, ttl_s: float = IDEMPOTENCY_PENDING_TTL_S
    ) -> bool:
        """Extend a pending claim held by ``owner`` by ``ttl_s``; False when it is not theirs."""
        key = self.keys.idempotency(key_id, idem_key)
        return int(self._renew(keys=[key], args=[owner, _ms(ttl_s)])) == 1

    def complete(
        self,
        key_id: str,
        idem_key: str,
        request: str,
        status_code: int,
        response: UploadAccepted,
        *,
        owner: str = "-",
        body_sha256: str | None = None,
    ) -> bool:
        """Bind the key to the response of the request that claimed it (for 24 h); False when
        another request holds the key now (this one's claim had lapsed)."""
        record = IdempotencyRecord(
            state="done",
            request=request,
            status_code=status_code,
            response=response,
            body_sha256=body_sha256,
        )
        key = self.keys.idempotency(key_id, idem_key)
        args = [owner, record.model_dump_json(), _ms(IDEMPOTENCY_TTL_S)]
        return int(self._complete(keys=[key], args=args)) == 1

    def release(self, key_id: str, idem_key: str, *, owner: str = "-") -> None:
        """Forget a claim whose request failed, so the client may retry with the same key."""
        self._release(keys=[self.keys.idempotency(key_id, idem_key)], args=[owner])


__all__ = [
    "ApiKeyRepo",
    "AuditRepo",
    "IdempotencyRepo",
    "InvalidCursor",
    "LabelRepo",
    "ModelRepo",
    "hash_key",
    "new_id",
]
