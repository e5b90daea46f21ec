/**
 * The one grammar of numbers with units, for the command line, the config file, policy files and
 * the HTTP API alike (docs/cli.md, "Units"):
 *
 * - counts: "1000", "10k", "2.5M", "1G" (k, M, G: thousand, million, billion);
 * - rates: a count per period, "1000/s", "10k/s", "30/min", "100/h"; a bare count is per second;
 * - bytes: "1500", "64KB", "2MB", "1GiB", per period with "/s", "/min", "/h";
 * - durations: "500ms", "2s", "5m", "1h" (m is a minute here; "5min" is the same). A duration
 *   needs its unit: a bare number is refused (is "500" seconds or milliseconds?), except 0.
 *
 * A lower-case "m" is never a multiplier: "2.5m" in a rate would be 2,500,000 to one reader and
 * 2.5 a minute to another, so it is refused with a message that names both ("2.5M" or "/min").
 * Each parser throws an Error whose message names the value and the accepted forms.
 */
import { MAX_RATE } from './bounds';

const SI: Record<string, number> = { '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9 };

export { MAX_RATE };

/** The accepted forms, as help texts and messages show them. */
export const FORMS = {
  count: '1000, 10k, 2.5M (k, M, G: thousand, million, billion)',
  rate: '1000/s, 10k/s, 30/min, 100/h; a bare count (1000, 10k, 2.5M) is per second',
  bytes: '1500, 64KB, 2MB, 1GiB',
  bytesRate: '2MB/s, 500MB/h; bare bytes (1500000, 2MB) are per second',
  duration: '500ms, 2s, 5m, 1h (a unit is required)',
} as const;

/** Units, in one paragraph: the footer of every help text that takes a value with a unit. */
export const UNITS_HELP = `Units (the same on the command line, in config and policy files and in the HTTP API):
  durations  500ms, 2s, 5m (minutes), 1h: a unit is required (0 needs none)
  rates      1000/s, 10k/s, 30/min, 100/h (a bare 1000 is per second); k and M are thousand and
             million; "m" is refused in a rate: write M for million or /min for a minute
  bytes      1500, 64KB, 2MB, 1GiB (per second: 2MB/s)`;

function whole(n: number, what: string, text: string, min: number, max: number): number {
  if (!Number.isFinite(n) || Math.round(n) !== n) throw new Error(`${what} "${text}" is not a whole number`);
  if (n < min) throw new Error(`${what} "${text}" must be at least ${min}`);
  if (n > max) throw new Error(`${what} "${text}" is too large (at most ${max})`);
  return n;
}

/** The refusal of a lower-case m used as a multiplier. */
function noMilli(what: string, text: string, period: boolean): never {
  const n = /(\d+(?:\.\d+)?)/.exec(text)?.[1] ?? 'N';
  throw new Error(`${what} "${text}": "m" is ambiguous in a number (mega or minute?); write ${n}M for ${n} million${period ? ' a second, or a rate per minute as N/min (e.g. 30/min)' : ''}`);
}

/** A count: "1000", "10k", "2.5M", "1G". */
export function parseCount(text: string | number, what = 'count', min = 1, max = MAX_RATE): number {
  if (typeof text === 'number') return whole(text, what, String(text), min, max);
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]?)\s*$/.exec(text);
  if (m && m[2] === 'm') noMilli(what, text, false);
  if (!m || SI[m[2]!] === undefined) throw new Error(`${what} "${text}" is not a number (accepted: ${FORMS.count})`);
  return whole(Number(m[1]) * SI[m[2]!]!, what, text, min, max);
}

/** A rate per second: "1000", "10k", "2.5M", optionally followed by "/s". */
export function parseRate(text: string | number, what = 'rate', min = 1): number {
  if (typeof text === 'number') return whole(text, what, String(text), min, MAX_RATE);
  const r = parseRatePer(text, what, min);
  if (r.periodMs !== 1000) throw new Error(`${what} "${text}" must be per second (e.g. 1000, 10k, 1000/s)`);
  return r.units;
}

const BYTES: Record<string, number> = {
  '': 1, b: 1, B: 1, kb: 1e3, KB: 1e3, kB: 1e3, mb: 1e6, MB: 1e6, gb: 1e9, GB: 1e9,
  kib: 1024, KiB: 1024, mib: 1024 ** 2, MiB: 1024 ** 2, gib: 1024 ** 3, GiB: 1024 ** 3,
};

/** Bytes, or bytes per second with "/s": "1500", "64KB", "2MB/s", "1GiB". */
export function parseBytes(text: string | number, what = 'bytes', min = 1, max = MAX_RATE): number {
  if (typeof text === 'number') return whole(text, what, String(text), min, max);
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]|[bB])?\s*(?:\/\s*s(?:ec)?)?\s*$/.exec(text);
  const unit = m?.[2] ?? '';
  if (!m || BYTES[unit] === undefined) throw new Error(`${what} "${text}" is not a byte count (accepted: ${FORMS.bytes})`);
  return whole(Math.round(Number(m[1]) * BYTES[unit]!), what, text, min, max);
}

const DURATION: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000 };

/**
 * A duration in milliseconds: "500ms", "2s", "5m" (or "5min"), "1h". A bare number is refused
 * (from the command line and from YAML alike), except 0, which means the same in every unit.
 */
export function parseDurationMs(text: string | number, what = 'duration', min = 1, max = 2 ** 32 - 1): number {
  const t = typeof text === 'number' ? String(text) : text;
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(t);
  if (!m) throw new Error(`${what} "${t}" is not a duration (accepted: ${FORMS.duration})`);
  if (m[2] === '') {
    if (Number(m[1]) === 0) {
      if (min > 0) throw new Error(`${what} "${t}" must be at least ${formatDurationMs(min)}`);
      return 0;
    }
    throw new Error(`${what} "${t}" needs a unit: ${m[1]}ms, ${m[1]}s, ${m[1]}m or ${m[1]}h (a bare number is ambiguous)`);
  }
  const f = DURATION[m[2]!];
  if (f === undefined) throw new Error(`${what} "${t}": "${m[2]}" is not a unit of time (accepted: ${FORMS.duration})`);
  const ms = Math.round(Number(m[1]) * f);
  if (Number.isFinite(ms) && ms < min) throw new Error(`${what} "${t}" must be at least ${formatDurationMs(min)}`);
  if (Number.isFinite(ms) && ms > max) throw new Error(`${what} "${t}" is too large (at most ${formatDurationMs(max)})`);
  return whole(ms, what, t, min, max);
}

/** A duration as parseDurationMs reads it back, in the largest unit that says it whole: 1h, 90s, 500ms. */
export function formatDurationMs(ms: number): string {
  for (const [unit, f] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= f && ms % f === 0) return `${ms / f}${unit}`;
  return `${ms}ms`;
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
 * units per period: "0.5/s" is refused (write "30/min"). "2m" is refused (mega or a minute?).
 */
export function parseRatePer(text: string | number, what = 'rate', min = 1): Rate {
  if (typeof text === 'number') return { units: whole(text, what, String(text), min, MAX_RATE), periodMs: 1000 };
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]?)\s*(?:\/\s*([A-Za-z]+))?\s*$/.exec(text);
  if (m && m[2] === 'm') noMilli(what, text, true);
  if (!m || SI[m[2]!] === undefined) throw new Error(`${what} "${text}" is not a rate (e.g. 1000, 10k, 1000/s, 30/min, 100/h); accepted: ${FORMS.rate}`);
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

/** sl_config.new_states_per_sec: new states a second per CPU, 0 for the default (100,000). */
export const MAX_NEW_STATES = 0xffffffff;
export function parseNewStates(text: string | number, what = 'new_states_per_sec'): number {
  const n = parseRate(text, what, 0);
  if (n > MAX_NEW_STATES) throw new Error(`${what} "${text}" is too large (at most ${MAX_NEW_STATES}, which removes the cap)`);
  return n;
}
