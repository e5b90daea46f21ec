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
