"""The server-side Lua scripts of the Redis driver; each runs atomically.

Every script gets ``KEYS[1]`` = the revision counter (it routes the call to the
hash tag's slot on a Cluster), ``ARGV[1]`` = the physical key prefix (``{tag}:``,
every other key is derived from it, so all share one slot) and ``ARGV[2]`` = how
many log entries to keep. Each starts by reaping what has expired,
so a change is never applied or read on top of an expiry that was not logged yet.

Layout (P = ``{tag}:``): ``P v:<key>`` holds ``<version>:<value>``, prefixed by
``~`` when the key has a ttl or a lease (so a plain put knows without a lookup); ``P index`` is a
ZSET (score 0) of live keys; ``P revision`` the counter; ``P log`` a stream with one
entry ``<revision>-0`` per revision whose field ``c`` packs that revision's changes
as ``<u|d><key length>:<key><value length>:<value>``; ``P expiry`` a ZSET of
deadlines (ms, server clock) of ``k<key>`` (ttl keys) and ``l<lease id>`` (leases);
``P epoch`` the identity of this history (see REAP);
``P leases`` a hash lease id -> ttl ms; ``P lease:<id>`` the set of a lease's keys;
``P attached`` a hash key -> ``t`` (has a ttl) or its lease id; ``P leaseid`` the
lease id counter.
"""

from __future__ import annotations

__all__ = [
    "COMMIT",
    "PUT",
    "DELETE_RANGE",
    "GRANT_LEASE",
    "KEEPALIVE_LEASE",
    "LEASE_TTL",
    "RANGE",
    "REAP",
    "REVOKE_LEASE",
]

_PRELUDE = r"""
local P = ARGV[1]
local REVISION, INDEX, LOG, EXPIRY, LEASES, ATTACHED =
  KEYS[1], P .. 'index', P .. 'log', P .. 'expiry', P .. 'leases', P .. 'attached'
local HISTORY = ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function encode(action, key, value)
  return action .. #key .. ':' .. key .. #value .. ':' .. value
end

local function log_changes(parts)
  local revision = redis.call('INCR', REVISION)
  redis.call('XADD', LOG, 'MAXLEN', HISTORY, revision .. '-0', 'c', table.concat(parts))
  return revision
end

local function detach(key)
  local attachment = redis.call('HGET', ATTACHED, key)
  if attachment then
    redis.call('HDEL', ATTACHED, key)
    if attachment == 't' then
      redis.call('ZREM', EXPIRY, 'k' .. key)
    else
      redis.call('SREM', P .. 'lease:' .. attachment, key)
    end
  end
end

local function remove(key, parts)
  detach(key)
  redis.call('DEL', P .. 'v:' .. key)
  redis.call('ZREM', INDEX, key)
  parts[#parts + 1] = encode('d', key, '')
end

local function drop_lease(id, parts)
  local keys = redis.call('SMEMBERS', P .. 'lease:' .. id)
  table.sort(keys)
  for _, key in ipairs(keys) do
    if redis.call('ZSCORE', INDEX, key) then remove(key, parts) end
  end
  redis.call('DEL', P .. 'lease:' .. id)
  redis.call('HDEL', LEASES, id)
  redis.call('ZREM', EXPIRY, 'l' .. id)
end

-- Remove every key and lease whose deadline has passed, as one logged revision.
local function reap(now)
  local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now)
  if #due == 0 then return end
  local parts = {}
  for _, member in ipairs(due) do
    local name = string.sub(member, 2)
    if string.sub(member, 1, 1) == 'k' then
      redis.call('ZREM', EXPIRY, member)
      if redis.call('ZSCORE', INDEX, name) then remove(name, parts) end
    else
      drop_lease(name, parts)
    end
  end
  if #parts > 0 then log_changes(parts) end
end

local function current_revision()
  return tonumber(redis.call('GET', REVISION) or '0')
end

-- The keys selected by ARGV[3] (exact key or ''), ARGV[4]..ARGV[5] (ZRANGEBYLEX bounds or '').
local function select_keys()
  local keys = {}
  if ARGV[3] ~= '' and redis.call('ZSCORE', INDEX, ARGV[3]) then keys[1] = ARGV[3] end
  if ARGV[4] ~= '' then
    for _, key in ipairs(redis.call('ZRANGEBYLEX', INDEX, ARGV[4], ARGV[5])) do
      keys[#keys + 1] = key
    end
  end
  return keys
end
"""

REAP = (
    _PRELUDE
    + r"""
reap(now_ms())
-- The epoch names this history: a wiped database gets a new one at its first reap,
-- so a watch can tell a reset from a revision that merely moved on.
local t = redis.call('TIME')
redis.call('SET', P .. 'epoch', t[1] .. '.' .. t[2], 'NX')
return {current_revision(), redis.call('GET', P .. 'epoch')}
"""
)
"""Reap expired keys and leases; returns the current revision."""

COMMIT = (
    _PRELUDE
    + r"""
-- ARGV[3..]: per operation a header 'kind|version|ttl ms|lease id' (kind p c u d k;
-- empty fields mean none), the key and the value.
-- Returns {revision} on success, {0, version...} (0 = absent) when a condition fails,
-- {-1, index} when a lease is gone.
local now = now_ms()
reap(now)
local count = (#ARGV - 2) / 3
local kinds, versions, ttls, leases, failed = {}, {}, {}, {}, false
for i = 1, count do
  local kind, expected, ttl, lease = string.match(ARGV[i * 3], '^(%a)|(%d*)|(%d*)|(%d*)$')
  kinds[i], ttls[i], leases[i] = kind, ttl, lease
  local version = 0
  if kind ~= 'p' then
    local data = redis.call('GET', P .. 'v:' .. ARGV[i * 3 + 1])
    if data then version = tonumber(string.match(data, '^~?(%d+):')) end
    if kind == 'c' or (kind == 'k' and expected == '0') then
      if version ~= 0 then failed = true end
    elseif version == 0 or (expected ~= '' and tonumber(expected) ~= version) then
      failed = true
    end
  end
  versions[i] = version
end
if failed then
  local reply = {0}
  for i = 1, count do reply[i + 1] = versions[i] end
  return reply
end
local deadlines = {}
for i = 1, count do
  if leases[i] ~= '' then
    local deadline = redis.call('ZSCORE', EXPIRY, 'l' .. leases[i])
    if not deadline then return {-1, i - 1} end
    deadlines[i] = tonumber(deadline)
  end
end
local parts = {}
for i = 1, count do
  local kind, key = kinds[i], ARGV[i * 3 + 1]
  if kind == 'd' then
    remove(key, parts)
  elseif kind ~= 'k' then
    parts[#parts + 1] = encode('u', key, ARGV[i * 3 + 2])
  end
end
if #parts == 0 then return {current_revision()} end
local revision = redis.call('INCR', REVISION)
for i = 1, count do
  local kind = kinds[i]
  if kind ~= 'd' and kind ~= 'k' then
    local key = ARGV[i * 3 + 1]
    local data_key = P .. 'v:' .. key
    detach(key)
    local mark = ''
    if ttls[i] ~= '' or leases[i] ~= '' then mark = '~' end
    redis.call('SET', data_key, mark .. revision .. ':' .. ARGV[i * 3 + 2])
    redis.call('ZADD', INDEX, 0, key)
    if ttls[i] ~= '' then
      local deadline = now + tonumber(ttls[i])
      redis.call('HSET', ATTACHED, key, 't')
      redis.call('ZADD', EXPIRY, deadline, 'k' .. key)
      redis.call('PEXPIREAT', data_key, deadline)
    elseif leases[i] ~= '' then
      redis.call('HSET', ATTACHED, key, leases[i])
      redis.call('SADD', P .. 'lease:' .. leases[i], key)
      redis.call('PEXPIREAT', data_key, deadlines[i])
    end
  end
end
redis.call('XADD', LOG, 'MAXLEN', HISTORY, revision .. '-0', 'c', table.concat(parts))
return {revision}
"""
)
"""Apply a transaction atomically (see the comment at its top for ARGV and reply)."""

PUT = (
    r"""
-- The common case, kept lean: one unconditional write without ttl or lease.
-- ARGV[3]: key, ARGV[4]: value. Returns the new revision.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local P, key = ARGV[1], ARGV[3]
if #redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now, 'LIMIT', 0, 1) > 0 then
"""
    + _PRELUDE
    + r"""
  reap(now)
end
local revision = redis.call('INCR', KEYS[1])
local value = ARGV[4]
local previous = redis.call('SET', P .. 'v:' .. key, revision .. ':' .. value, 'GET')
if not previous then
  redis.call('ZADD', P .. 'index', 0, key)
elseif string.byte(previous, 1) == 126 then  -- '~': detach it from its ttl or lease
  local attachment = redis.call('HGET', P .. 'attached', key)
  redis.call('HDEL', P .. 'attached', key)
  if attachment == 't' then
    redis.call('ZREM', P .. 'expiry', 'k' .. key)
  elseif attachment then
    redis.call('SREM', P .. 'lease:' .. attachment, key)
  end
end
redis.call('XADD', P .. 'log', 'MAXLEN', ARGV[2], revision .. '-0', 'c',
  'u' .. #key .. ':' .. key .. #value .. ':' .. value)
return revision
"""
)
"""Write one key unconditionally, with no ttl or lease (what ``put`` does most)."""

RANGE = (
    _PRELUDE
    + r"""
-- Returns {revision, key, data, key, data, ...}.
reap(now_ms())
local reply = {current_revision()}
for _, key in ipairs(select_keys()) do
  local data = redis.call('GET', P .. 'v:' .. key)
  if data then
    reply[#reply + 1] = key
    reply[#reply + 1] = data
  end
end
return reply
"""
)
"""One consistent read of a key or prefix, with the revision it is consistent with."""

DELETE_RANGE = (
    _PRELUDE
    + r"""
reap(now_ms())
local parts = {}
for _, key in ipairs(select_keys()) do remove(key, parts) end
if #parts > 0 then log_changes(parts) end
return #parts
"""
)
"""Delete every selected key as one revision; returns how many."""

GRANT_LEASE = (
    _PRELUDE
    + r"""
-- ARGV[3]: ttl ms. Returns the new lease id.
local now = now_ms()
reap(now)
local id = redis.call('INCR', P .. 'leaseid')
redis.call('HSET', LEASES, id, ARGV[3])
redis.call('ZADD', EXPIRY, now + tonumber(ARGV[3]), 'l' .. id)
return id
"""
)

KEEPALIVE_LEASE = (
    _PRELUDE
    + r"""
-- ARGV[3]: lease id. Returns 1 if refreshed, 0 if the lease is gone.
local now = now_ms()
reap(now)
local ttl = redis.call('HGET', LEASES, ARGV[3])
if not ttl then return 0 end
local deadline = now + tonumber(ttl)
redis.call('ZADD', EXPIRY, deadline, 'l' .. ARGV[3])
for _, key in ipairs(redis.call('SMEMBERS', P .. 'lease:' .. ARGV[3])) do
  redis.call('PEXPIREAT', P .. 'v:' .. key, deadline)
end
return 1
"""
)

LEASE_TTL = (
    _PRELUDE
    + r"""
-- ARGV[3]: lease id. Returns milliseconds left, or -1 if the lease is gone.
local now = now_ms()
reap(now)
local deadline = redis.call('ZSCORE', EXPIRY, 'l' .. ARGV[3])
if not deadline then return -1 end
return math.max(0, tonumber(deadline) - now)
"""
)

REVOKE_LEASE = (
    _PRELUDE
    + r"""
-- ARGV[3]: lease id. Deletes the lease and its keys (one revision).
reap(now_ms())
if redis.call('HEXISTS', LEASES, ARGV[3]) == 0 then return 0 end
local parts = {}
drop_lease(ARGV[3], parts)
if #parts > 0 then log_changes(parts) end
return 1
"""
)
