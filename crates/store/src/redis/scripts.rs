//! The Lua scripts that write: each is atomic, so of two concurrent refreshes with the same
//! token exactly one wins. Loaded again by EVALSHA's fallback after a Redis restart.

use std::sync::LazyLock;

use redis::Script;

use super::layout::PAYLOAD_AT;

/// Definitions shared by the writing scripts. `ARGV[1]` is always the key prefix
/// (`{tg:<ns>}:`); the scripts build from it the keys they learn of while running. Those
/// keys are undeclared but share the declared key's slot, which Redis Cluster allows.
const PRELUDE: &str = concat!(
    r#"
local p = ARGV[1]
-- The escaped namespace: what lies between '{tg:' and '}:'.
local ns = string.sub(p, 5, -3)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Tells every subscriber that access token `at` (its hash) no longer holds. The one place
-- that writes a revocation payload: `<ns> <hash>`.
local function revoked(at)
  redis.call('PUBLISH', '"#,
    revocation_channel!(),
    r#"', ns .. ' ' .. at)
end

-- Removes record `id` with its access key, refresh key and index members, and publishes its
-- access token if that was still valid, unless it is `keep` (stored again right after).
-- 1 if the record existed.
local function retire(id, keep)
  local tok = p .. 'tok:' .. id
  local f = redis.call('HMGET', tok, 'at', 'rt', 'm')
  if f[1] and redis.call('DEL', p .. 'at:' .. f[1]) == 1 and f[1] ~= keep then
    revoked(f[1])
  end
  if f[2] then redis.call('DEL', p .. 'rt:' .. f[2]) end
  if f[3] then
    redis.call('ZREM', p .. 'idx', f[3])
    redis.call('ZREM', p .. 'exp', f[3])
  end
  return redis.call('DEL', tok)
end

-- Stores the record of ARGV[2..8]: id, member, sealed record for `tok`, access hash, refresh
-- hash ('' for none), access TTL, record TTL (ms; 0 = forever, -1 = already expired: not
-- stored); ARGV[10] and ARGV[11]: the values sealed for the access and the refresh key.
local function store(now)
  local id, m, json, at, rt = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local at_v, rt_v = ARGV[10], ARGV[11]
  local at_ms, rec_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
  if rec_ms < 0 then return end
  local tok = p .. 'tok:' .. id
  redis.call('HSET', tok, 'record', json, 'm', m)
  if at_ms >= 0 then
    redis.call('HSET', tok, 'at', at)
    if at_ms > 0 then
      redis.call('SET', p .. 'at:' .. at, at_v, 'PX', at_ms)
    else
      redis.call('SET', p .. 'at:' .. at, at_v)
    end
  end
  if rt ~= '' then
    redis.call('HSET', tok, 'rt', rt)
    if rec_ms > 0 then
      redis.call('SET', p .. 'rt:' .. rt, rt_v, 'PX', rec_ms)
    else
      redis.call('SET', p .. 'rt:' .. rt, rt_v)
    end
  end
  redis.call('ZADD', p .. 'idx', 0, m)
  if rec_ms > 0 then
    redis.call('PEXPIRE', tok, rec_ms)
    redis.call('ZADD', p .. 'exp', now + rec_ms, m)
  end
end

-- Drops index members of a few records that expired, so the index stays bounded even when
-- nobody lists. A member whose record lives on (its deadline moved) is rescheduled.
local function prune(now)
  local due = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0, 16)
  for _, m in ipairs(due) do
    local left = redis.call('PTTL', p .. 'tok:' .. string.sub(m, 22))
    if left == -2 then
      redis.call('ZREM', p .. 'idx', m)
      redis.call('ZREM', p .. 'exp', m)
    elseif left == -1 then
      redis.call('ZREM', p .. 'exp', m)
    else
      redis.call('ZADD', p .. 'exp', now + left, m)
    end
  end
end

-- A `retired` value: old id, successor id, retired at (ms), successor's refresh hash or ''.
local function parse_retired(v)
  return string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
end
"#
);

pub(super) struct Scripts {
    pub(super) insert: Script,
    pub(super) swap: Script,
    pub(super) find_refresh: Script,
    pub(super) delete: Script,
    pub(super) delete_matching: Script,
    pub(super) revoke_on_reuse: Script,
    pub(super) take_code: Script,
    pub(super) prune_index: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // KEYS[1] = tok:<id>. Replaces a record with the same id, old tokens included.
    insert: Script::new(&format!(
        r#"{PRELUDE}
local now = now_ms()
retire(ARGV[2], ARGV[5])
store(now)
prune(now)
return 1
"#
    )),
    // KEYS[1] = rt:<old refresh hash>, ARGV[9] = that hash, ARGV[12] = the sealed value the
    // caller verified there. Changes nothing and returns 0 unless the key still holds it.
    // Unless the refresh token stays (reuse_refresh_token), leaves a `retired` key behind
    // for reuse detection, as long-lived as the old record would be.
    swap: Script::new(&format!(
        r#"{PRELUDE}
local v = redis.call('GET', KEYS[1])
if not v or v ~= ARGV[12] then return 0 end
local old = string.sub(v, {PAYLOAD_AT})
local left = redis.call('PTTL', p .. 'tok:' .. old)
if left == -2 then
  redis.call('DEL', KEYS[1])
  return 0
end
local now = now_ms()
retire(old, ARGV[5])
retire(ARGV[2], ARGV[5])
store(now)
if ARGV[6] ~= ARGV[9] then
  local v = old .. '|' .. ARGV[2] .. '|' .. string.format('%.0f', now) .. '|' .. ARGV[6]
  if left > 0 then
    redis.call('SET', p .. 'retired:' .. ARGV[9], v, 'PX', left)
  else
    redis.call('SET', p .. 'retired:' .. ARGV[9], v)
  end
end
prune(now)
return 1
"#
    )),
    // KEYS[1] = rt:<hash>; one round trip instead of GET then HGET. Returns the refresh
    // key's sealed value and the sealed record it names, or nothing.
    find_refresh: Script::new(&format!(
        r#"
local v = redis.call('GET', KEYS[1])
if not v then return {{}} end
local record = redis.call('HGET', ARGV[1] .. 'tok:' .. string.sub(v, {PAYLOAD_AT}), 'record')
if not record then return {{}} end
return {{v, record}}
"#
    )),
    // KEYS[1] = tok:<id>, ARGV[2] = id.
    delete: Script::new(&format!(
        r#"{PRELUDE}
return retire(ARGV[2], '')
"#
    )),
    // KEYS[1] = idx. One batch of a bulk delete: the first ARGV[3] members after ARGV[2] (an
    // exclusive ZRANGEBYLEX bound, or '-'), deleting the records that match ARGV[4..6]
    // (authenticated_userid, client_id, service_id: '' for any, '=' then the value to match,
    // as `ListFilter::matches` does). Returns deleted, members scanned, last member.
    delete_matching: Script::new(&format!(
        r#"{PRELUDE}
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local function want(value, condition)
  if condition == '' then return true end
  return type(value) == 'string' and value == string.sub(condition, 2)
end
local n = 0
for _, m in ipairs(members) do
  local id = string.sub(m, 22)
  local json = redis.call('HGET', p .. 'tok:' .. id, 'record')
  if not json then
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', p .. 'exp', m)
  else
    local ok, r = pcall(cjson.decode, string.sub(json, {PAYLOAD_AT}))
    if ok and type(r) == 'table' and want(r.authenticated_userid, ARGV[4])
        and want(r.client_id, ARGV[5]) and want(r.service_id, ARGV[6]) then
      n = n + retire(id, '')
    end
  end
end
return {{n, #members, members[#members] or ''}}
"#
    )),
    // KEYS[1] = retired:<hash>, ARGV[2] = hash, ARGV[3] = grace (ms). Returns {{0}}: not
    // retired, {{1}}: within grace, {{2, n}}: the chain of successors deleted, n records.
    revoke_on_reuse: Script::new(&format!(
        r#"{PRELUDE}
if redis.call('EXISTS', p .. 'rt:' .. ARGV[2]) == 1 then return {{0}} end
local v = redis.call('GET', KEYS[1])
if not v then return {{0}} end
local _, id, at, rt = parse_retired(v)
if not id then return redis.error_reply('corrupt retired entry') end
local grace = tonumber(ARGV[3])
if grace > 0 and now_ms() - tonumber(at) < grace then return {{1}} end
local n = 0
local seen = {{[ARGV[2]] = true}}
while id do
  n = n + retire(id, '')
  if rt == '' or seen[rt] then break end
  seen[rt] = true
  v = redis.call('GET', p .. 'retired:' .. rt)
  if not v then break end
  _, id, at, rt = parse_retired(v)
end
return {{2, n}}
"#
    )),
    // KEYS[1] = code:<hash>.
    take_code: Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
"#,
    ),
    // KEYS[1] = idx, ARGV[2..] = members seen without a record.
    prune_index: Script::new(
        r#"
local p = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  if redis.call('EXISTS', p .. 'tok:' .. string.sub(m, 22)) == 0 then
    n = n + redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', p .. 'exp', m)
  end
end
return n
"#,
    ),
});
