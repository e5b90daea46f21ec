/**
 * Numbers as operators write them: "1000", "10k", "2.5M", "1000/s" for rates; "64KB", "2MB",
 * "1GiB" for bytes; "30s", "500ms", "2m" for durations. Each parser throws an Error whose message
 * names the value and what is expected.
 */
const SI: Record<string, number> = { '': 1, k: 1e3, K: 1e3, m: 1e6, M: 1e6, g: 1e9, G: 1e9 };

export const MAX_RATE = 2 ** 40;

function whole(n: number, what: string, text: string, min: number, max: number): number {
  if (!Number.isFinite(n) || Math.round(n) !== n) throw new Error(`${what} "${text}" is not a whole number`);
  if (n < min) throw new Error(`${what} "${text}" must be at least ${min}`);
  if (n > max) throw new Error(`${what} "${text}" is too large (at most ${max})`);
  return n;
}

/** A rate per second: "1000", "10k", "2.5M", optionally followed by "/s". */
export function parseRate(text: string | number, what = 'rate', min = 1): number {
  if (typeof text === 'number') return whole(text, what, String(text), min, MAX_RATE);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*(?:\/\s*s(?:ec)?)?\s*$/.exec(text);
  if (!m) throw new Error(`${what} "${text}" is not a number per second (e.g. 1000, 10k, 2.5M, 1000/s)`);
  return whole(Number(m[1]) * SI[m[2]!]!, what, text, min, MAX_RATE);
}

const BYTES: Record<string, number> = {
  '': 1, b: 1, B: 1, kb: 1e3, KB: 1e3, kB: 1e3, mb: 1e6, MB: 1e6, gb: 1e9, GB: 1e9,
  kib: 1024, KiB: 1024, mib: 1024 ** 2, MiB: 1024 ** 2, gib: 1024 ** 3, GiB: 1024 ** 3,
};

/** Bytes, or bytes per second with "/s": "1500", "64KB", "2MB/s", "1GiB". */
export function parseBytes(text: string | number, what = 'bytes', min = 1, max = MAX_RATE): number {
  if (typeof text === 'number') return whole(text, what, String(text), min, max);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]|[bB])?\s*(?:\/\s*s(?:ec)?)?\s*$/.exec(text);
  const unit = m?.[2] ?? '';
  if (!m || BYTES[unit] === undefined) throw new Error(`${what} "${text}" is not a byte count (e.g. 1500, 64KB, 2MB, 1GiB)`);
  return whole(Math.round(Number(m[1]) * BYTES[unit]!), what, text, min, max);
}

/** A duration in milliseconds: "500ms", "30s", "2m", "1h", or a bare number of seconds. */
export function parseDurationMs(text: string | number, what = 'duration', min = 1, max = 2 ** 32 - 1): number {
  if (typeof text === 'number') return whole(text * 1000, what, String(text), min, max);
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new Error(`${what} "${text}" is not a duration (e.g. 500ms, 30s, 2m, 1h)`);
  const f = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return whole(Math.round(Number(m[1]) * f), what, text, min, max);
}

/** A rate as stored: whole units per period (a second, a minute or an hour). */
export interface Rate {
  units: number;
  periodMs: number;
}

/** The periods a rate may be written per, and what each is called. */
export const PERIODS: Record<string, number> = {
  s: 1000, sec: 1000, second: 1000,
  min: 60_000, minute: 60_000,
  h: 3_600_000, hour: 3_600_000,
};

function perOf(unit: string | undefined, what: string, text: string): number {
  if (unit === undefined) return 1000;
  const ms = PERIODS[unit.toLowerCase()];
  if (ms === undefined) throw new Error(`${what} "${text}": "/${unit}" is not a period (use /s, /min or /h)`);
  return ms;
}

/**
 * A rate per second, minute or hour: "1000", "10k/s", "3/min", "100/h". Stored exactly, as whole
 * units per period: "0.5/s" is refused (write "30/min"). The suffix "m" stays the SI mega of
 * parseRate ("2m" is 2,000,000 a second); a minute is written "/min".
 */
export function parseRatePer(text: string | number, what = 'rate', min = 1): Rate {
  if (typeof text === 'number') return { units: whole(text, what, String(text), min, MAX_RATE), periodMs: 1000 };
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*(?:\/\s*([A-Za-z]+))?\s*$/.exec(text);
  if (!m) throw new Error(`${what} "${text}" is not a rate (e.g. 1000, 10k, 1000/s, 30/min, 100/h)`);
  const periodMs = perOf(m[3], what, text);
  const n = Number(m[1]) * SI[m[2]!]!;
  if (Number.isFinite(n) && Math.round(n) !== n) {
    throw new Error(`${what} "${text}" is not a whole number of units per period (write e.g. 30/min for 0.5/s)`);
  }
  return { units: whole(n, what, text, min, MAX_RATE), periodMs };
}

/** Bytes per second, minute or hour: "2MB", "2MB/s", "500MB/h". */
export function parseBytesPer(text: string | number, what = 'bytes rate', min = 1): Rate {
  if (typeof text === 'number') return { units: whole(text, what, String(text), min, MAX_RATE), periodMs: 1000 };
  const m = /^(.*?)(?:\/\s*([A-Za-z]+))?\s*$/.exec(text)!;
  return { units: parseBytes(m[1]!, what, min, MAX_RATE), periodMs: perOf(m[2], what, text) };
}

/** "3/min" for a Rate (the way parseRatePer reads it back). */
export function formatRate(r: Rate): string {
  const per = r.periodMs === 3_600_000 ? 'h' : r.periodMs === 60_000 ? 'min' : 's';
  return `${r.units}/${per}`;
}
