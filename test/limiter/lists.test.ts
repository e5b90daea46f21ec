/**
 * compileLists: the same entries as the quadratic algorithm it replaced (kept here as the
 * reference), on random lists with nesting, duplicates across lists and both families; and work
 * that grows as n log n, not n^2 (counted, not timed).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeListVal, decodeLpmKey, encodeLpmKey, SL_LPM_KEY_SIZE } from '../../src/generated/types';
import { TestDatapath } from '../lib/datapath';
import { compileLists, compileWork, LIST_FLAG, type ListEntry, type ListName, type Lists } from '../../src/limiter/lists';
import ipaddr from 'ipaddr.js';
import { covers, formatPrefix, maskInPlace, parsePrefix, type Prefix } from '../../src/limiter/policy';
import { rng } from '../lib/rng';

/** parsePrefix of 4b64801 (ipaddr.js for every input), for the fast IPv4 path to be held to. */
function referenceParse(text: string): Prefix {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  let plen: number;
  try {
    if (text.includes('/')) [addr, plen] = ipaddr.parseCIDR(text);
    else { addr = ipaddr.parse(text); plen = addr.kind() === 'ipv4' ? 32 : 128; }
  } catch {
    throw new Error('bad');
  }
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) throw new Error('bad');
  const bytes = Buffer.alloc(16);
  Buffer.from(addr.toByteArray()).copy(bytes);
  maskInPlace(bytes, plen);
  return { family: addr.kind() === 'ipv4' ? 4 : 6, plen, addr: bytes };
}

/** The algorithm of 4b64801, verbatim: every entry against every other. */
function referenceCompile(lists: Lists): ListEntry[] {
  const id = (p: Prefix): string => `${p.family}|${p.addr.toString('hex')}|${p.plen}`;
  const own = new Map<string, ListEntry>();
  for (const name of Object.keys(LIST_FLAG) as ListName[]) {
    for (const text of lists[name]) {
      const p = parsePrefix(text);
      const e = own.get(id(p)) ?? { ...p, flags: 0 };
      e.flags |= LIST_FLAG[name];
      own.set(id(p), e);
    }
  }
  const all = [...own.values()];
  return all.map((e) => ({ ...e, flags: all.filter((o) => covers(o, e)).reduce((f, o) => f | o.flags, 0) }));
}


/**
 * Random prefixes drawn near a few bases, so that many nest (a /8, /16s inside it, /32s inside
 * those), some repeat, bare addresses and unmasked host bits included, and some are IPv6.
 */
function randomLists(seed: number, n: number): Lists {
  const r = rng(seed);
  const int = (k: number): number => Math.floor(r() * k);
  const bases = Array.from({ length: 1 + int(4) }, () => [10 + int(3), int(4), int(4), int(256)]);
  const v6bases = ['2001:db8', '2001:db9', 'fd00'];
  const pick = (): string => {
    if (r() < 0.2) {
      const b = v6bases[int(v6bases.length)]!;
      const plen = [16, 32, 48, 56, 64, 96, 128][int(7)]!;
      return r() < 0.1 ? `${b}:${int(3).toString(16)}::${int(4)}` : `${b}:${int(3).toString(16)}:${int(2).toString(16)}::${int(3)}/${plen}`;
    }
    const b = bases[int(bases.length)]!;
    const addr = [b[0]!, r() < 0.5 ? b[1]! : int(4), r() < 0.5 ? b[2]! : int(4), int(256)].join('.');
    if (r() < 0.1) return addr;
    return `${addr}/${[0, 8, 12, 15, 16, 20, 23, 24, 25, 30, 31, 32][int(12)]}`;
  };
  const lists: Lists = { mgmt: [], deny: [], allow: [] };
  for (let i = 0; i < n; i++) {
    const x = r();
    lists[x < 0.15 ? 'mgmt' : x < 0.6 ? 'deny' : 'allow'].push(pick());
  }
  return lists;
}

describe('compileLists', () => {
  it('gives exactly what the quadratic reference gives, on 300 random lists and one of 3,000', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const lists = randomLists(seed, 1 + (seed % 120));
      assert.deepEqual(compileLists(lists), referenceCompile(lists), `seed ${seed}`);
    }
    const big = randomLists(1000, 3000);
    assert.deepEqual(compileLists(big), referenceCompile(big));
  });

  it('parses and formats IPv4 as ipaddr.js does, odd spellings included', () => {
    const r = rng(99);
    const part = (): string => ['0', '7', '10', '255', '256', '010', '0x1f', '1000', ''][Math.floor(r() * 9)]!;
    const texts = ['1.2.3.4', '0.0.0.0/0', '255.255.255.255/32', '10.0.0.0/33', '10.0.0.0/08', '1.2.3', '1.2.3.4/', ' 1.2.3.4', '::ffff:1.2.3.4', '10.1.2.3/9'];
    for (let i = 0; i < 3000; i++) texts.push(`${part()}.${part()}.${part()}.${part()}${r() < 0.7 ? `/${Math.floor(r() * 40)}` : ''}`);
    for (const t of texts) {
      let want: Prefix | 'throws';
      try { want = referenceParse(t); } catch { want = 'throws'; }
      if (want === 'throws') assert.throws(() => parsePrefix(t), Error, t);
      else {
        assert.deepEqual(parsePrefix(t), want, t);
        assert.equal(formatPrefix(want), `${ipaddr.fromByteArray([...want.addr.subarray(0, want.family === 4 ? 4 : 16)]).toString()}/${want.plen}`, t);
      }
    }
  });

  it('keeps the worked cases: inherited flags, one prefix in two lists, families apart', () => {
    const e = compileLists({ mgmt: ['10.0.0.5'], deny: ['10.0.0.0/8', '::/0'], allow: ['10.1.0.0/16', '10.0.0.0/8'] });
    const f = new Map(e.map((x) => [`${x.family}/${x.plen}`, x.flags]));
    assert.equal(f.get('4/8'), LIST_FLAG.deny | LIST_FLAG.allow);
    assert.equal(f.get('4/16'), LIST_FLAG.deny | LIST_FLAG.allow);
    assert.equal(f.get('4/32'), LIST_FLAG.mgmt | LIST_FLAG.deny | LIST_FLAG.allow);
    assert.equal(f.get('6/0'), LIST_FLAG.deny, 'an IPv6 /0 covers no IPv4 prefix');
  });

  it('does O(n) containment checks after the sort (100,000 entries; 4b64801 made n^2 = 10^10)', () => {
    const n = 100_000;
    const deny: string[] = [];
    const r = rng(7);
    for (let i = 0; i < n; i++) {
      const a = Math.floor(r() * 2 ** 32);
      deny.push(`${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${8 + Math.floor(r() * 25)}`);
    }
    assert.equal(typeof compileWork?.checks, 'number', 'compileLists reports its work');
    const t0 = performance.now();
    const entries = compileLists({ mgmt: [], deny, allow: [] });
    const ms = performance.now() - t0;
    assert.ok(compileWork.checks <= 2 * entries.length, `${compileWork.checks} checks for ${entries.length} entries`);
    // A generous bound (the figure on this machine is about a second, see docs/benchmarks.md).
    assert.ok(ms < 10_000, `${n} entries compiled in ${ms.toFixed(0)} ms`);
    console.log(`# compileLists: ${n} prefixes -> ${entries.length} entries in ${ms.toFixed(0)} ms, ${compileWork.checks} containment checks`);
  });
});

describe('Limiter.applyLists', () => {
  let dp: TestDatapath;
  before(async () => { dp = await TestDatapath.load(); });
  after(() => dp?.coll.close());

  /** The live half's entries of the trie exactly (prefix -> flags), from its keys. */
  const trieEntries = (): Map<string, number> => {
    const out = new Map<string, number>();
    const half = dp.limiter.version() & 1;
    for (const k of dp.limiter.maps.sl_lists.keys()) {
      const key = decodeLpmKey(k);
      if (key.half !== half) continue;
      out.set(`${formatPrefix({ family: key.family as 4 | 6, plen: key.prefixlen - 32, addr: key.addr })}`, decodeListVal(dp.limiter.maps.sl_lists.lookup(k)!).flags);
    }
    return out;
  };

  it('writes every entry, also one inside a prefix with the same flags (4b64801 asked the trie by longest match)', () => {
    dp.limiter.applyLists({ mgmt: [], deny: ['10.0.0.0/8', '10.0.5.0/24'], allow: [] });
    assert.deepEqual(trieEntries(), new Map([['10.0.0.0/8', LIST_FLAG.deny], ['10.0.5.0/24', LIST_FLAG.deny]]));
    // Dropping the /8 must leave the /24 denied.
    dp.limiter.applyLists({ mgmt: [], deny: ['10.0.5.0/24'], allow: [] });
    assert.deepEqual(trieEntries(), new Map([['10.0.5.0/24', LIST_FLAG.deny]]));
    dp.limiter.applyLists({ mgmt: [], deny: [], allow: [] });
    assert.equal(trieEntries().size, 0);
  });

  it('refuses lists larger than the trie before writing anything', () => {
    dp.limiter.applyLists({ mgmt: [], deny: ['192.0.2.0/24'], allow: [] });
    const max = dp.limiter.listCapacity(); // a half of the trie
    const deny = Array.from({ length: max + 1 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    assert.throws(() => dp.limiter.applyLists({ mgmt: [], deny, allow: [] }), (e: Error) => e.name === 'ListsTooLargeError' && new RegExp(`${max + 1} entries.*holds ${max} per policy half`).test(e.message));
    assert.deepEqual(trieEntries(), new Map([['192.0.2.0/24', LIST_FLAG.deny]]), 'unchanged');
    // Exactly full, from a half holding another entry.
    dp.limiter.applyLists({ mgmt: [], deny: deny.slice(0, max), allow: [] });
    assert.equal(trieEntries().size, max);
    assert.equal(trieEntries().has('192.0.2.0/24'), false);
    dp.limiter.applyLists({ mgmt: [], deny: [], allow: [] });
  });

  it('compiles the same lists once, and still repairs the trie', () => {
    const deny: string[] = [];
    for (let i = 0; i < 2000; i++) deny.push(`10.${i >> 8}.${i & 255}.0/24`);
    const lists: Lists = { mgmt: ['10.0.0.1/32'], deny: ['10.0.0.0/8', ...deny], allow: [] };
    assert.equal(dp.limiter.applyLists(lists), 2002);
    assert.equal(trieEntries().size, 2002);
    const trie = dp.limiter.maps.sl_lists;
    const key = encodeLpmKey({ prefixlen: 32 + 24, half: dp.limiter.version() & 1, family: 4, addr: Buffer.from([10, 0, 5, 0, ...Array(12).fill(0)]) }, Buffer.alloc(SL_LPM_KEY_SIZE));
    assert.ok(trie.delete(key), 'an entry removed behind the limiter\'s back');
    compileWork.checks = -1;
    assert.equal(dp.limiter.applyLists({ ...lists, deny: [...lists.deny] }), 2002);
    assert.equal(compileWork.checks, -1, 'not compiled again');
    assert.equal(trieEntries().get('10.0.5.0/24'), LIST_FLAG.deny, 'and put back');
    dp.limiter.applyLists({ ...lists, allow: ['10.0.5.0/24'] });
    assert.notEqual(compileWork.checks, -1, 'other lists are compiled');
    assert.equal(trieEntries().get('10.0.5.0/24'), LIST_FLAG.deny | LIST_FLAG.allow);
    dp.limiter.applyLists({ mgmt: [], deny: [], allow: [] });
    assert.equal(trieEntries().size, 0);
  });
});
