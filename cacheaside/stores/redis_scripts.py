"""Redis key layout and the Lua scripts behind ``RedisStore``'s leases and evictions.

Keys, for an entry key ``K`` (exactly what ``f.key(...)`` returns) and its slot
base ``B`` (``K`` when it has a hash tag, else ``"{" + K + "}"``, so every key
below shares ``K``'s hash slot):

- ``K``: the entry (``envelope`` bytes) with a PX expiry of ttl + grace.
- ``B:lease``: a hash ``{e: epoch, h: holder, t: holder deadline in server ms}``.
- ``B:waiters``: the ids of processes waiting for the holder's value.
- ``B:wake:<id>``: a list through which one waiter receives the value the key was
  filled with (the entry's bytes), or ``0`` when the lease was let go or revoked.
  Each wait has its own id, so nothing meant for an earlier wait reaches a later one.
- ``tag_key(prefix, tag)``: a sorted set of the entry keys stored (or being
  filled) with ``tag``, each scored by the server time (ms) after which neither
  its entry nor its lease can still exist; members past that are dropped when the
  set is next added to, and the set expires with its longest-lived member.

The epoch is what makes stale sets impossible: it is created by the first miss
after an eviction, every lease taken until the next eviction carries it, and an
eviction deletes the hash. A value is stored only if the hash still holds the
epoch its computation started under, so a slow computation is stored when no
eviction happened meanwhile (even after its lease ran out and a waiter took
over), and never after one. The holder and its deadline only decide who
computes and how long others wait. A set clears its own holder but keeps the
epoch, so that another computation under the same epoch can still store; the
hash expires ``record ms`` after the last miss that took a lease on the key.

Every script but the delete is given one key and touches only keys in its slot:
``ACQUIRE``, ``SET`` and ``RELEASE`` an entry key and the keys derived from it
(its lease, waiters and wake lists, under its ``{...}`` hash tag), ``TAG`` one tag
set. A fill records its tags with one ``TAG`` per tag, sent in the same pipeline
(one round trip) right after its ``ACQUIRE`` or ``SET``, so that the same calls run
on Redis Cluster. The delete script is given entry keys and tag sets and also
touches the members of tag sets, which it reads at run time: one round trip on a
single server; on a cluster an eviction by tag reads the members first and then
deletes per slot (see docs/design.md).
"""

from __future__ import annotations

from .envelope import FORMAT_VERSION, HEADER_SIZE, MAGIC

__all__ = ["ACQUIRE", "DELETE", "RELEASE", "SET", "TAG", "TAG_MARGIN_MS", "acquire_script", "tag_key", "wake_key"]

#: How long a wake list waits for its reader (a live waiter reads it within milliseconds).
WAKE_MS = 2000

#: How much longer a tag set keeps a member than the entry or lease it was recorded for
#: (``TAG`` runs in the same pipeline as the script that sets that expiry, on the same server clock).
TAG_MARGIN_MS = 1000


def _slot_base(key: str) -> str:
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key
    return "{" + key + "}"


def wake_key(key: str, waiter: str) -> str:
    """The list through which one waiter (``waiter`` is its id) receives the value of ``key``."""
    return f"{_slot_base(key)}:wake:{waiter}"


def tag_key(prefix: str, tag: str) -> str:
    return f"{prefix}:tag:{tag}"


_COMMON_LUA = f"""
local function slot_base(k)
  local s = string.find(k, '{{', 1, true)
  if s then
    local e = string.find(k, '}}', s + 1, true)
    if e and e > s + 1 then return k end
  end
  return '{{' .. k .. '}}'
end

-- The server's clock in ms: every expiry these scripts judge is on it.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Hand msg to every process waiting on a key (given its waiters set), once.
local function wake(waiters, msg)
  local base = string.sub(waiters, 1, -9)  -- strip ':waiters'
  for _, id in ipairs(redis.call('SMEMBERS', waiters)) do
    local list = base .. ':wake:' .. id
    redis.call('RPUSH', list, msg)
    redis.call('PEXPIRE', list, {WAKE_MS})
  end
  redis.call('DEL', waiters)
end

"""

# The scripts are given entry keys (and the delete, tag sets) only: the lease hash, waiters set
# and wake lists are derived from an entry key here, and share its hash slot. Fewer arguments
# matter: packing them is most of a client's cost per command.

#: KEYS: entry; ARGV: now (client seconds), candidate holder (also this wait's id),
#: and "1" to take the lease even over a fresh entry. LEASE_MS and RECORD_MS are the store's.
#: Returns {entry} when a fresh entry is there (and not forced); {nil, epoch, holder} when this
#: call took the lease; {nil, epoch, holder, ms left} when another holds it. A holder of another
#: process registers the caller as a waiter, to be woken through its wake list.
ACQUIRE = (
    _COMMON_LUA
    + f"""
local key = KEYS[1]
local v = redis.pcall('GET', key)
if type(v) == 'string' and ARGV[3] == nil and #v >= {HEADER_SIZE}
    and string.byte(v, 1) == {MAGIC} and string.byte(v, 2) == {FORMAT_VERSION} then
  local stored_at, ttl = struct.unpack('<dd', v, 7)
  if stored_at + ttl > tonumber(ARGV[1]) then return {{v}} end
end
local base = slot_base(key)
local lease = base .. ':lease'
local now = server_ms()
local rec = redis.call('HMGET', lease, 'e', 'h', 't')
local epoch = rec[1] or ARGV[2]
if rec[2] and tonumber(rec[3]) > now then
  local process = string.match(ARGV[2], '^(.*%.)')
  if string.sub(rec[2], 1, #process) ~= process then
    redis.call('SADD', base .. ':waiters', ARGV[2])
    redis.call('PEXPIRE', base .. ':waiters', RECORD_MS)
  end
  return {{false, epoch, rec[2], tonumber(rec[3]) - now}}
end
redis.call('HSET', lease, 'e', epoch, 'h', ARGV[2], 't', now + LEASE_MS)
redis.call('PEXPIRE', lease, RECORD_MS)
return {{false, epoch, ARGV[2]}}
"""
)

#: KEYS: entry; ARGV: epoch, holder, payload, px. Returns 1 if stored.
SET = (
    _COMMON_LUA
    + """
local key = KEYS[1]
local base = slot_base(key)
local rec = redis.call('HMGET', base .. ':lease', 'e', 'h')
if rec[1] ~= ARGV[1] then return 0 end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
if rec[2] == ARGV[2] then redis.call('HDEL', base .. ':lease', 'h', 't') end
wake(base .. ':waiters', ARGV[3])
return 1
"""
)

#: KEYS: entry; ARGV: holder. Lets the lease go (if still held) and wakes waiters.
RELEASE = (
    _COMMON_LUA
    + """
local base = slot_base(KEYS[1])
if redis.call('HGET', base .. ':lease', 'h') == ARGV[1] then
  redis.call('HDEL', base .. ':lease', 'h', 't')
  wake(base .. ':waiters', '0')
end
return 0
"""
)

#: KEYS: n entries, then tag sets; ARGV: n. Deletes the entries, their leases (revoking every
#: outstanding fill) and the tags' members (and the tag sets), and wakes their waiters.
DELETE = (
    _COMMON_LUA
    + """
local function drop(k)
  local base = slot_base(k)
  redis.call('DEL', k, base .. ':lease')
  wake(base .. ':waiters', '0')
end
local n = tonumber(ARGV[1])
for i = 1, n do drop(KEYS[i]) end
for i = n + 1, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'zset' then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do drop(m) end
  end
  redis.call('DEL', KEYS[i])
end
return 0
"""
)

#: KEYS: one tag set; ARGV: an entry key, and ms its entry or lease may live. Records the key
#: as a member until then (a member's time only grows), drops members whose time has passed,
#: and keeps the set as long as its longest-lived member. Anything else under the name is replaced.
TAG = _COMMON_LUA + f"""
local now = server_ms()
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local px = tonumber(ARGV[2]) + {TAG_MARGIN_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZADD', KEYS[1], 'GT', now + px, ARGV[1])
if redis.call('PTTL', KEYS[1]) < px then redis.call('PEXPIRE', KEYS[1], px) end
return 0
"""


def acquire_script(lease_ms: int, record_ms: int) -> str:
    """``ACQUIRE`` with a store's lease and record times."""
    return ACQUIRE.replace("RECORD_MS", str(record_ms)).replace("LEASE_MS", str(lease_ms))
