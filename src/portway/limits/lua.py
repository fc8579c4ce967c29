"""The Redis enforcer's two scripts, each one atomic step on every key it names.

Each check (subject) passes seven keys: its requests (a sorted set of request ids
by admission time), its tokens (a sorted set likewise, a hash of each request's
tokens and their running sum), its in-flight slots (a sorted set by lapse time),
and its day's and month's budget counters. A slot lapses ``lease`` ms after
its admission or its last renewal (:data:`RENEW`). The algorithm is
:class:`portway.limits.memory.MemoryEnforcer`'s, step for step.
"""

from __future__ import annotations

KEYS_PER_CHECK = 7
LIMITS_PER_CHECK = 7

ADMIT = """
local now, rid, est = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local lease, win = tonumber(ARGV[4]), tonumber(ARGV[5])
local day_ends, month_ends = tonumber(ARGV[6]), tonumber(ARGV[7])
local n = #KEYS / 7

local function arg(i, j) return tonumber(ARGV[7 + (i - 1) * 7 + j]) end
local function key(i, j) return KEYS[(i - 1) * 7 + j] end
local function num(value) return tonumber(value or '0') or 0 end

local function expire(i)
  redis.call('ZREMRANGEBYSCORE', key(i, 1), '-inf', now - win)
  local old = redis.call('ZRANGEBYSCORE', key(i, 2), '-inf', now - win)
  if #old > 0 then
    local total = 0
    for _, member in ipairs(old) do
      total = total + num(redis.call('HGET', key(i, 3), member))
      redis.call('HDEL', key(i, 3), member)
    end
    redis.call('DECRBY', key(i, 4), total)
    redis.call('ZREMRANGEBYSCORE', key(i, 2), '-inf', now - win)
  end
  redis.call('ZREMRANGEBYSCORE', key(i, 5), '-inf', now)
end

local function seed(i)
  if arg(i, 6) >= 0 then redis.call('SET', key(i, 6), arg(i, 6), 'NX', 'PX', 2 * 86400000) end
  if arg(i, 7) >= 0 then redis.call('SET', key(i, 7), arg(i, 7), 'NX', 'PX', 32 * 86400000) end
end

local function newest(k)
  local found = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  if #found == 0 then return 0 end
  return tonumber(found[2]) + win - now
end

local function usage(i)
  return {
    redis.call('ZCARD', key(i, 1)), newest(key(i, 1)),
    num(redis.call('GET', key(i, 4))), newest(key(i, 2)),
    redis.call('ZCARD', key(i, 5)),
  }
end

local function tokens_retry(i, limit)
  local left = num(redis.call('GET', key(i, 4)))
  local entries = redis.call('ZRANGE', key(i, 2), 0, -1, 'WITHSCORES')
  for j = 1, #entries, 2 do
    left = left - num(redis.call('HGET', key(i, 3), entries[j]))
    if left + est <= limit then return tonumber(entries[j + 1]) + win - now end
  end
  return win
end

local function judge(i)
  local rpm, tpm, conc = arg(i, 1), arg(i, 2), arg(i, 3)
  local per_day, per_month = arg(i, 4), arg(i, 5)
  if per_day >= 0 and num(redis.call('GET', key(i, 6))) >= per_day then
    return 1, day_ends - now
  end
  if per_month >= 0 and num(redis.call('GET', key(i, 7))) >= per_month then
    return 2, month_ends - now
  end
  if conc >= 0 and redis.call('ZCARD', key(i, 5)) >= conc then return 3, 1000 end
  if rpm >= 0 and redis.call('ZCARD', key(i, 1)) >= rpm then
    local oldest = redis.call('ZRANGE', key(i, 1), 0, 0, 'WITHSCORES')
    local at = now
    if #oldest > 0 then at = tonumber(oldest[2]) end
    return 4, at + win - now
  end
  if tpm >= 0 and est > tpm then return 6, newest(key(i, 2)) end
  if tpm >= 0 and num(redis.call('GET', key(i, 4))) + est > tpm then
    return 5, tokens_retry(i, tpm)
  end
  return 0, 0
end

local function answer(verdict, index, retry)
  local out = {verdict, index, retry}
  for i = 1, n do
    for _, value in ipairs(usage(i)) do table.insert(out, value) end
  end
  return out
end

for i = 1, n do
  expire(i)
  seed(i)
end
for i = 1, n do
  local verdict, retry = judge(i)
  if verdict ~= 0 then return answer(verdict, i - 1, retry) end
end
for i = 1, n do
  redis.call('ZADD', key(i, 1), now, rid)
  redis.call('ZADD', key(i, 2), now, rid)
  redis.call('HSET', key(i, 3), rid, est)
  redis.call('INCRBY', key(i, 4), est)
  redis.call('ZADD', key(i, 5), now + lease, rid)
  for j = 1, 4 do redis.call('PEXPIRE', key(i, j), win) end
  redis.call('PEXPIRE', key(i, 5), lease)
end
return answer(0, 0, 0)
"""

RENEW = """
local lapse, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local at = 3
for i = 1, #KEYS do
  local count = tonumber(ARGV[at])
  for j = 1, count do
    redis.call('ZADD', KEYS[i], 'XX', lapse, ARGV[at + j])
  end
  at = at + count + 1
  redis.call('PEXPIRE', KEYS[i], lease)
end
return 1
"""
"""Each key an in-flight sorted set, followed in ARGV by how many of its request
ids to renew and the ids: each one still held lapses at ``lapse`` now (one that
was freed or lapsed is not brought back)."""

SETTLE = """
local rid, tokens, first = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local n = #KEYS / 7
local function key(i, j) return KEYS[(i - 1) * 7 + j] end
local function arg(i, j) return tonumber(ARGV[3 + (i - 1) * 2 + j]) end

for i = 1, n do
  if first then redis.call('ZREM', key(i, 5), rid) end
  local old = redis.call('HGET', key(i, 3), rid)
  if old then
    local new = tokens
    if not first then new = tonumber(old) + tokens end
    redis.call('HSET', key(i, 3), rid, new)
    redis.call('INCRBY', key(i, 4), new - tonumber(old))
  end
  if arg(i, 1) == 1 then
    redis.call('INCRBY', key(i, 6), tokens)
    redis.call('PEXPIRE', key(i, 6), 2 * 86400000)
  end
  if arg(i, 2) == 1 then
    redis.call('INCRBY', key(i, 7), tokens)
    redis.call('PEXPIRE', key(i, 7), 32 * 86400000)
  end
end
return 1
"""
