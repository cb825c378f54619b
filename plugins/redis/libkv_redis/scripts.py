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

Every writing script checks everything first (conditions, leases, deadlines) with
reads only, and only then writes; its first write is the log entry (XADD), a command
Redis refuses when out of memory before anything else was written. So a refused
write leaves nothing behind and no revision without its log entry. (Reaping is the
exception by design: it removes first, which never fails and frees memory, then logs.)

Counters that are missing (a new key space, or one a restart without persistence
wiped) start at the server clock in microseconds, not at 1, so a wiped space issues
revisions, versions and lease ids above anything it issued before (see the README).
Numbers are formatted with ``%d``: Lua's own ``tostring`` switches to exponent
notation above 1e14.
"""

from __future__ import annotations

__all__ = [
    "COMMIT",
    "PUT",
    "WRITE_ONE",
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
-- Deadlines are milliseconds in ZSET scores and Lua numbers, both doubles: exact up to 2^53.
local MAX_DEADLINE = 9007199254740992

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(number)
  return string.format('%d', number)
end

-- The value after counter ``key``, and whether the counter was missing: then it starts
-- at the server clock in microseconds.
local function next_value(key)
  local current = redis.call('GET', key)
  if current then return tonumber(current) + 1, false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), true
end

local function encode(action, key, value)
  return action .. #key .. ':' .. key .. #value .. ':' .. value
end

-- Log a revision's changes and move the counter to it; returns the revision as text.
-- The XADD comes first: if Redis refuses it (out of memory), nothing was written. The
-- first revision of a key space is marked (field f), so a watch from revision 0 (the
-- empty space) knows nothing comes before it.
local function log_revision(revision, first, payload)
  local text = int(revision)
  if first then
    redis.call('XADD', LOG, 'MAXLEN', HISTORY, text .. '-0', 'c', payload, 'f', '1')
  else
    redis.call('XADD', LOG, 'MAXLEN', HISTORY, text .. '-0', 'c', payload)
  end
  redis.call('SET', REVISION, text)
  return text
end

local function log_changes(parts)
  local revision, first = next_value(REVISION)
  return log_revision(revision, first, table.concat(parts))
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
-- Removing comes before logging here: removals never fail (nor are they refused when
-- Redis is out of memory, which they relieve), and after them the XADD is allowed.
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
-- so a watch can tell a reset from a revision that merely moved on. Written only when
-- missing, and then without failing: Redis refuses the write while it is out of
-- memory, and the epoch stays unknown (false) until it can be written.
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  local written = redis.pcall('SET', P .. 'epoch', epoch)
  if type(written) == 'table' and written.err then epoch = false end
end
return {current_revision(), epoch}
"""
)
"""Reap expired keys and leases; returns the current revision and the epoch (or nil)."""

COMMIT = (
    _PRELUDE
    + r"""
-- ARGV[3..]: per operation a header 'kind|version|ttl ms|lease id' (kind p c u d k;
-- empty fields mean none), the key and the value.
-- Returns {revision} on success, {0, version...} (0 = absent) when a condition fails,
-- {-1, index} when a lease is gone, {-2, index} when a deadline is out of range.
-- Everything is checked before the first write.
local now = now_ms()
reap(now)
local count = (#ARGV - 2) / 3
local kinds, versions, deadlines, leases, failed = {}, {}, {}, {}, false
for i = 1, count do
  local kind, expected, ttl, lease = string.match(ARGV[i * 3], '^([pcudk])|(%d*)|(%d*)|(%d*)$')
  if not kind then return redis.error_reply('malformed operation header ' .. ARGV[i * 3]) end
  kinds[i], leases[i] = kind, lease
  if ttl ~= '' then deadlines[i] = now + tonumber(ttl) end
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
for i = 1, count do
  if leases[i] ~= '' then
    local deadline = redis.call('ZSCORE', EXPIRY, 'l' .. leases[i])
    if not deadline then return {-1, i - 1} end
    deadlines[i] = tonumber(deadline)
  end
  if deadlines[i] and deadlines[i] > MAX_DEADLINE then return {-2, i - 1} end
end
local parts = {}
for i = 1, count do
  local kind, key = kinds[i], ARGV[i * 3 + 1]
  if kind == 'd' then
    parts[#parts + 1] = encode('d', key, '')
  elseif kind ~= 'k' then
    parts[#parts + 1] = encode('u', key, ARGV[i * 3 + 2])
  end
end
if #parts == 0 then return {current_revision()} end
-- Checked: now write, the log entry first.
local revision, first = next_value(REVISION)
local text = log_revision(revision, first, table.concat(parts))
for i = 1, count do
  local kind, key = kinds[i], ARGV[i * 3 + 1]
  if kind == 'd' then
    detach(key)
    redis.call('DEL', P .. 'v:' .. key)
    redis.call('ZREM', INDEX, key)
  elseif kind ~= 'k' then
    local data_key = P .. 'v:' .. key
    detach(key)
    local mark = ''
    if deadlines[i] then mark = '~' end
    redis.call('SET', data_key, mark .. text .. ':' .. ARGV[i * 3 + 2])
    redis.call('ZADD', INDEX, 0, key)
    if deadlines[i] then
      local deadline = int(deadlines[i])
      if leases[i] ~= '' then
        redis.call('HSET', ATTACHED, key, leases[i])
        redis.call('SADD', P .. 'lease:' .. leases[i], key)
      else
        redis.call('HSET', ATTACHED, key, 't')
        redis.call('ZADD', EXPIRY, deadline, 'k' .. key)
      end
      redis.call('PEXPIREAT', data_key, deadline)
    end
  end
end
return {revision}
"""
)
"""Apply a transaction atomically (see the comment at its top for ARGV and reply)."""

# The head of the lean scripts (PUT, WRITE_ONE): reap only when something is due, so
# the prelude's functions are made only then; ``now``, ``t`` (the server's TIME) and P.
_REAP_IF_DUE = (
    r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local P = ARGV[1]
if #redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now, 'LIMIT', 0, 1) > 0 then
"""
    + _PRELUDE
    + r"""
  reap(now)
end
"""
)

# Log ``payload`` as the next revision, the log entry first (see the module docstring);
# sets ``revision`` and its ``text``.
_LOG_NEXT = r"""
local current = redis.call('GET', KEYS[1])
local revision, text
if current then
  revision = tonumber(current) + 1
  text = string.format('%d', revision)
  redis.call('XADD', P .. 'log', 'MAXLEN', ARGV[2], text .. '-0', 'c', payload)
else  -- a new or wiped key space: start at the server clock in microseconds (see above)
  revision = tonumber(t[1]) * 1000000 + tonumber(t[2])
  text = string.format('%d', revision)
  redis.call('XADD', P .. 'log', 'MAXLEN', ARGV[2], text .. '-0', 'c', payload, 'f', '1')
end
redis.call('SET', KEYS[1], text)
"""

# Detach ``key`` from its ttl or lease if its ``previous`` data was marked '~'.
_DETACH_MARKED = r"""
if previous and string.byte(previous, 1) == 126 then
  local attachment = redis.call('HGET', P .. 'attached', key)
  redis.call('HDEL', P .. 'attached', key)
  if attachment == 't' then
    redis.call('ZREM', P .. 'expiry', 'k' .. key)
  elseif attachment then
    redis.call('SREM', P .. 'lease:' .. attachment, key)
  end
end
"""

PUT = (
    r"""
-- The common case, kept lean: one unconditional write without ttl or lease.
-- ARGV[3]: key, ARGV[4]: value. Returns the new revision.
"""
    + _REAP_IF_DUE
    + r"""
local key, value = ARGV[3], ARGV[4]
local payload = 'u' .. #key .. ':' .. key .. #value .. ':' .. value
"""
    + _LOG_NEXT
    + r"""
local previous = redis.call('SET', P .. 'v:' .. key, text .. ':' .. value, 'GET')
if not previous then redis.call('ZADD', P .. 'index', 0, key) end
"""
    + _DETACH_MARKED
    + r"""
return revision
"""
)
"""Write one key unconditionally, with no ttl or lease (what ``put`` does most)."""

WRITE_ONE = (
    r"""
-- One conditional write without ttl, kept lean: what a lock's create and release are.
-- ARGV[3]: kind (p c u d, as in COMMIT), ARGV[4]: the expected version or '',
-- ARGV[5]: a lease id or '', ARGV[6]: key, ARGV[7]: value. Replies as COMMIT does.
"""
    + _REAP_IF_DUE
    + r"""
local kind, expected, lease, key, value = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local data_key = P .. 'v:' .. key
local previous = redis.call('GET', data_key)
local version = 0
if previous then version = tonumber(string.match(previous, '^~?(%d+):')) end
if kind == 'c' then
  if version ~= 0 then return {0, version} end
elseif kind ~= 'p' and (version == 0 or (expected ~= '' and tonumber(expected) ~= version)) then
  return {0, version}
end
local deadline
if lease ~= '' then
  deadline = redis.call('ZSCORE', P .. 'expiry', 'l' .. lease)
  if not deadline then return {-1, 0} end
  deadline = tonumber(deadline)
  if deadline > 9007199254740992 then return {-2, 0} end
end
local payload
if kind == 'd' then
  payload = 'd' .. #key .. ':' .. key .. '0:'
else
  payload = 'u' .. #key .. ':' .. key .. #value .. ':' .. value
end
"""
    + _LOG_NEXT
    + _DETACH_MARKED
    + r"""
if kind == 'd' then
  redis.call('DEL', data_key)
  redis.call('ZREM', P .. 'index', key)
elseif lease ~= '' then
  redis.call('SET', data_key, '~' .. text .. ':' .. value)
  redis.call('ZADD', P .. 'index', 0, key)
  redis.call('HSET', P .. 'attached', key, lease)
  redis.call('SADD', P .. 'lease:' .. lease, key)
  redis.call('PEXPIREAT', data_key, string.format('%d', deadline))
else
  redis.call('SET', data_key, text .. ':' .. value)
  redis.call('ZADD', P .. 'index', 0, key)
end
return {revision}
"""
)
"""Apply one write without ttl (see the comment at its top for ARGV); COMMIT's reply."""

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
-- Removals never fail, so removing before logging (as reap does) leaves no half write.
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
-- ARGV[3]: ttl ms. Returns the new lease id, or -2 if its deadline is out of range.
local now = now_ms()
reap(now)
local deadline = now + tonumber(ARGV[3])
if deadline > MAX_DEADLINE then return -2 end
local id = int((next_value(P .. 'leaseid')))
redis.call('SET', P .. 'leaseid', id)
redis.call('HSET', LEASES, id, ARGV[3])
redis.call('ZADD', EXPIRY, int(deadline), 'l' .. id)
return tonumber(id)
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
-- The grant checked now + ttl; a deadline reached centuries later stays at the limit.
local deadline = int(math.min(now + tonumber(ttl), MAX_DEADLINE))
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
