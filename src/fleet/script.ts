/**
 * The exchange's Redis side: one Lua script that, for every key of a round, takes in this node's
 * usage in the key's current window and its demand, and hands back its allocation (docs/fleet.md).
 *
 * One hash per key and window, `<fleet>:{<rule>|<prefix>}:<window>`, hash-tagged by the key so that
 * a key's hash lives on one slot of a Cluster while different keys spread over the shards:
 *   t        the window's total: every node's allocation (a node's allocation is what it may use in
 *            the window, used or not yet), plus whatever a node used beyond its allocation (its
 *            local fallback, before its first grant)
 *   a:<node> that node's allocation in the window
 *   w:<node> "<want>:<ms>": what the node asked for at its last round and when (its demand)
 * The allocations of a window never sum past the limit, because the script runs atomically: a
 * node gets min(what it asks, what is free), and when the nodes' fresh asks add up to more than is
 * free, a share of what is free in proportion to its ask. A node that stopped seeing a key releases
 * what it holds unused (after freezing its grant: see FleetExchange.round), so that the budget
 * follows the traffic to other nodes.
 */

export const ROUND_LUA = `
local m = ARGV[1]
local now = tonumber(ARGV[2])
local stale = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local b = 4 + (i - 1) * 4
  local limit = tonumber(ARGV[b + 1])
  local used = tonumber(ARGV[b + 2])
  local want = tonumber(ARGV[b + 3])
  local rel = ARGV[b + 4] == '1'
  local h = redis.call('HGETALL', k)
  local total, mine, sumw = 0, 0, want
  local me_a, me_w = 'a:' .. m, 'w:' .. m
  for j = 1, #h, 2 do
    local f = h[j]
    if f == 't' then
      total = tonumber(h[j + 1])
    elseif f == me_a then
      mine = tonumber(h[j + 1])
    elseif f ~= me_w and string.sub(f, 1, 2) == 'w:' then
      local v = h[j + 1]
      local sep = string.find(v, ':', 1, true)
      if sep and tonumber(string.sub(v, sep + 1)) >= now - stale then
        sumw = sumw + tonumber(string.sub(v, 1, sep - 1))
      end
    end
  end
  if used > mine then
    total = total + (used - mine)
    mine = used
  end
  if rel and mine > used then
    total = total - (mine - used)
    mine = used
  end
  local ask = want - (mine - used)
  local free = limit - total
  local grant = 0
  if ask > 0 and free > 0 then
    grant = ask
    if sumw > free then
      grant = math.min(ask, math.ceil(free * want / sumw))
    end
    if grant > free then grant = free end
  end
  mine = mine + grant
  total = total + grant
  redis.call('HSET', k, 't', total, me_a, mine, me_w, want .. ':' .. now)
  redis.call('PEXPIRE', k, ttl)
  out[#out + 1] = mine
  out[#out + 1] = total
end
return out
`;

/** CRC16 (XMODEM), as Redis Cluster computes a key's slot. */
function crc16(buf: Buffer): number {
  let crc = 0;
  for (const byte of buf) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The hash slot of a Redis key (its {hash tag} when it has a non-empty one). */
export function slotOf(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key)) % 16384;
}
