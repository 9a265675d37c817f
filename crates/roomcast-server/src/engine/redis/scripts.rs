//! What the Redis engine keeps in Redis, and the scripts that change it.
//!
//! Every key of room `R` starts with `rc:{R}:`, so the hash tag `{R}` puts all of them in
//! one slot (the same layout works on Redis Cluster):
//!
//! | key | type | what |
//! |---|---|---|
//! | `rc:{R}:meta` | hash | `epoch`, `top` (the last offset given) |
//! | `rc:{R}:log` | stream | the history: entry id `OFFSET-0`, fields `t` (ms) and `j` (the `message` JSON) |
//! | `rc:{R}:id:ID` | string | an idempotency key: `OFFSET EPOCH` of its first publish |
//! | `rc:{R}:pc` | hash | presence: `client\nnode` to how many memberships that node holds |
//! | `rc:{R}:pe` | sorted set | presence: `client\nnode` scored by when it expires (ms) |
//! | `rc:{R}:pt` | hash | presence: client to its memberships over every node |
//! | `rc:{R}:pi` | hash | presence: client to its info (the first one given) |
//! | `rc:{R}:mc` | hash | node to its members in the room (for `/api/rooms`) |
//!
//! The room's channel is `rc:{R}`. What goes on it is `m OFFSET EPOCH JSON` for a
//! message, `p+CLIENT\nINFO` and `p-CLIENT` for presence.
//!
//! Times come from Redis (`TIME`), so every node's messages share one clock.

/// The keys of one room.
#[derive(Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(room: &str) -> Self {
        Self {
            prefix: format!("rc:{{{room}}}:"),
        }
    }
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    /// The keys every room script but publish takes, in the order [`ROOM_KEYS`] names them.
    pub(super) fn all(&self) -> [String; 7] {
        ["meta", "log", "pc", "pe", "pt", "pi", "mc"].map(|k| self.key(k))
    }
    /// The room's pub/sub channel.
    pub(super) fn channel(&self) -> String {
        self.prefix.trim_end_matches(':').to_owned()
    }
}

/// The room of a channel name (`rc:{R}`).
pub(super) fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("rc:{")?.strip_suffix('}')
}

/// Lua shared by the scripts: the time, the epoch (read or set), and the presence sweep.
const COMMON: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The room's epoch; a room without one (new, or whose state expired) gets `fresh` and
-- starts again at offset 0.
local function epoch_of(meta, log, fresh)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = fresh
    redis.call('DEL', log)
    redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
  end
  return epoch
end
-- A node that delivered the room up to `last` in `known` finds the top below it: Redis
-- lost messages it had acknowledged (a failover to a replica that had not received them
-- yet, or a restart from an older file). Their offsets would be given again to other
-- messages, which every node would drop as delivered: a silent hole. So the room starts
-- a new epoch (`fresh`), which tells every member and every later `since`
-- `recovered:false`. Returns the epoch to go on with.
local function break_if_behind(meta, log, epoch, known, last, fresh)
  if epoch ~= known or tonumber(redis.call('HGET', meta, 'top') or '0') >= tonumber(last) then
    return epoch
  end
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', fresh, 'top', 0)
  return fresh
end
-- Removes the presence entries whose node stopped refreshing them; a client whose last
-- membership goes is told to the room as left.
local function sweep(pc, pe, pt, pi, channel, now)
  local gone = redis.call('ZRANGEBYSCORE', pe, '-inf', now)
  for _, f in ipairs(gone) do
    local n = tonumber(redis.call('HGET', pc, f) or '0')
    redis.call('HDEL', pc, f)
    redis.call('ZREM', pe, f)
    local client = string.match(f, '^(.*)\n')
    if client and redis.call('HINCRBY', pt, client, -n) <= 0 then
      redis.call('HDEL', pt, client)
      redis.call('HDEL', pi, client)
      redis.call(PUB, channel, 'p-' .. client)
    end
  end
end
"#;

/// The names of [`Keys::all`], in front of every script that takes them.
const ROOM_KEYS: &str = r#"
local meta, log, pc, pe, pt, pi, mc = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- Every key of the room outlives the last write or check by `keep` ms (0: forever).
local function keep_alive(keep)
  if keep > 0 then
    for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, keep) end
  end
end
"#;

/// Publish (the hot path: three keys only). KEYS: meta, log, idempotency key (or meta
/// when there is no id).
/// ARGV: fresh epoch, JSON head (up to the epoch), JSON middle (after the offset, up to
/// the ts), max messages, max age ms, id ttl ms, channel, has id (1/0), keep ms, and the
/// epoch and last offset the publishing node delivered ('' and 0 for none: see
/// `break_if_behind`). Returns `{offset, epoch, duplicate}`.
pub(super) const PUBLISH: &str = r#"
local meta, log, idem = KEYS[1], KEYS[2], KEYS[3]
-- An id names `OFFSET EPOCH`: seen in another epoch (the room's history broke off
-- since), the message is not in this one, and is stored again.
if ARGV[8] == '1' then
  local seen = redis.call('GET', idem)
  local epoch = redis.call('HGET', meta, 'epoch')
  if seen and epoch then
    local offset, in_epoch = string.match(seen, '^(%d+) (.*)$')
    if in_epoch == epoch then
      return {tonumber(offset), epoch, 1}
    end
  end
end
local now = now_ms()
local epoch = epoch_of(meta, log, ARGV[1])
epoch = break_if_behind(meta, log, epoch, ARGV[10], ARGV[11], ARGV[1])
local offset = redis.call('HINCRBY', meta, 'top', 1)
local json = ARGV[2] .. epoch .. '","offset":' .. offset .. ARGV[3] .. now .. '}'
redis.call('XADD', log, 'MAXLEN', ARGV[4], offset .. '-0', 't', now, 'j', json)
-- Entries past the age go from the front, a few per publish (timestamps grow with
-- offsets: Redis's one clock). Reading one entry at a time keeps the common case, where
-- nothing is old, to one small read.
local cutoff = now - tonumber(ARGV[5])
for _ = 1, 16 do
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  if not first or tonumber(first[2][2]) >= cutoff then break end
  redis.call('XDEL', log, first[1])
end
local keep = tonumber(ARGV[9])
if keep > 0 then
  redis.call('PEXPIRE', meta, keep)
  redis.call('PEXPIRE', log, keep)
end
if ARGV[8] == '1' then
  redis.call('SET', idem, offset .. ' ' .. epoch, 'PX', ARGV[6])
end
redis.call(PUB, ARGV[7], 'm' .. offset .. ' ' .. epoch .. ' ' .. json)
return {offset, epoch, 0}
"#;

/// Join. KEYS: [`Keys::all`].
/// ARGV: fresh epoch, since epoch ('' for none), since offset, max entries, presence
/// (1/0), client, node, info, presence ttl ms, channel, keep ms.
/// Returns `{epoch, top, entries}` (entries after `since`, when its epoch is the room's).
pub(super) const JOIN: &str = r#"
local epoch = epoch_of(meta, log, ARGV[1])
local top = tonumber(redis.call('HGET', meta, 'top') or '0')
local entries = {}
local since = tonumber(ARGV[3])
if ARGV[2] == epoch and since < top then
  entries = redis.call('XRANGE', log, (since + 1) .. '-0', '+', 'COUNT', ARGV[4])
end
redis.call('HINCRBY', mc, ARGV[7], 1)
if ARGV[5] == '1' then
  local now = now_ms()
  local f = ARGV[6] .. '\n' .. ARGV[7]
  redis.call('HINCRBY', pc, f, 1)
  redis.call('ZADD', pe, now + tonumber(ARGV[9]), f)
  if redis.call('HINCRBY', pt, ARGV[6], 1) == 1 then
    redis.call('HSET', pi, ARGV[6], ARGV[8])
    redis.call(PUB, ARGV[10], 'p+' .. ARGV[6] .. '\n' .. ARGV[8])
  end
end
keep_alive(tonumber(ARGV[11]))
return {epoch, top, entries}
"#;

/// Leave. KEYS: [`Keys::all`]. ARGV: client, node, presence (1/0), channel.
/// Takes from the client's total only what this node still had (a sweep may have
/// removed it already).
pub(super) const LEAVE: &str = r#"
if redis.call('HINCRBY', mc, ARGV[2], -1) <= 0 then redis.call('HDEL', mc, ARGV[2]) end
if ARGV[3] == '1' then
  local f = ARGV[1] .. '\n' .. ARGV[2]
  local had = tonumber(redis.call('HGET', pc, f) or '0')
  if had > 0 then
    if had == 1 then
      redis.call('HDEL', pc, f)
      redis.call('ZREM', pe, f)
    else
      redis.call('HINCRBY', pc, f, -1)
    end
    if redis.call('HINCRBY', pt, ARGV[1], -1) <= 0 then
      redis.call('HDEL', pt, ARGV[1])
      redis.call('HDEL', pi, ARGV[1])
      redis.call(PUB, ARGV[4], 'p-' .. ARGV[1])
    end
  end
end
return 1
"#;

/// A room's periodic check by a node that has members there: put back this node's
/// presence if Redis lost it (a restart, or a sweep while the node was cut off), refresh
/// it, sweep what expired, keep the room's state alive, and read its top.
/// KEYS: [`Keys::all`]. ARGV: node, presence ttl ms, channel, keep ms, this node's
/// members in the room, the epoch and last offset this node delivered ('' and 0 for
/// none), a fresh epoch, then for each visible client of this node: client,
/// memberships, info. Returns `{epoch or '', top}`.
///
/// A top below what the node delivered in the same epoch starts a new epoch (see
/// `break_if_behind`): a quiet room is checked here, a busy one by its next publish.
pub(super) const TICK: &str = r#"
local now = now_ms()
local expiry = now + tonumber(ARGV[2])
for i = 9, #ARGV, 3 do
  local client, n, info = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local f = client .. '\n' .. ARGV[1]
  if redis.call('HEXISTS', pc, f) == 0 then
    redis.call('HSET', pc, f, n)
    if redis.call('HINCRBY', pt, client, n) == n then
      redis.call('HSET', pi, client, info)
      redis.call(PUB, ARGV[3], 'p+' .. client .. '\n' .. info)
    end
  end
  redis.call('ZADD', pe, expiry, f)
end
sweep(pc, pe, pt, pi, ARGV[3], now)
redis.call('HSET', mc, ARGV[1], ARGV[5])
keep_alive(tonumber(ARGV[4]))
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'', 0} end
epoch = break_if_behind(meta, log, epoch, ARGV[6], ARGV[7], ARGV[8])
return {epoch, tonumber(redis.call('HGET', meta, 'top') or '0')}
"#;

/// Read the history. KEYS: [`Keys::all`]. ARGV: since epoch ('' for none), since offset,
/// limit. Returns `{epoch or '', top, entries}`: after `since` in its epoch, else from the
/// oldest retained.
pub(super) const HISTORY: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'', 0, {}} end
local top = tonumber(redis.call('HGET', meta, 'top') or '0')
local from = '-'
if ARGV[1] == epoch then from = (tonumber(ARGV[2]) + 1) .. '-0' end
return {epoch, top, redis.call('XRANGE', log, from, '+', 'COUNT', ARGV[3])}
"#;

/// Presence list. KEYS: [`Keys::all`]. ARGV: channel. Returns `[client, info, ...]`.
pub(super) const PRESENCE: &str = r#"
sweep(pc, pe, pt, pi, ARGV[1], now_ms())
return redis.call('HGETALL', pi)
"#;

/// A script's whole source: the publish verb of its channels (`PUB`: `SPUBLISH` on a
/// cluster, sharded pub/sub), the common functions, the key names unless it is
/// `PUBLISH`, then its body.
pub(super) fn full(body: &str, cluster: bool) -> String {
    let verb = format!("local PUB = '{}'\n", super::link::publish_verb(cluster));
    if body == PUBLISH {
        format!("{verb}{COMMON}{body}")
    } else {
        format!("{verb}{COMMON}{ROOM_KEYS}{body}")
    }
}
