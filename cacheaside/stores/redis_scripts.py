"""Redis key layout and the Lua scripts behind ``RedisStore``'s leases and evictions.

Keys, for an entry key ``K`` (exactly what ``f.key(...)`` returns, ``<prefix>:...``) and
its bookkeeping base ``B = <prefix>|K`` when ``K`` has a hash tag, else ``<prefix>|{K}``,
so that every key below shares ``K``'s hash slot:

- ``K``: the entry (``envelope`` bytes) with a PX expiry of ttl + grace.
- ``B:lease``: a hash ``{e: epoch, h: holder, t: holder deadline in server ms, g: tags}``.
- ``B:waiters``: the ids of processes waiting for the holder's value.
- ``B:wake:<id>``: a list through which one waiter receives the value the key was
  filled with (the entry's bytes), or ``0`` when the lease was let go or revoked.
  Each wait has its own id, so nothing meant for an earlier wait reaches a later one.
- ``tag_key(prefix, tag)`` = ``<prefix>|tag:<escaped tag>``: a sorted set of the entry keys
  stored (or being filled) with the tag, each scored by the server time (ms) after which
  neither its entry nor its lease can still exist; members past that are dropped when the
  set is next added to. A tag set has no expiry, so that no ``volatile-*`` maxmemory policy
  can evict it while entries it lists live on (only ``allkeys-*`` can: the store warns).
- ``index_key(prefix)`` = ``<prefix>|tagsets``: every tag set, scored by when its last member
  dies; each ``TAG`` sweeps up to two sets past that (on a cluster: ``INDEX``, then ``REAP``
  on each set's node), so a tag no longer used leaves nothing behind.

Every user key is ``<prefix>:`` followed by anything; every bookkeeping key is
``<prefix>|`` followed by something: no template, key callable or tag can produce one.

The epoch is what makes stale sets impossible: it is created by the first miss after an
eviction, every lease taken until the next eviction carries it, and an eviction deletes
the hash. A value is stored only if the hash still holds the epoch its computation
started under, so a slow computation is stored when no eviction happened meanwhile (even
after its lease ran out and a waiter took over), and never after one. The holder and its
deadline only decide who computes and how long others wait.

Freshness on the server: an entry is fresh while its remaining PTTL is over its grace
(the stale window in its header), the rule ``Entry.late`` states in Python, on the
server's clock measured from when the server stored it.

``ACQUIRE``, ``SET`` and ``RELEASE`` are given an entry key and its lease key and touch
only keys in their slot; ``TAG`` one tag set. On one server a fill records its tags in the
same script as its ``ACQUIRE`` or ``SET``, right after it (``with_tags``); a cluster sends one
``TAG`` per tag to each tag set's node. The
delete script is given entry keys and tag sets, and also touches the members of the tag
sets, which it reads at run time. Each script repairs what is not of the type it expects
under its keys (a junk value at a lease key never disables caching of that key).
"""

from __future__ import annotations

from .._encoding import escape
from .envelope import FORMAT_VERSION, HEADER_SIZE, MAGIC

__all__ = ["ACQUIRE", "DELETE", "DELETE_SPREAD", "INDEX", "PEEK", "REAP", "RELEASE", "SET", "TAG", "TAG_MARGIN_MS",
           "acquire_script", "book", "index_key", "lease_key", "tag_key", "wake_key", "with_tags"]

#: How long a wake list waits for its reader (a live waiter reads it within milliseconds).
WAKE_MS = 2000

#: How much longer a tag set keeps a member than the entry or lease it was recorded for
#: (``TAG`` runs in the same script, or right after the one, that sets that expiry, on the same server clock).
TAG_MARGIN_MS = 1000


def _has_tag(key: str) -> bool:
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def book(prefix: str, key: str) -> str:
    """The base of the bookkeeping keys of entry ``key``: in its hash slot, outside every user key."""
    return f"{prefix}|{key}" if _has_tag(key) else f"{prefix}|{{{key}}}"


def lease_key(prefix: str, key: str) -> str:
    return book(prefix, key) + ":lease"


def wake_key(prefix: str, key: str, waiter: str) -> str:
    """The list through which one waiter (``waiter`` is its id) receives the value of ``key``."""
    return f"{book(prefix, key)}:wake:{waiter}"


def tag_key(prefix: str, tag: str) -> str:
    return f"{prefix}|tag:{escape(tag)}"


def index_key(prefix: str) -> str:
    """The index of a prefix's tag sets: a sorted set scored by when each set's last member dies."""
    return f"{prefix}|tagsets"


_COMMON_LUA = f"""
-- The server's clock in ms: every expiry these scripts judge is on it.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A lease hash's fields, repairing what is not a hash under its name.
local function lease_of(lease, ...)
  local rec = redis.pcall('HMGET', lease, ...)
  if type(rec) == 'table' and rec.err then
    redis.call('DEL', lease)
    return {{}}
  end
  return rec
end

-- Hand msg to every process waiting on a key (given its lease key), once.
local function wake(lease, msg)
  local base = string.sub(lease, 1, -7)  -- strip ':lease'
  local waiters = base .. ':waiters'
  local ids = redis.pcall('SMEMBERS', waiters)
  if type(ids) == 'table' and ids.err then ids = {{}} end
  if #ids == 0 then return end
  for _, id in ipairs(ids) do
    local list = base .. ':wake:' .. id
    if type(redis.pcall('RPUSH', list, msg)) == 'table' then
      redis.call('DEL', list)
      redis.call('RPUSH', list, msg)
    end
    redis.call('PEXPIRE', list, {WAKE_MS})
  end
  redis.call('DEL', waiters)
end

"""

#: KEYS: entry, its lease; ARGV: candidate holder (also this wait's id), tags (as in the
#: envelope), mode: "" (a miss), with "r" (a refresh: take the lease even over a fresh entry)
#: and/or "t" (take over from another process's holder: after waiting lease_timeout for it; with
#: "r", to refresh in the foreground: under a new epoch, which refuses the fills under way), and
#: seen: "" or, for a background refresh, the packed ``stored_at`` of the entry it replaces (a
#: fresh entry stored at another time is returned).
#: LEASE_MS and RECORD_MS are the store's. Returns {entry} when a fresh entry is there (no
#: lease is taken); {false, epoch, holder} when this call took the lease; {false, epoch,
#: holder, ms left} when another holds it. A holder of another process registers the caller
#: as a waiter, to be woken through its wake list.
ACQUIRE = (
    _COMMON_LUA
    + """
local key, lease = KEYS[1], KEYS[2]
local refresh = string.find(ARGV[3], 'r', 1, true)
local take = string.find(ARGV[3], 't', 1, true)
local seen = ARGV[4]
if not refresh or #seen > 0 then
  local v = redis.pcall('GET', key)
  if type(v) == 'string' and #v >= HEADER_SIZE and string.byte(v, 1) == MAGIC
      and string.byte(v, 2) == FORMAT_VERSION then
    -- Fresh while more of its expiry is left than its stale window (the grace in its header);
    -- a refresh of the entry stored at seen (its stored_at's bytes) leaves one stored since alone.
    local grace = struct.unpack('<d', v, 23)
    if redis.call('PTTL', key) > grace * 1000 and (not refresh or string.sub(v, 7, 14) ~= seen) then
      return {v}
    end
  end
end
local now = server_ms()
local rec = lease_of(lease, 'e', 'h', 't')
local epoch = rec[1] or ARGV[1]
if refresh and take then epoch = ARGV[1] end  -- f.refresh(): a new epoch, so fills under way are refused
local deadline = tonumber(rec[3])
if rec[2] and deadline and deadline > now and not take then
  local process = string.match(ARGV[1], '^(.*%.)')
  if string.sub(rec[2], 1, #process) ~= process then
    local waiters = string.sub(lease, 1, -7) .. ':waiters'
    if type(redis.pcall('SADD', waiters, ARGV[1])) == 'table' then
      redis.call('DEL', waiters)
      redis.call('SADD', waiters, ARGV[1])
    end
    redis.call('PEXPIRE', waiters, RECORD_MS)
  end
  return {false, epoch, rec[2], deadline - now}
end
redis.call('HSET', lease, 'e', epoch, 'h', ARGV[1], 't', now + LEASE_MS, 'g', ARGV[2])
redis.call('PEXPIRE', lease, RECORD_MS)
return {false, epoch, ARGV[1]}
"""
).replace("HEADER_SIZE", str(HEADER_SIZE)).replace("FORMAT_VERSION", str(FORMAT_VERSION)).replace(
    "MAGIC", str(MAGIC)
)

#: KEYS: an entry. Returns {its bytes (false when none, or not a string), its PTTL}: the value
#: and the server's time to its expiry, read together (early refresh judges on the server's clock).
PEEK = """
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then return {false, -2} end
return {v, redis.call('PTTL', KEYS[1])}
"""

#: KEYS: entry, its lease; ARGV: epoch, holder, payload, px. Returns 1 if stored.
SET = (
    _COMMON_LUA
    + """
local key, lease = KEYS[1], KEYS[2]
local rec = lease_of(lease, 'e', 'h')
if rec[1] ~= ARGV[1] then return 0 end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
if rec[2] == ARGV[2] then redis.call('HDEL', lease, 'h', 't', 'g') end
wake(lease, ARGV[3])
return 1
"""
)

#: KEYS: entry, its lease; ARGV: holder. Lets the lease go (if still held) and wakes waiters.
RELEASE = (
    _COMMON_LUA
    + """
local lease = KEYS[2]
local rec = lease_of(lease, 'h')
if rec[1] == ARGV[1] then
  redis.call('HDEL', lease, 'h', 't', 'g')
  wake(lease, '0')
end
return 0
"""
)

_DROP_LUA = (
    _COMMON_LUA
    + f"""
local prefix = ARGV[2]
local function lease_of_key(k)
  local s = string.find(k, '{{', 1, true)
  if s then
    local e = string.find(k, '}}', s + 1, true)
    if e and e > s + 1 then return prefix .. '|' .. k .. ':lease' end
  end
  return prefix .. '|{{' .. k .. '}}:lease'
end
local function drop(k, lease)
  redis.call('DEL', k, lease)
  wake(lease, '0')
end
-- Whether the entry under k, or the fill in progress on it, carries tag.
local function carries(k, lease, tag)
  local needle = ',' .. tag .. ','
  local head = redis.pcall('GETRANGE', k, 0, {HEADER_SIZE - 1})
  if type(head) == 'string' and #head == {HEADER_SIZE} and string.byte(head, 1) == {MAGIC}
      and string.byte(head, 2) == {FORMAT_VERSION} then
    local size = struct.unpack('<H', head, {HEADER_SIZE - 1})
    if size > 0 then
      local tags = redis.call('GETRANGE', k, {HEADER_SIZE}, {HEADER_SIZE - 1} + size)
      if string.find(tags, needle, 1, true) then return true end
    end
  end
  local g = redis.pcall('HGET', lease, 'g')
  return type(g) == 'string' and string.find(g, needle, 1, true) ~= nil
end
-- Drop member m of a tag set if its entry or fill still carries tag.
local function drop_tagged(m, tag)
  local lease = lease_of_key(m)
  if carries(m, lease, tag) then drop(m, lease) end
end
"""
)

#: KEYS: n entries, then tag sets; ARGV: n, prefix, then each tag set's tag (escaped, as in
#: the envelope, without its commas). Deletes the entries and their leases (revoking every outstanding fill),
#: and of each tag set's members those whose entry or lease still carries the tag (and the
#: tag sets), and wakes their waiters.
DELETE = (
    _DROP_LUA
    + """
local n = tonumber(ARGV[1])
for i = 1, n do drop(KEYS[i], lease_of_key(KEYS[i])) end
for i = n + 1, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'zset' then
    local tag = ARGV[i - n + 2]
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do drop_tagged(m, tag) end
  end
  redis.call('DEL', KEYS[i])
end
return 0
"""
)

#: Redis Cluster: ``DELETE`` for the keys of one node, in any of its slots (the caller found the
#: tag sets' members first). KEYS: one of them (it routes the script to their node); ARGV: n,
#: prefix, n entry keys, then groups of a tag (escaped), a count c and c members of its tag set.
#: Deletes the n entries and their leases, and each group's members whose entry or lease still
#: carries its tag, and wakes their waiters. The other keys are not declared: a script without a
#: shebang line may touch any key its node serves (a key it does not serve fails the whole script,
#: before any write, with "non local key").
DELETE_SPREAD = (
    _DROP_LUA
    + """
local n = tonumber(ARGV[1])
for i = 3, n + 2 do drop(ARGV[i], lease_of_key(ARGV[i])) end
local i = n + 3
while i <= #ARGV do
  local tag, count = ARGV[i], tonumber(ARGV[i + 1])
  for j = i + 2, i + 1 + count do drop_tagged(ARGV[j], tag) end
  i = i + 2 + count
end
return 0
"""
)

_TAGS_LUA = _COMMON_LUA + """
-- The time after which no member of tag set name is live, dropping the members past it (0 when
-- none is left, or when something else is under the name).
local function live_until(name, now)
  if redis.call('TYPE', name).ok ~= 'zset' then return 0 end
  redis.call('ZREMRANGEBYSCORE', name, '-inf', '(' .. now)
  local last = redis.call('ZRANGE', name, -1, -1, 'WITHSCORES')
  return tonumber(last[2] or 0)
end

-- Sweep the index: forget up to n of its tag sets whose members all died (and delete what is
-- left of them), keeping the others indexed until their own last member.
local function sweep(index, now, n)
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. now, 'LIMIT', 0, n)) do
    local until_ms = live_until(name, now)
    if until_ms > 0 then redis.call('ZADD', index, until_ms, name) else redis.call('ZREM', index, name) end
  end
end
"""

#: KEYS: one tag set, and (on one server) the index of tag sets; ARGV: an entry key, and ms its
#: entry or lease may live. Records the key as a member until then (a member's time only grows)
#: and drops members whose time has passed. The set has no expiry of its own, so that a
#: ``volatile-*`` maxmemory policy never evicts it; the index (scored by when each set's last
#: member dies) lets each ``TAG`` sweep two dead sets away. Returns when the set's last member
#: dies (a cluster indexes it with ``INDEX``). Anything else under the set's name is replaced.
TAG = _TAGS_LUA + f"""
local now = server_ms()
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[1], 'GT', now + tonumber(ARGV[2]) + {TAG_MARGIN_MS}, ARGV[1])
redis.call('PERSIST', KEYS[1])
local until_ms = live_until(KEYS[1], now)
if KEYS[2] then
  redis.call('ZADD', KEYS[2], 'GT', until_ms, KEYS[1])
  sweep(KEYS[2], now, 2)
end
return until_ms
"""

#: Redis Cluster: KEYS: the index of tag sets; ARGV: pairs of a tag set and when its last member
#: dies (``TAG``'s replies). Indexes them, and forgets and returns up to two sets per pair that
#: were due (their members all dead by this node's clock), for ``REAP`` on their own nodes.
INDEX = _COMMON_LUA + """
local now = server_ms()
for i = 1, #ARGV, 2 do redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, #ARGV)
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""

#: Redis Cluster: KEYS: a tag set ``INDEX`` returned. Drops its dead members (Redis deletes an
#: empty set); returns when its last member dies, or 0 when none is left (to index it again).
REAP = _TAGS_LUA + """
return live_until(KEYS[1], server_ms())
"""


def acquire_script(lease_ms: int, record_ms: int) -> str:
    """``ACQUIRE`` with a store's lease and record times."""
    return ACQUIRE.replace("RECORD_MS", str(record_ms)).replace("LEASE_MS", str(lease_ms))


def with_tags(script: str) -> str:
    """``script`` (``ACQUIRE``'s or ``SET``'s source: two keys, four arguments), then ``TAG`` for each
    tag set, in one script: a fill's step and its tags in one ``EVALSHA`` instead of a pipeline of
    several. One server only (it touches keys of many slots; a cluster sends ``TAG`` to each set's
    node). KEYS: entry, lease, the index of tag sets, then the tag sets; ARGV: the script's four,
    then the ms the tags are kept. Replies what ``script`` replies. The bodies run as Lua functions
    whose parameters are named ``KEYS`` and ``ARGV``, so each reads its own.
    """
    assert script.startswith(_COMMON_LUA) and TAG.startswith(_TAGS_LUA)
    body, tag = script[len(_COMMON_LUA):], TAG[len(_TAGS_LUA):]
    return (_TAGS_LUA + "local function step(KEYS, ARGV)\n" + body + "\nend\n"
            + "local function tag(KEYS, ARGV)\n" + tag + "\nend\n" + """
local reply = step({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
for i = 4, #KEYS do tag({KEYS[i], KEYS[3]}, {KEYS[1], ARGV[5]}) end
return reply
""")
