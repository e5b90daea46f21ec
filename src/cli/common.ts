/**
 * What every subcommand shares: the interface options, limit options and their parsing, output
 * for people or for scripts (--json), and exit codes.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { TopEntry } from '../agent/report';
import type { Rate as KeyRate } from '../limiter/rates';
import { AgentCode, AgentError } from '../agent/errors';
import { assertPlace, managerInfo, type Limits } from '../agent/state';
import { ApiCode, errorEntry, EXIT, LimiterCode } from '../limiter/errors';
import { PolicyError } from '../limiter/policy';
import type { StateEntry } from '../limiter/top';
import { FORMS, formatRate, parseBytes, parseBytesPer, parseCount, parseDurationMs, parseNewStates, parseRatePer, type Rate } from '../limiter/units';

/** Exit codes, documented in docs/cli.md (kept in the error registry, src/limiter/errors.ts). */
export { EXIT } from '../limiter/errors';

export interface PlaceOptions {
  iface: string;
  netns?: string;
}

export function placeOptions(cmd: Command): Command {
  return cmd
    .requiredOption('-i, --iface <name>', 'the interface')
    .option('--netns <name>', 'the network namespace the interface lives in (see `ip netns list`)');
}

/** The place the options name, validated (exit code 2 for "", "..", "a/b" …: nothing is touched). */
export function place(o: PlaceOptions): { iface: string; netns: string | null } {
  const p = { iface: o.iface, netns: o.netns ?? null };
  assertPlace(p);
  return p;
}

/** Wrap a parser so that commander reports its message as an invalid argument (exit code 2). */
export function parsed<T>(fn: (v: string) => T): (v: string) => T {
  return (v: string) => {
    try {
      return fn(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

const prefixLen = (max: number, what: string) => parsed((v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${what} "${v}" must be a prefix length from 1 to ${max}`);
  return n;
});

export interface LimitOptions {
  rate?: Rate;
  bytesRate?: Rate;
  burst?: number;
  bytesBurst?: number;
  algorithm?: Limits['algorithm'];
  window?: number;
  keyV4?: number;
  keyV6?: number;
  noPacketLimit?: boolean;
  newStatesPerSec?: number;
}

export function limitOptions(cmd: Command): Command {
  return cmd
    .option('--rate <rate>', `packets per key: ${FORMS.rate}`, parsed((v) => parseRatePer(v, 'rate')))
    .option('--bytes-rate <rate>', `bytes per key: ${FORMS.bytesRate}`, parsed((v) => parseBytesPer(v, 'bytes rate')))
    .option('--burst <n>', `packets allowed at once (token, gcra: bucket size; windows: extra per window): ${FORMS.count}`, parsed((v) => parseCount(v, 'burst', 0)))
    .option('--bytes-burst <bytes>', `bytes allowed at once: ${FORMS.bytes}`, parsed((v) => parseBytes(v, 'bytes burst', 0)))
    .addOption(new Option('--algorithm <name>', 'the algorithm').choices(['fixed', 'sliding', 'token', 'gcra']))
    .option('--window <duration>', 'window of fixed and sliding, at most 1h: 500ms, 1s, 1m', parsed((v) => parseDurationMs(v, 'window', 1, 3_600_000)))
    .option('--key-v4 <len>', 'IPv4 key prefix length (32: per address, 24: per /24)', prefixLen(32, 'IPv4 key prefix'))
    .option('--key-v6 <len>', 'IPv6 key prefix length (64: per /64)', prefixLen(128, 'IPv6 key prefix'))
    .option('--no-packet-limit', 'limit bytes only (needs --bytes-rate)')
    .option('--new-states-per-sec <rate>', 'cap on new per-client states a second per CPU (sl_config.new_states_per_sec, docs/datapath.md): e.g. 50k/s; 0: the default, 100k', parsed((v) => parseNewStates(v, 'new states per second')));
}

export function limitsFrom(o: LimitOptions & { packetLimit?: boolean }): Partial<Limits> {
  const l: Partial<Limits> = {};
  if (o.rate !== undefined) {
    l.rate = o.rate.units;
    l.ratePeriodMs = o.rate.periodMs;
    // A rate per minute or hour brings its period as the window, unless a window is given.
    if (o.window === undefined && o.rate.periodMs > 1000) l.windowMs = o.rate.periodMs;
  }
  if (o.packetLimit === false) l.rate = null;
  if (o.bytesRate !== undefined) {
    l.bytesRate = o.bytesRate.units;
    l.bytesPeriodMs = o.bytesRate.periodMs;
    if (o.window === undefined && o.bytesRate.periodMs > 1000) l.windowMs = Math.max(l.windowMs ?? 0, o.bytesRate.periodMs);
  }
  if (o.burst !== undefined) l.burst = o.burst;
  if (o.bytesBurst !== undefined) l.bytesBurst = o.bytesBurst;
  if (o.algorithm !== undefined) l.algorithm = o.algorithm;
  if (o.window !== undefined) l.windowMs = o.window;
  if (o.keyV4 !== undefined) l.keyV4 = o.keyV4;
  if (o.keyV6 !== undefined) l.keyV6 = o.keyV6;
  return l;
}

/** Limits as every --json output writes them: snake_case, as the config file and the API do. */
export { limitsJson } from '../agent/report';

export function describeLimits(l: Limits): string {
  const parts: string[] = [];
  const per = (ms: number | undefined): string => formatRate({ units: 0, periodMs: ms ?? 1000 }).slice(1);
  if (l.rate !== null) parts.push(`${l.rate} packets${per(l.ratePeriodMs)}${l.burst ? ` (burst ${l.burst})` : ''}`);
  if (l.bytesRate !== null) parts.push(`${l.bytesRate} bytes${per(l.bytesPeriodMs)}${l.bytesBurst ? ` (burst ${l.bytesBurst})` : ''}`);
  const key = `per /${l.keyV4} (IPv4), /${l.keyV6} (IPv6)`;
  const win = l.algorithm === 'fixed' || l.algorithm === 'sliding' ? `, ${l.windowMs} ms window` : '';
  const scope = l.scope === 'global' ? ` for the whole fleet (this node alone: ${l.localRate ?? l.rate}${per(l.ratePeriodMs)})` : '';
  return `${parts.join(' and ')}${scope}, ${l.algorithm}${win}, ${key}`;
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? Number(x) : x), 2) + '\n');
}

/** A fixed-width table for people. */
export function table(rows: (string | number)[][], header: string[]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** Decoded state entries (top, dump) as a table. */
export function stateTable(entries: StateEntry[]): string {
  return table(entries.map((e) => [e.key, e.rule, e.algorithm, `${(e.usage * 100).toFixed(0)}%`, num(e.available), num(e.dropped), `${(e.idle_ms / 1000).toFixed(1)}s${e.blocked ? ' blocked' : ''}`]),
    ['key', 'rule', 'alg', 'usage', 'available', 'dropped', 'idle']);
}

/** A rate as top shows it: the figure, a range when only bounds are known, ? when not known. */
export function ppsText(r: KeyRate): string {
  if (r.pps !== null) return num(r.pps);
  if (r.pps_min !== null && r.pps_max !== null) return `${num(r.pps_min)}-${num(r.pps_max)}`;
  if (r.pps_min !== null) return `>=${num(r.pps_min)}`;
  return '?';
}

/** top's entries as a table: the state's columns, then pps and dropped/s (red on a terminal when it drops). */
export function topTable(entries: TopEntry[], paint?: (s: string, c: 'red' | 'green' | 'yellow' | 'dim' | 'bold') => string): string {
  const base = entries.map((e) => [e.key, e.rule, e.algorithm, `${(e.usage * 100).toFixed(0)}%`, num(e.available), num(e.dropped), `${(e.idle_ms / 1000).toFixed(1)}s${e.blocked ? ' blocked' : ''}`, ppsText(e), e.dropped_pps === null ? '?' : num(e.dropped_pps)]);
  const text = table(base, ['key', 'rule', 'alg', 'usage', 'available', 'dropped', 'idle', 'pps', 'dropped/s']);
  if (!paint) return text;
  // Colour after the layout (escapes have no width): a key that drops now in red.
  return text.split('\n').map((line, i) => (i > 0 && (entries[i - 1]?.dropped_pps ?? 0) > 0 ? paint(line, 'red') : line)).join('\n');
}

export const num = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '∞');

export function human(bytes: number): string {
  const u = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (bytes >= 1000 && i < u.length - 1) { bytes /= 1000; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/**
 * Exit code for an error, its documented error code (docs/errors.md; SLUICE_E_INTERNAL for an
 * error without one of its own), and the message to print.
 */
export function failure(e: unknown): { code: number; error: string; message: string } {
  const err = e as { code?: string; message?: string };
  const message = e instanceof Error ? e.message : String(e);
  const known = typeof err.code === 'string' && err.code.startsWith('SLUICE_E_') ? err.code : undefined;
  if (e instanceof PolicyError) return { code: EXIT.usage, error: known ?? LimiterCode.Policy, message };
  const error = known ?? ApiCode.Internal;
  return { code: errorEntry(error)?.exit ?? EXIT.error, error, message };
}

/**
 * Print an error the one way every command does: `sluice: CODE: message` on stderr, and with
 * --json the same as {"error": {code, exit_code, message}} on stdout, for scripts.
 */
export function reportError(f: { code: number; error: string; message: string }, asJson: boolean, hint?: string): void {
  console.error(`sluice: ${f.error}: ${f.message}`);
  if (hint) console.error(hint);
  if (asJson) printJson({ error: { code: f.error, exit_code: f.code, message: f.message } });
}

/**
 * Refuse a change of an interface a daemon manages: the daemon would set it back as drift at its
 * next reconcile, seconds after the command printed success. The place of such a change is the
 * daemon's config (it reloads), PUT /v1/limits, or a trial with `policy apply --confirm-within`.
 */
export function refuseIfManaged(p: { iface: string; netns: string | null }, what: string): void {
  const m = managerInfo(p);
  if (!m) return;
  const at = `${p.iface}${p.netns ? ` in network namespace ${p.netns}` : ''}`;
  throw new AgentError(AgentCode.ManagedByDaemon, `${at} is managed by the sluice daemon (process ${m.pid}${m.note ? `, ${m.note}` : ''}): ${what} would be set back as drift at its next reconcile, so nothing was changed. Change the daemon's config file (it reloads), use its API (PUT /v1/limits), or try a policy with \`sluice policy apply FILE --confirm-within 60s\` (the daemon holds the rollback)`);
}
