/**
 * GeoIP tiers: country -> tier, compiled into the source prefixes the kernel's sl_geo trie holds.
 * Only the countries of the listed tiers are loaded (every other source is in the default tier),
 * adjacent ranges of one tier are merged, and each range becomes the fewest covering prefixes, so
 * the map stays small.
 *
 * Data: DB-IP's "IP to Country Lite" (CC-BY-4.0, https://db-ip.com), packaged on npm as
 * @ip-location-db/dbip-country; or a CSV the user supplies with lines "first,last,CC" (addresses
 * as text, IPv4 or IPv6, inclusive range, ISO 3166 alpha-2 country code).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { Bounds } from '../generated/types';
import type { GeoEntry } from './limiter';

export const GEOIP_ATTRIBUTION = 'IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0';

export interface GeoConfig {
  /** Tier name -> ISO country codes. Order gives tier numbers 1, 2, … */
  tiers: Record<string, string[]>;
  /** The tier of every other source. */
  defaultTier: string;
  /** The dataset: the bundled DB-IP Lite (default) or a CSV file. */
  csv?: string;
}

export interface GeoCompiled {
  /** Tier name -> number in the kernel (1..254; the default tier is 255). */
  tierIds: Map<string, number>;
  entries: GeoEntry[];
  /** Identity of the entries (a reload of the same data rewrites nothing). */
  hash: bigint;
  source: string;
  /** Input ranges loaded, per family, before merging. */
  ranges: { v4: number; v6: number };
}

interface Range { family: 4 | 6; first: bigint; last: bigint; tier: number }

function datasetDir(): string {
  return dirname(require.resolve('@ip-location-db/dbip-country/package.json'));
}

const toBig = (text: string): bigint => {
  const bytes = ipaddr.parse(text).toByteArray();
  return bytes.reduce((v, b) => (v << 8n) | BigInt(b), 0n);
};

/** The fewest prefixes that exactly cover [first, last]. */
export function rangeToPrefixes(family: 4 | 6, first: bigint, last: bigint): { plen: number; addr: bigint }[] {
  const bits = family === 4 ? 32 : 128;
  const out: { plen: number; addr: bigint }[] = [];
  let cur = first;
  while (cur <= last) {
    // The largest aligned block starting at cur that does not pass last.
    let size = 0;
    while (size < bits && (cur & ((1n << BigInt(size + 1)) - 1n)) === 0n && cur + (1n << BigInt(size + 1)) - 1n <= last) size++;
    out.push({ plen: bits - size, addr: cur });
    cur += 1n << BigInt(size);
  }
  return out;
}

function addrBuffer(family: 4 | 6, v: bigint): Buffer {
  const b = Buffer.alloc(16);
  const n = family === 4 ? 4 : 16;
  for (let i = n - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

/** Compile the tiers of a GeoIP configuration. Throws with every problem listed. */
export function compileGeo(cfg: GeoConfig): GeoCompiled {
  const problems: string[] = [];
  const tierIds = new Map<string, number>();
  const countryTier = new Map<string, number>();
  let next = 1;
  for (const [name, countries] of Object.entries(cfg.tiers)) {
    if (name === cfg.defaultTier) {
      problems.push(`tier "${name}" is the default tier: it holds every source not listed elsewhere and takes no countries`);
      continue;
    }
    if (next >= Bounds.TIER_DEFAULT) problems.push(`at most ${Bounds.TIER_DEFAULT - 1} tiers`);
    tierIds.set(name, next);
    for (const raw of countries) {
      const cc = raw.toUpperCase();
      if (!/^[A-Z]{2}$/.test(cc)) problems.push(`tier "${name}": "${raw}" is not a two-letter country code (ISO 3166-1 alpha-2, e.g. DE)`);
      else if (countryTier.has(cc)) problems.push(`country ${cc} is in two tiers`);
      else countryTier.set(cc, next);
    }
    next++;
  }
  tierIds.set(cfg.defaultTier, Bounds.TIER_DEFAULT);
  if (problems.length) throw new Error(`geoip: ${problems.join('; ')}`);

  const ranges: Range[] = [];
  const counts = { v4: 0, v6: 0 };
  const take = (family: 4 | 6, first: bigint, last: bigint, cc: string): void => {
    const tier = countryTier.get(cc.toUpperCase());
    if (tier === undefined) return;
    ranges.push({ family, first, last, tier });
    counts[family === 4 ? 'v4' : 'v6']++;
  };
  let source: string;
  if (cfg.csv) {
    source = cfg.csv;
    readFileSync(cfg.csv, 'utf8').split('\n').forEach((line, i) => {
      const t = line.trim();
      if (!t || t.startsWith('#')) return;
      const [a, b, cc] = t.split(',');
      if (!a || !b || !cc) throw new Error(`${cfg.csv}:${i + 1}: expected "first,last,CC", got "${t}"`);
      let fa: bigint;
      let fb: bigint;
      try {
        fa = toBig(a);
        fb = toBig(b);
      } catch {
        throw new Error(`${cfg.csv}:${i + 1}: "${a}" or "${b}" is not an IP address`);
      }
      take(a.includes(':') ? 6 : 4, fa, fb, cc);
    });
  } else {
    const dir = datasetDir();
    source = `DB-IP Lite (${join(dir, 'dbip-country-ipv{4-num,6}.csv')})`;
    for (const line of readFileSync(join(dir, 'dbip-country-ipv4-num.csv'), 'utf8').split('\n')) {
      const c = line.lastIndexOf(',');
      if (c < 0 || !countryTier.has(line.slice(c + 1).trim())) continue;
      const [a, b] = line.split(',');
      take(4, BigInt(a!), BigInt(b!), line.slice(c + 1).trim());
    }
    for (const line of readFileSync(join(dir, 'dbip-country-ipv6.csv'), 'utf8').split('\n')) {
      const c = line.lastIndexOf(',');
      if (c < 0 || !countryTier.has(line.slice(c + 1).trim())) continue;
      const [a, b] = line.split(',');
      take(6, toBig(a!), toBig(b!), line.slice(c + 1).trim());
    }
  }

  // Merge adjacent ranges of one tier, then cover each with prefixes.
  ranges.sort((x, y) => x.family - y.family || (x.first < y.first ? -1 : x.first > y.first ? 1 : 0));
  const merged: Range[] = [];
  for (const r of ranges) {
    const m = merged[merged.length - 1];
    if (m && m.family === r.family && m.tier === r.tier && m.last + 1n >= r.first) {
      if (r.last > m.last) m.last = r.last;
    } else {
      merged.push({ ...r });
    }
  }
  const entries: GeoEntry[] = [];
  for (const r of merged) {
    for (const p of rangeToPrefixes(r.family, r.first, r.last)) entries.push({ family: r.family, plen: p.plen, addr: addrBuffer(r.family, p.addr), tier: r.tier });
  }
  const h = createHash('sha256');
  for (const e of entries) h.update(`${e.family}/${e.addr.toString('hex')}/${e.plen}=${e.tier};`);
  return { tierIds, entries, hash: h.digest().readBigUInt64LE(0), source, ranges: counts };
}
