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
  /** The dataset: the bundled DB-IP Lite (default) or a CSV file (an absolute path). */
  csv?: string;
  /**
   * SHA-256 of the CSV's content when it was validated: part of the configuration's identity, so
   * that a changed CSV is a changed configuration (re-read, re-compiled, applied).
   */
  csvSha256?: string;
}

/** Every problem of a GeoIP configuration; `path` under the policy file's `geoip`. */
export class GeoError extends Error {
  constructor(readonly problems: { path: string; message: string }[]) {
    super(`geoip: ${problems.map((p) => p.message).join('; ')}`);
    this.name = 'GeoError';
  }
}

/** The last compilations, by configuration (its CSV's hash included): validated once, applied as validated. */
const compiled = new Map<string, GeoCompiled>();
const COMPILED_KEPT = 8;

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

/**
 * Compile the tiers of a GeoIP configuration; a GeoError lists every problem. `csvText`: the CSV's
 * content, when the caller has read it already (then it is not read again). Kept by configuration,
 * so that what a reload validated is what it applies, without reading the data twice. Messages
 * name lines of the CSV, never their content (a misdirected path must not put a file in the log).
 */
export function compileGeo(cfg: GeoConfig, csvText?: string): GeoCompiled {
  const key = JSON.stringify(cfg);
  const hit = compiled.get(key);
  if (hit) return hit;
  const g = compileGeoNow(cfg, csvText);
  compiled.set(key, g);
  while (compiled.size > COMPILED_KEPT) compiled.delete(compiled.keys().next().value!);
  return g;
}

function compileGeoNow(cfg: GeoConfig, csvText?: string): GeoCompiled {
  const problems: { path: string; message: string }[] = [];
  const tierIds = new Map<string, number>();
  const countryTier = new Map<string, number>();
  let next = 1;
  for (const [name, countries] of Object.entries(cfg.tiers)) {
    if (name === cfg.defaultTier) {
      problems.push({ path: `tiers.${name}`, message: `tier "${name}" is the default tier: it holds every source not listed elsewhere and takes no countries` });
      continue;
    }
    if (next >= Bounds.TIER_DEFAULT) problems.push({ path: 'tiers', message: `at most ${Bounds.TIER_DEFAULT - 1} tiers` });
    tierIds.set(name, next);
    countries.forEach((raw, i) => {
      const cc = raw.toUpperCase();
      const at = `tiers.${name}[${i}]`;
      if (!/^[A-Z]{2}$/.test(cc)) problems.push({ path: at, message: `tier "${name}": ${JSON.stringify(raw.slice(0, 8))} is not a two-letter country code (ISO 3166-1 alpha-2, e.g. DE)` });
      else if (countryTier.has(cc)) problems.push({ path: at, message: `country ${cc} is in two tiers` });
      else countryTier.set(cc, next);
    });
    next++;
  }
  tierIds.set(cfg.defaultTier, Bounds.TIER_DEFAULT);
  if (problems.length) throw new GeoError(problems);

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
    let text: string;
    try {
      text = csvText ?? readFileSync(cfg.csv, 'utf8');
    } catch (e) {
      throw new GeoError([{ path: 'csv', message: `cannot read the GeoIP CSV ${cfg.csv} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` }]);
    }
    const bad: { path: string; message: string }[] = [];
    text.split('\n').forEach((line, i) => {
      const t = line.trim();
      if (!t || t.startsWith('#') || bad.length >= 10) return;
      const [a, b, cc] = t.split(',');
      const fail = (what: string): void => { bad.push({ path: 'csv', message: `${cfg.csv}:${i + 1}: ${what}` }); };
      if (!a || !b || !cc) return fail('expected "first,last,CC" (the line is not shown: a CSV named by mistake may hold secrets)');
      let fa: bigint;
      let fb: bigint;
      try {
        fa = toBig(a.trim());
        fb = toBig(b.trim());
      } catch {
        return fail('the first or the last address is not an IP address');
      }
      const family = a.includes(':') ? 6 : 4;
      if ((b.includes(':') ? 6 : 4) !== family) return fail('the first and the last address are of different families');
      if (fa > fb) return fail('the first address is after the last');
      if (!/^[A-Za-z]{2}$/.test(cc.trim())) return fail('the country is not a two-letter code');
      take(family, fa, fb, cc.trim());
    });
    if (bad.length) throw new GeoError(bad);
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
