"""Redis key layout and the Lua scripts behind ``RedisStore``'s leases and evictions.

Keys, for an entry key ``K`` (exactly what ``f.key(...)`` returns):

- ``K``: the entry (``envelope`` bytes) with a PX expiry of ttl + grace.
- ``lease_key(K)``: a hash ``{e: epoch, h: holder, t: holder deadline in server ms}``.
  It shares ``K``'s hash slot: ``K + ":lease"`` when ``K`` has a hash tag,
  else ``"{" + K + "}:lease"``. It is also the pub/sub channel on which
  waiters hear that the key was filled (``1``) or the lease let go (``0``).
- ``tag_key(prefix, tag)``: a set of the entry keys stored (or being filled)
  with ``tag``; it expires with its longest-lived member.

The epoch is what makes stale sets impossible: it is created by the first miss
after an eviction, every lease taken until the next eviction carries it, and an
eviction deletes the hash. A value is stored only if the hash still holds the
epoch its computation started under, so a slow computation is stored when no
eviction happened meanwhile (even after its lease ran out and a waiter took
over), and never after one. The holder and its deadline only decide who
computes and how long others wait. A set clears its own holder but keeps the
epoch, so that another computation under the same epoch can still store; the
hash expires ``record ms`` after the last miss that took a lease on the key.

Every key a script declares shares one slot (for Redis Cluster). The delete
script also touches the members of tag sets, which it reads at run time; on a
cluster those are grouped per slot by the store (see docs/design.md).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "DELETE", "PEEK", "RELEASE", "SET", "lease_key", "tag_key"]


def _has_hash_tag(key: str) -> bool:
    start = key.find("{")
    if start < 0:
        return False
    end = key.find("}", start + 1)
    return end > start + 1


def lease_key(key: str) -> str:
    """The lease hash (and notification channel) of ``key``, in ``key``'s hash slot."""
    return key + ":lease" if _has_hash_tag(key) else "{" + key + "}:lease"


def tag_key(prefix: str, tag: str) -> str:
    return f"{prefix}:tag:{tag}"


_LEASE_KEY_LUA = """
local function lease_key(k)
  local s = string.find(k, '{', 1, true)
  if s then
    local e = string.find(k, '}', s + 1, true)
    if e and e > s + 1 then return k .. ':lease' end
  end
  return '{' .. k .. '}:lease'
end
"""

# Record a key as a member of the tag sets KEYS[first..], keeping each set alive as
# long as its longest-lived member; drop up to two members that no longer exist.
_TAG_LUA = """
local function tag_members(first, member, px, sweep)
  for i = first, #KEYS do
    redis.call('SADD', KEYS[i], member)
    if redis.call('PTTL', KEYS[i]) < px then redis.call('PEXPIRE', KEYS[i], px) end
    if sweep then
      for _, m in ipairs(redis.call('SRANDMEMBER', KEYS[i], 2)) do
        if m ~= member and redis.call('EXISTS', m, lease_key(m)) == 0 then redis.call('SREM', KEYS[i], m) end
      end
    end
  end
end
"""

#: KEYS: entry, lease, tag sets...; ARGV: now (client seconds), holder, lease ms, record ms, force.
#: Returns {entry} when a fresh entry is there (and force is 0), else {nil, epoch, holder}:
#: the holder is ARGV[2] when this call took the lease, another one's while it is held.
ACQUIRE = (
    _LEASE_KEY_LUA
    + _TAG_LUA
    + """
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' and ARGV[5] == '0' and #v >= 38
    and string.byte(v, 1) == 202 and string.byte(v, 2) == 1 then
  local stored_at, ttl = struct.unpack('<dd', v, 7)
  if stored_at + ttl > tonumber(ARGV[1]) then return {v} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = redis.call('HMGET', KEYS[2], 'e', 'h', 't')
local epoch = rec[1] or ARGV[2]
if rec[2] and tonumber(rec[3]) > now then return {false, epoch, rec[2]} end
redis.call('HSET', KEYS[2], 'e', epoch, 'h', ARGV[2], 't', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
tag_members(3, KEYS[1], tonumber(ARGV[4]), false)
return {false, epoch, ARGV[2]}
"""
)

#: KEYS: entry, lease, tag sets...; ARGV: epoch, holder, payload, px. Returns 1 if stored.
SET = (
    _LEASE_KEY_LUA
    + _TAG_LUA
    + """
local rec = redis.call('HMGET', KEYS[2], 'e', 'h')
if rec[1] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
if rec[2] == ARGV[2] then redis.call('HDEL', KEYS[2], 'h', 't') end
tag_members(3, KEYS[1], tonumber(ARGV[4]), true)
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
)

#: KEYS: entry, lease; ARGV: holder. Lets the lease go (if still held) and wakes waiters.
RELEASE = """
if redis.call('HGET', KEYS[2], 'h') == ARGV[1] then
  redis.call('HDEL', KEYS[2], 'h', 't')
  redis.call('PUBLISH', KEYS[2], '0')
end
return 0
"""

#: KEYS: entry, lease. Returns {entry or nil, holder or nil, ms left on the holder's lease}.
PEEK = """
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then v = false end
local rec = redis.call('HMGET', KEYS[2], 'h', 't')
local left = 0
if rec[2] then
  local t = redis.call('TIME')
  left = tonumber(rec[2]) - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return {v, rec[1], left}
"""

#: KEYS: n (entry, lease) pairs, then tag sets; ARGV: n. Deletes the entries, their
#: leases (revoking every outstanding fill and waking its waiters) and the tags' members.
DELETE = (
    _LEASE_KEY_LUA
    + """
local function drop(k, l)
  redis.call('DEL', k)
  if redis.call('DEL', l) == 1 then redis.call('PUBLISH', l, '0') end
end
local n = tonumber(ARGV[1])
for i = 1, n do drop(KEYS[2 * i - 1], KEYS[2 * i]) end
for i = 2 * n + 1, #KEYS do
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[i])) do drop(m, lease_key(m)) end
  redis.call('DEL', KEYS[i])
end
return 0
"""
)
