"""The Lua scripts that change a job's state (each runs atomically inside Redis).

Every script that moves a job between statuses also moves its id between the per-status sets,
acknowledges/deletes stream entries and checks ownership, in one step. Ownership of a running
job means: the job hash names the consumer as ``worker``, its ``entry`` is the entry the caller
holds, and that entry is in the consumer's pending list (``XPENDING`` filtered by consumer).

Key layout passed by :mod:`service.jobs.queue` (``KEYS``):
``1 job hash, 2 stream, 3 index, 4 queued set, 5 running set, 6 succeeded set, 7 failed set,
8 delayed zset, 9 the index of the job's kind`` (9: enqueue only). Status sets are addressed by
index so that no script formats a key name.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

_COMMON = """
local STATUS_KEY = {queued = 4, running = 5, succeeded = 6, failed = 7}
local function move(job_id, from, to)
  if from and STATUS_KEY[from] then redis.call('SREM', KEYS[STATUS_KEY[from]], job_id) end
  redis.call('SADD', KEYS[STATUS_KEY[to]], job_id)
end
local function drop_entry(group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
local function owns(consumer, group, entry)
  local f = redis.call('HMGET', KEYS[1], 'worker', 'status', 'entry')
  if f[1] ~= consumer or f[2] ~= 'running' or f[3] ~= entry then return false end
  local pending = redis.call('XPENDING', KEYS[2], group, entry, entry, 1, consumer)
  return #pending == 1
end
-- a new queued job (ENQUEUE and COMMIT_UPLOAD; ARGV 1-4: job_id, kind, payload_json, now):
-- its stream entry, record, indexes and status set
local function create_job()
  local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1])
  redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'payload', ARGV[3], 'status', 'queued',
    'progress', '0', 'attempts', '0', 'created_at', ARGV[4], 'entry', entry)
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('ZADD', KEYS[9], ARGV[4], ARGV[1])
  move(ARGV[1], nil, 'queued')
end
"""

# ARGV: job_id, kind, payload_json, now, max_length
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
local depth = redis.call('SCARD', KEYS[4])
if depth >= tonumber(ARGV[5]) then return {'full', depth} end
create_job()
return {'ok', depth + 1}
"""

# The upload commit: segment record + analysis job + audit entry + disk byte counters, all or
# nothing. Every check (key types, job exists, queue depth, byte budgets) runs before the first
# write, and Redis refuses a script out of memory at its first write (once a script has written,
# it may finish), so there is no state in which a segment is stored without its job or audit
# entry (no shebang: the embedded redis-server may be older than 7).
# KEYS 1-9 as ENQUEUE, then 10 segment, 11 stream's segments zset, 12 streams zset,
# 13 streams' last end zset, 14 audit stream, 15 total disk bytes, 16 the stream's disk bytes.
# ARGV 1-5 as ENQUEUE, then 6 segment_id, 7 segment_json, 8 stream_id, 9 start epoch,
# 10 end epoch, 11 size bytes, 12 total budget (0: none), 13 stream budget (0: none), 14...
# the audit entry's field/value pairs (built by ``service.ingest`` as ``AuditRepo`` reads them).
# Returns {outcome, n}: ok (n = depth), exists, full (n = depth), disk_budget / stream_budget
# (n = bytes in use), wrongtype (n = the index of a key of another type: Redis does not roll a
# script back, so every key a write could fail on is checked first).
COMMIT_UPLOAD = """
local TYPES = {'hash', 'stream', 'zset', 'set', 'set', 'set', 'set', 'zset', 'zset', 'string',
  'zset', 'zset', 'zset', 'stream', 'string', 'string'}
for i, want in ipairs(TYPES) do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= want then return {'wrongtype', i} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
local depth = redis.call('SCARD', KEYS[4])
if depth >= tonumber(ARGV[5]) then return {'full', depth} end
local size = tonumber(ARGV[11])
local total = tonumber(redis.call('GET', KEYS[15]) or '0')
local used = tonumber(redis.call('GET', KEYS[16]) or '0')
if not total or not used then return {'wrongtype', 15} end
local total_budget = tonumber(ARGV[12])
if total_budget > 0 and total + size > total_budget then return {'disk_budget', total} end
local stream_budget = tonumber(ARGV[13])
if stream_budget > 0 and used + size > stream_budget then return {'stream_budget', used} end
redis.call('SET', KEYS[10], ARGV[7])
redis.call('ZADD', KEYS[11], ARGV[9], ARGV[6])
redis.call('ZADD', KEYS[12], 0, ARGV[8])
redis.call('ZADD', KEYS[13], 'GT', ARGV[10], ARGV[8])
create_job()
redis.call('XADD', KEYS[14], '*', unpack(ARGV, 14))
redis.call('INCRBY', KEYS[15], size)
redis.call('INCRBY', KEYS[16], size)
return {'ok', depth + 1}
"""

# ARGV: consumer, group, entry, now, max_attempts, lost_error_json, job_id
START = """
local pending = redis.call('XPENDING', KEYS[2], ARGV[2], ARGV[3], ARGV[3], 1, ARGV[1])
if #pending == 0 then return 'not_owner' end
local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'entry')
local status = f[1]
if not status then drop_entry(ARGV[2], ARGV[3]); return 'missing' end
if f[3] ~= ARGV[3] then drop_entry(ARGV[2], ARGV[3]); return 'stale_entry' end
if status == 'succeeded' or status == 'failed' then
  drop_entry(ARGV[2], ARGV[3]); return 'finished'
end
local attempts = tonumber(f[2] or '0')
if attempts >= tonumber(ARGV[5]) then
  -- every allowed start ended without a settlement: the job kills its workers
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[4], 'error', ARGV[6])
  move(ARGV[7], status, 'failed')
  drop_entry(ARGV[2], ARGV[3])
  return 'exhausted'
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'attempts', attempts + 1,
  'started_at', ARGV[4], 'progress', '0')
move(ARGV[7], status, 'running')
return 'ok'
"""

# KEYS: job, stream. ARGV: consumer, group, entry, progress ('' = unchanged)
TOUCH = """
if not owns(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
-- XCLAIM by the owner itself resets the entry's idle time: the lease is renewed
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, ARGV[3], 'JUSTID')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
return 1
"""

# ARGV: consumer, group, entry, now, result_json, job_id
COMPLETE = """
if not owns(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'progress', '1', 'result', ARGV[5],
  'finished_at', ARGV[4], 'entry', '')
redis.call('HDEL', KEYS[1], 'error')
move(ARGV[6], 'running', 'succeeded')
drop_entry(ARGV[2], ARGV[3])
return 1
"""

# ARGV: consumer, group, entry, now, error_json, permanent, max_attempts, retry_at, job_id
FAIL = """
if not owns(ARGV[1], ARGV[2], ARGV[3]) then return 'lost' end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
drop_entry(ARGV[2], ARGV[3])
if ARGV[6] == '1' or attempts >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[5], 'finished_at', ARGV[4],
    'entry', '')
  move(ARGV[9], 'running', 'failed')
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[5], 'progress', '0',
  'worker', '', 'entry', '')
move(ARGV[9], 'running', 'queued')
redis.call('ZADD', KEYS[8], ARGV[8], ARGV[9])
return 'retry'
"""

# ARGV: consumer, group, entry, job_id
RELEASE = """
if not owns(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '1')
drop_entry(ARGV[2], ARGV[3])
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[4])
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', '0', 'worker', '', 'entry', entry,
  'attempts', math.max(0, attempts - 1))
move(ARGV[4], 'running', 'queued')
return 1
"""

# Like RELEASE, but the job waits in the delayed set until ARGV[5] (a stream lock another
# worker holds): the attempt is not counted. ARGV: consumer, group, entry, job_id, retry_at
DEFER = """
if not owns(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '1')
drop_entry(ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', '0', 'worker', '', 'entry', '',
  'attempts', math.max(0, attempts - 1))
move(ARGV[4], 'running', 'queued')
redis.call('ZADD', KEYS[8], ARGV[5], ARGV[4])
return 1
"""

# An entry idle past the visibility timeout, just XAUTOCLAIMed by ARGV[1] (the reclaimer, a
# busy worker's heartbeat): its job goes back onto the stream as a new entry (any free worker
# takes it), or fails with worker_lost when every allowed start is used up. The attempt of the
# dead worker stays counted. ARGV: consumer, group, entry, now, max_attempts, lost_error_json,
# job_id
REQUEUE = """
local pending = redis.call('XPENDING', KEYS[2], ARGV[2], ARGV[3], ARGV[3], 1, ARGV[1])
if #pending == 0 then return 'not_owner' end
local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'entry')
local status = f[1]
drop_entry(ARGV[2], ARGV[3])
if not status then return 'missing' end
if f[3] ~= ARGV[3] then return 'stale_entry' end
if status ~= 'running' and status ~= 'queued' then return 'finished' end
if status == 'running' and tonumber(f[2] or '0') >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[4], 'error', ARGV[6],
    'entry', '')
  move(ARGV[7], status, 'failed')
  return 'exhausted'
end
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[7])
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', '0', 'worker', '', 'entry', entry)
move(ARGV[7], status, 'queued')
return 'requeued'
"""

# Per-stream lock leases (a STRING holding the owner's token ``<worker>:<random>``, with a
# TTL). Taken when free, or when it is a leftover of the same worker (which runs one job at a
# time, so that lease belongs to a job of its own that ended without releasing it, e.g. during
# a Redis outage); renewing and releasing check the token.
# KEYS: lock. ARGV: token, owner prefix ('<worker>:'), ttl_ms
LOCK_TAKE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS: lock. ARGV: token, ttl_ms
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lock. ARGV: token
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: delayed, stream, job. ARGV: job_id
PROMOTE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[3], 'status') ~= 'queued' then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1])
redis.call('HSET', KEYS[3], 'entry', entry)
return 1
"""


@dataclass(frozen=True)
class Scripts:
    """The registered scripts of one client (``Script`` objects call ``EVALSHA``, falling back
    to ``EVAL`` after a server restart)."""

    enqueue: Script
    commit_upload: Script
    start: Script
    touch: Script
    complete: Script
    fail: Script
    release: Script
    promote: Script
    defer: Script
    requeue: Script
    lock_take: Script
    lock_renew: Script
    lock_release: Script


def register(client: redis.Redis) -> Scripts:
    """Register every script on ``client`` (no round trip until first use)."""
    return Scripts(
        enqueue=client.register_script(_COMMON + ENQUEUE),
        commit_upload=client.register_script(_COMMON + COMMIT_UPLOAD),
        start=client.register_script(_COMMON + START),
        touch=client.register_script(_COMMON + TOUCH),
        complete=client.register_script(_COMMON + COMPLETE),
        fail=client.register_script(_COMMON + FAIL),
        release=client.register_script(_COMMON + RELEASE),
        promote=client.register_script(PROMOTE),
        defer=client.register_script(_COMMON + DEFER),
        requeue=client.register_script(_COMMON + REQUEUE),
        lock_take=client.register_script(LOCK_TAKE),
        lock_renew=client.register_script(LOCK_RENEW),
        lock_release=client.register_script(LOCK_RELEASE),
    )
