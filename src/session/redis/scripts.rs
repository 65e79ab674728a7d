//! The Lua scripts that make each store operation one atomic round trip (sent by
//! `EVALSHA`, falling back to `EVAL` once after a Redis restart).
//!
//! They read the record header the codec writes (`codec::encode_record`): version byte 1,
//! created 2..5, authenticated_at 6..9, flags 10 (1 = has auth, 2 = step-up pending),
//! failures 11, user length 12..13, user 14.., then client (9 bytes), bound place (25),
//! last place (25, its time in the last 4 bytes).
//!
//! Scripts name keys under the prefix they are given as well as their declared `KEYS`,
//! which Redis Cluster forbids: the store supports a single primary (see README).

/// Load: the record, the user's baseline, whether the session or its user is revoked, and
/// whether a record the user index still lists is gone before its deadline (evicted:
/// history lost), or a session once bound to a device key is gone before its absolute
/// deadline (idled out: history lost too, so its cookie is not a first sight).
///
/// KEYS: session, revoked, revoked-users. ARGV: prefix, session hex, now, user or "".
/// Returns {record|nil, baseline|nil, revoked 0/1, history_lost 0/1, user revoked at or -1}.
pub const LOAD: &str = r#"
local now = tonumber(ARGV[3])
local rec = redis.call('GET', KEYS[1])
local revoked = 0
local until_ = redis.call('ZSCORE', KEYS[2], ARGV[2])
if until_ and tonumber(until_) > now then revoked = 1 end
local user = ARGV[4]
local created = nil
if rec and #rec >= 13 and string.byte(rec, 1) == 1 then
  local _, c, _, _, _, ulen = struct.unpack('>BIIBBH', rec)
  created = c
  if user == '' and ulen > 0 and #rec >= 13 + ulen then user = string.sub(rec, 14, 13 + ulen) end
end
local base = false
local lost = 0
local user_at = -1
if user ~= '' then
  base = redis.call('GET', ARGV[1] .. 'u:' .. user)
  local at = redis.call('ZSCORE', KEYS[3], user)
  if at then user_at = tonumber(at) end
  if created then
    if at and created < tonumber(at) then revoked = 1 end
  elseif not rec then
    local deadline = redis.call('ZSCORE', ARGV[1] .. 'x:' .. user, ARGV[2])
    if deadline and tonumber(deadline) > now then lost = 1 end
  end
end
if not rec and redis.call('EXISTS', ARGV[1] .. 'b:' .. ARGV[2]) == 1 then lost = 1 end
return {rec or false, base or false, revoked, lost, user_at}
"#;

/// Store: writes the record unless the session is revoked or the stored binding is one
/// the writer never saw; a step-up demand or failure count recorded by another replica
/// is kept unless this write proves a newer authentication. Publishes when the security
/// state changed (a device key registered included), so other replicas drop their
/// cached copy.
///
/// KEYS: session, revoked. ARGV: prefix, session hex, now, record, ttl, user or "",
/// deadline, baseline or "", baseline ttl, idle ttl, absolute ttl, the baseline's user.
/// Returns 0 written, 1 written and published, 2 refused (a binding it did not see),
/// 3 refused (revoked), 4 written with another replica's demand or owner kept (and
/// published): a replica that loaded the session before its owner was learned elsewhere
/// does not erase the owner by writing what it loaded; nor a device binding (flag 64, its
/// length in the value's last two bytes): a session once bound to a device key stays
/// bound, whichever replica writes next. 5: written with the stored device key kept in
/// place of a different one (two registrations raced; the first stays): a write may
/// change a binding's `demanded` (tail bytes 6..9) and nothing else of it.
/// A bound session also leaves `b:<session>` until its absolute deadline, so that LOAD
/// reports it lost (not a first sight) once it idles out.
pub const STORE: &str = r#"
local now = tonumber(ARGV[3])
local until_ = redis.call('ZSCORE', KEYS[2], ARGV[2])
if until_ and tonumber(until_) > now then return 3 end
local new = ARGV[4]
local old = redis.call('GET', KEYS[1])
local code = 0
if old and #old >= 13 and string.byte(old, 1) == 1 and #new >= 13 then
  local _, oc, oa, of, ofail, oulen = struct.unpack('>BIIBBH', old)
  local _, nc, na, nf, nfail = struct.unpack('>BIIBB', new)
  local olast = 0
  if #old >= 72 + oulen then olast = struct.unpack('>I', old, 69 + oulen) end
  local alive = olast + tonumber(ARGV[10]) >= now and oc + tonumber(ARGV[11]) >= now
  if alive then
    if nc > oc then return 2 end
    local ohas, nhas = bit.band(of, 1) == 1, bit.band(nf, 1) == 1
    local fresh = nhas and ((not ohas) or na > oa)
    if not fresh then
      local mf, mfail = nf, nfail
      if bit.band(of, 2) == 2 and bit.band(nf, 2) == 0 then mf = nf + 2 end
      if ofail > nfail then mfail = ofail end
      if mf ~= nf or mfail ~= nfail then
        new = string.sub(new, 1, 9) .. string.char(mf, mfail) .. string.sub(new, 12)
        code = 4
      end
    end
    if code == 0 and (bit.band(nf, 67) ~= bit.band(of, 67) or nfail ~= ofail or na ~= oa) then code = 1 end
    if bit.band(of, 32) == 32 and oulen > 0 then
      local mf, mfail, nulen = struct.unpack('>BBH', new, 10)
      if bit.band(mf, 32) == 0 and nulen == 0 then
        new = string.sub(new, 1, 9) .. string.char(mf + 32, mfail) .. string.sub(old, 12, 13 + oulen) .. string.sub(new, 14)
        code = 4
      end
    end
    if bit.band(of, 64) == 64 and #old >= 2 then
      local mf = string.byte(new, 10)
      local tl = struct.unpack('>H', old, #old - 1)
      if tl + 2 <= #old and tl >= 9 then
        local otail = string.sub(old, #old - 1 - tl, #old)
        if bit.band(mf, 64) == 0 then
          new = string.sub(new, 1, 9) .. string.char(mf + 64) .. string.sub(new, 11) .. otail
          code = 4
        elseif #new >= 2 then
          local ntl = struct.unpack('>H', new, #new - 1)
          if ntl + 2 <= #new and ntl >= 9 then
            local ntail = string.sub(new, #new - 1 - ntl, #new)
            local function fixed(t) return string.sub(t, 1, 5) .. string.sub(t, 10) end
            if fixed(ntail) ~= fixed(otail) then
              new = string.sub(new, 1, #new - 2 - ntl) .. otail
              code = 5
            end
          end
        end
      end
    end
  end
end
if bit.band(string.byte(new, 10) or 0, 64) == 64 and #new >= 13 then
  local _, nc = struct.unpack('>BI', new)
  local left = nc + tonumber(ARGV[11]) - now
  if left > 0 then redis.call('SET', ARGV[1] .. 'b:' .. ARGV[2], 1, 'EX', left) end
end
redis.call('SET', KEYS[1], new, 'EX', ARGV[5])
if ARGV[6] ~= '' then redis.call('ZADD', ARGV[1] .. 'x:' .. ARGV[6], 'XX', ARGV[7], ARGV[2]) end
if ARGV[8] ~= '' and ARGV[12] ~= '' then redis.call('SET', ARGV[1] .. 'u:' .. ARGV[12], ARGV[8], 'EX', ARGV[9]) end
if code ~= 0 then redis.call('PUBLISH', ARGV[1] .. 'inv', 's' .. ARGV[2]) end
return code
"#;

/// Index a session under its user, bounded, soonest deadline dropped first.
///
/// KEYS: user index. ARGV: session hex, deadline, now, max, ttl.
pub const INDEX: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[4])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return n
"#;

/// Revoke one session: remembered (without a TTL, so `volatile-*` eviction cannot reach
/// it) until its deadline, the record deleted, every replica told.
///
/// KEYS: revoked, session. ARGV: prefix, session hex, until, now, max revocations.
/// Returns 1 when a record existed.
pub const REVOKE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[5])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1) end
local existed = redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1] .. 'inv', 'r' .. ARGV[2] .. ' ' .. ARGV[3])
return existed
"#;

/// Revoke a user: every indexed session revoked, and a user mark (also without a TTL)
/// that refuses any session of theirs created before now, indexed or not.
///
/// KEYS: revoked, revoked-users, user index. ARGV: prefix, user, until, now, max
/// revocations, max users, cutoff (marks older than a session can live go).
/// Returns the revoked sessions' hex keys.
pub const REVOKE_USER: &str = r#"
local members = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, m in ipairs(members) do
  redis.call('ZADD', KEYS[1], ARGV[3], m)
  redis.call('DEL', ARGV[1] .. 's:' .. m)
  redis.call('PUBLISH', ARGV[1] .. 'inv', 'r' .. m .. ' ' .. ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[5])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
n = redis.call('ZCARD', KEYS[2])
max = tonumber(ARGV[6])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1) end
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[1] .. 'inv', 'u' .. ARGV[2])
return members
"#;

/// The records of a user's indexed sessions, as {hex, record} pairs.
///
/// KEYS: user index. ARGV: prefix.
pub const SESSIONS_OF: &str = r#"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[1] .. 's:' .. m)
  if v then table.insert(out, m); table.insert(out, v) end
end
return out
"#;

/// Keep a pending challenge; a session's oldest gives way past the per-session bound.
///
/// KEYS: challenge, the session's challenge list. ARGV: value, ttl, id hex, per-session
/// bound, prefix.
pub const CHALLENGE_PUT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
local max = tonumber(ARGV[4])
while redis.call('LLEN', KEYS[2]) > max do
  local old = redis.call('LPOP', KEYS[2])
  redis.call('DEL', ARGV[5] .. 'c:' .. old)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"#;

/// Take a pending challenge once (get and delete in one step; `GETDEL` is not in every
/// server this supports). The session sits at bytes 2..17 of the value.
///
/// KEYS: challenge. ARGV: prefix, id hex.
pub const CHALLENGE_TAKE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('DEL', KEYS[1])
if #v >= 17 then
  local hex = string.gsub(string.sub(v, 2, 17), '.', function(c) return string.format('%02x', string.byte(c)) end)
  redis.call('LREM', ARGV[1] .. 'cs:' .. hex, 0, ARGV[2])
end
return v
"#;

/// A session's step-up succeeded: its other challenges are void.
///
/// KEYS: the session's challenge list. ARGV: prefix.
pub const CHALLENGE_CLEAR: &str = r#"
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', ARGV[1] .. 'c:' .. id)
end
return redis.call('DEL', KEYS[1])
"#;

/// Swap a session's lineage: the new value is written only if the stored one is still the
/// one the request judged against (byte for byte; '' for none), so of two replicas
/// rotating at once one wins and the other issues nothing.
///
/// KEYS: lineage. ARGV: expected value or '', new value, ttl. Returns 1 swapped, 0 not.
pub const LINEAGE_SWAP: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"#;
