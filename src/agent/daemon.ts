/**
 * The long-running daemon (`sluice run --config FILE`): protects every interface of the config
 * and keeps it so.
 *
 * - Start: each configured interface is brought up (Protection.up: attach, or adopt what is pinned
 *   with its state and counters) and given the configured limits, lists and malformed verdict.
 * - Reload (the file changes, SIGHUP, POST /v1/reload): the whole file is validated first; an
 *   invalid file is refused with one message listing every problem, and nothing changes. A valid
 *   one is reconciled: interfaces added are brought up, removed ones taken down, changed ones
 *   updated in one atomic policy flip. Load-time sizes (mode, max_entries, max_rules) cannot change
 *   in place: the daemon keeps what runs and logs what to do.
 * - Reconcile (every reconcile_interval): a protection that vanished (someone ran `sluice down`)
 *   is brought up again; settings changed behind the daemon's back are set back.
 * - Exit (SIGTERM, SIGINT): protection stays in force, unless detachOnExit. After a SIGKILL it
 *   stays in force too, and the next start adopts it (counters and per-client state kept).
 *
 * Every change goes through one queue, so that reloads, reconciles and API calls never interleave.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { Link } from '../ebpf';
import { ApiCode, ApiError, type Problem } from '../limiter/errors';
import { FleetExchange, type FleetProtection } from '../fleet/exchange';
import { fleetStatusPath } from './state';
import {
  ConfigError, formatProblem, limitsProblems, limitsSchema, loadConfig, mergeLimits, parseConfig,
  type ConfigContext, type DaemonConfig, type InterfaceConfig, type LimitsInput,
} from '../config';
import type { Snapshot } from '../limiter/stats';
import { sweepPenalties } from '../limiter/limiter';
import { mapOf } from '../limiter/datapath';
import { compiledListsSteps, editRuntime, emptyRuntime, layered, runtimeIsEmpty, type ListName, type RuntimeLists } from '../limiter/lists';
import { formatPrefix, parsePrefix, type RuleSpec } from '../limiter/policy';
import { REASON_NAMES } from '../limiter/stats';
import { History, HISTORY_INTERVAL_MS, type HistoryJson } from './history';
import { runAsync } from '../limiter/steps';
import { compilePolicy, PolicyError } from '../limiter/policy';
import { AgentCode, AgentError } from './errors';
import { EventHub, type EventBudget, type EventFilter, type EventView } from './events';
import { monotonicUsec, notifier } from './notify';
import { readPending, summarizePending } from './pending';
import { DEFAULT_MAX_LIST_ENTRIES, DEFAULT_OBJECT, policyOf, Protection, type SettingsChange } from './protection';
import {
  countStates as statusEntries, limitsJson, metricsReader, statsReport, statusJson, statusReport, takeSnapshot, topReport,
} from './report';
import { confirm, rollbackDue, rollbackNow } from './rollback';
import {
  daemonLockPath, holdLock, listPlaces, loadSettings, managerLockPath, pinDir, STATE_ROOT,
  type HeldLock, type Limits, type Place, type Settings,
} from './state';

/** An interface of the daemon, as the API's queries name it. */
export interface PlaceQuery {
  iface: string;
  netns: string | null;
}

/** What the daemon's metrics read (src/api/metrics.ts, MetricsSource). */
export interface DaemonMetricsSource {
  metricInterfaces(): {
    iface: string; netns: string | null; protection: ReturnType<typeof metricsReader> | undefined; rollback: string | null;
  }[];
  reloadCounts(): { ok: number; failed: number; lastOk: boolean | null; lastAt: number | null };
  fleetStatus(): ReturnType<FleetExchange['status']> | null;
}

/** The metrics registry (src/api/metrics.ts, Metrics). */
export interface DaemonMetrics {
  readonly contentType: string;
  render(): Promise<string>;
  forget(iface: string, netns: string | null): void;
}

/**
 * What serves the daemon: its HTTP API, read-only listener and metrics (src/api), wired in by
 * src/cli/daemon.ts. The agent imports no api module (DESIGN.md's import edges); the daemon
 * implements the API's backend interface and is handed to it.
 */
export interface DaemonFrontend {
  /** The metrics registry over what the daemon reports. */
  metrics(source: DaemonMetricsSource): DaemonMetrics;
  /** Serve the listeners of the config; each server is pushed into `servers` as it starts (closed on stop). */
  serve(d: Daemon, servers: FastifyInstance[]): Promise<void>;
  /** An API instance over the daemon, not listening (tests, embedding). */
  inject(d: Daemon, token: string | null): FastifyInstance;
}

export interface DaemonOptions {
  configFile: string;
  /** The API, listeners and metrics (src/cli/daemon.ts, startDaemon, hands in src/api's). */
  frontend: DaemonFrontend;
  /** Take every managed interface down on stop() (SIGTERM); default: leave protection in force. */
  detachOnExit?: boolean;
  /** Default: pino JSON to stdout at the config's level. */
  logger?: Logger;
  /** Serve the API listeners of the config (default true; tests of handlers use buildApi + inject). */
  listen?: boolean;
  /** Watch the config file and the files it names (default true). */
  watch?: boolean;
}

interface Managed {
  cfg: InterfaceConfig;
  /** Limits set through the API since the config last changed this interface (replace the file's). */
  override: Limits | null;
  protection?: Protection;
  linkId?: number;
  /** The last failure to protect, logged once until it changes. */
  error?: { code: string; message: string; at: string };
  /** Load-time settings of the config that differ from what runs, logged once. */
  pending?: string;
  /** For current rates in /v1/stats. */
  snap?: Snapshot;
  /** The machine-wide lock that says this daemon manages the interface (state.ts, managerLockPath). */
  manager?: HeldLock;
  /** The last failed rollback logged (its id and attempts), so that it is logged once. */
  rollbackLogged?: string;
  /** The one consumer of the interface's event ring buffer while it is protected (GET /v1/events). */
  events?: EventHub;
  /** One point a second (GET /v1/history; `rates` of GET /v1/stats is its last point). */
  history: History;
  /** The state map's entry count for the history: a walk, taken as often as its cost allows. */
  entries: { count: number | null; at: number; busy: boolean; ms: number };
  /** Deny and allow entries added or removed through the API (POST /v1/lists), over the config's lists. */
  edits: RuntimeLists;
  /** Deny entries added through the API for a while: prefix -> when the daemon removes it (ms). */
  expiries: Map<string, number>;
  /** Rules switched to dry-run through the API (POST /v1/rules/mode), by id, with when. */
  dryRun: Map<number, string>;
  /** The policy version last seen and since when (GET /v1/policy `changed_at`). */
  seen?: { version: number; at: string };
}

function managedOf(cfg: InterfaceConfig, manager: HeldLock | undefined): Managed {
  return {
    cfg, override: null, manager, history: new History(), entries: { count: null, at: 0, busy: false, ms: 0 },
    edits: emptyRuntime(), expiries: new Map(), dryRun: new Map(),
  };
}

export interface ReloadResult {
  ok: boolean;
  source: string;
  at: string;
  changes?: string[];
  problems?: Problem[];
  message?: string;
}

const keyOf = (p: Place): string => `${p.netns ?? ''}/${p.iface}`;
/** The id of the program the pinned link of a place runs, or null. */
function runningProgram(p: Place): number | null {
  try {
    const l = Link.fromPin(join(pinDir(p), 'link'));
    try { return l.info().progId || null; } finally { l.close(); }
  } catch {
    return null;
  }
}

const where = (p: Place): string => `${p.iface}${p.netns ? ` (netns ${p.netns})` : ''}`;
const placeFlags = (p: Place): string => `--iface ${p.iface}${p.netns ? ` --netns ${p.netns}` : ''}`;
const hash = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The api settings as a restart would see them; the token is left out: the listener re-reads its file. */
const apiText = (a: DaemonConfig['api'], m: DaemonConfig['metrics'] = null): string => JSON.stringify({ ...a, tcp: a.tcp ? { ...a.tcp, token: undefined } : null, metrics: m });

/** Rules and GeoIP tiers, compared as text (bigints included). */
function rulesText(x: { rules: readonly unknown[]; geoip: unknown }): string {
  return JSON.stringify([x.rules, x.geoip], (_, v) => (typeof v === 'bigint' ? v.toString() : v));
}

function sameLimits(a: Limits, b: Limits): boolean {
  return a.algorithm === b.algorithm && a.rate === b.rate && a.burst === b.burst && a.bytesRate === b.bytesRate &&
    a.bytesBurst === b.bytesBurst && a.windowMs === b.windowMs && a.keyV4 === b.keyV4 && a.keyV6 === b.keyV6 &&
    (a.ratePeriodMs ?? 1000) === (b.ratePeriodMs ?? 1000) && (a.bytesPeriodMs ?? 1000) === (b.bytesPeriodMs ?? 1000);
}

const listsText = (l: Settings['lists']): string => JSON.stringify([l.mgmt, l.deny, l.allow]);

/** What the fleet's exchange reads and writes of a protection (src/fleet imports no agent module). */
function fleetView(p: Protection | undefined): FleetProtection | undefined {
  return p && { maps: p.maps, policy: () => policyOf(p.settings) };
}

export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid, name: 'sluice' }, timestamp: pino.stdTimeFunctions.isoTime });
}

export class Daemon {
  config: DaemonConfig;
  readonly log: Logger;
  readonly metricsRegistry: DaemonMetrics;
  /** The schema of the limits of PUT /v1/limits: the config file's (the API's backend hands it in). */
  readonly limitsSchema = limitsSchema;
  readonly startedAt = new Date().toISOString();
  private readonly managed = new Map<string, Managed>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** By directory: those of the config file and of every file it names (and of their link targets). */
  private readonly watchers = new Map<string, FSWatcher>();
  private debounce: NodeJS.Timeout | undefined;
  /** What the files of the config read as when last loaded (path -> SHA-256): a reload is due when one differs. */
  private inputs: Record<string, string>;
  private readonly servers: FastifyInstance[] = [];
  private stopped = false;
  private stateLock: HeldLock | undefined;
  private rollbackTimer: NodeJS.Timeout | undefined;
  private sampleTimer: NodeJS.Timeout | undefined;
  private readonly reloads = { ok: 0, failed: 0, lastOk: null as boolean | null, lastAt: null as number | null };
  /** The service manager ($NOTIFY_SOCKET, Type=notify): told READY=1 once every interface is protected. */
  private readonly notify = notifier();
  private ready = false;
  private lastStatus = '';
  private notifyFailed = false;
  lastReload: ReloadResult | null = null;
  /** The fleet's exchange (config fleet:), or undefined: every rule is this node's alone. */
  fleet: FleetExchange | undefined;

  private constructor(config: DaemonConfig, text: string, readonly opts: DaemonOptions) {
    this.config = config;
    this.inputs = { ...config.inputs, [config.file]: hash(text) };
    this.log = opts.logger ?? createLogger(config.log.level);
    this.metricsRegistry = opts.frontend.metrics({
      metricInterfaces: () => [...this.managed.values()].map((m) => ({
        iface: m.cfg.iface, netns: m.cfg.netns, protection: m.protection && metricsReader(m.protection),
        rollback: summarizePending(m.cfg)?.state ?? null,
      })),
      reloadCounts: () => ({ ...this.reloads }),
      fleetStatus: () => this.fleet?.status() ?? null,
    });
  }

  /**
   * Read the config (a ConfigError if it is invalid: the daemon does not start on a bad file),
   * protect every interface, then serve and watch.
   */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const { text, config } = readConfig(opts.configFile);
    const d = new Daemon(config, text, opts);
    d.takeLocks();
    d.reloads.ok++;
    d.reloads.lastOk = true;
    d.reloads.lastAt = Date.now();
    d.log.info({ event: 'start', config: config.file, interfaces: config.interfaces.length, detach_on_exit: !!opts.detachOnExit }, `sluice daemon starting with ${config.file}`);
    for (const w of config.warnings) d.log.warn({ event: 'config_warning' }, w);
    for (const i of config.interfaces) d.managed.set(keyOf(i), managedOf(i, d.managerLocks.get(keyOf(i))));
    d.managerLocks.clear();
    await d.serial(() => d.reconcileAll('start'));
    const configured = new Set(d.managed.keys());
    const others = listPlaces().filter((p) => !configured.has(keyOf(p)));
    if (others.length) {
      d.log.info({ event: 'unmanaged', interfaces: others.map(where) }, `protected but not in the config, left as they are (take them down with \`sluice down\`): ${others.map(where).join(', ')}`);
    }
    try {
      if (opts.listen ?? true) await opts.frontend.serve(d, d.servers);
    } catch (e) {
      await d.stop({ detach: false });
      throw e;
    }
    if (opts.watch ?? true) d.watchInputs();
    if (config.fleet) {
      const parts = () => [...d.managed.values()].map((m) => ({
        iface: m.cfg.iface, netns: m.cfg.netns, protection: fleetView(m.protection),
      }));
      d.fleet = new FleetExchange(config.fleet, d.log, parts, fleetStatusPath());
      d.fleet.start();
    }
    d.schedule();
    d.rollbackTimer = setInterval(() => { void d.checkRollbacks(); }, 1000);
    d.rollbackTimer.unref();
    d.sampleTimer = setInterval(() => { d.sample(); }, HISTORY_INTERVAL_MS);
    d.sampleTimer.unref();
    d.log.info({ event: 'ready', protected: d.protectedCount(), socket: config.api.socket, tcp: config.api.tcp ? `${config.api.tcp.host}:${config.api.tcp.port}` : null }, `sluice daemon ready: ${d.protectedCount()} of ${d.managed.size} interfaces protected`);
    if (d.notify.problem) d.log.warn({ event: 'notify_unusable' }, `${d.notify.problem}: the service manager is not told when the daemon is ready`);
    d.readiness();
    return d;
  }

  private readonly managerLocks = new Map<string, HeldLock>();

  /**
   * One daemon per state directory, and one daemon per interface (machine-wide): a second is
   * refused before it touches anything. Daemons with their own state directories and interfaces
   * run side by side.
   */
  private takeLocks(): void {
    const st = holdLock(daemonLockPath(), `config ${this.config.file}`);
    if (!('release' in st)) {
      throw new AgentError(AgentCode.DaemonRunning, `another sluice daemon${st.holder ? ` (process ${st.holder}${st.note ? `, ${st.note}` : ''})` : ''} uses the state directory ${STATE_ROOT}: stop it, or give this one a state directory of its own (SLUICE_STATE_DIR). Nothing was changed`);
    }
    this.stateLock = st;
    const taken: HeldLock[] = [];
    const refused: string[] = [];
    for (const i of this.config.interfaces) {
      // The API socket is named last: `sluice events` reads through it (the daemon consumes the ring buffer).
      const l = holdLock(managerLockPath(i), `state ${STATE_ROOT}, config ${this.config.file}${this.config.api.socket ? `, api ${this.config.api.socket}` : ''}`);
      if ('release' in l) { taken.push(l); this.managerLocks.set(keyOf(i), l); } else refused.push(`${where(i)} (by process ${l.holder ?? '?'}${l.note ? `, ${l.note}` : ''})`);
    }
    if (refused.length) {
      taken.forEach((l) => l.release());
      this.managerLocks.clear();
      st.release();
      throw new AgentError(AgentCode.ManagedElsewhere, `another sluice daemon manages ${refused.join(', ')}: two daemons must not manage one interface. Stop the other, or take the interface out of one config. Nothing was changed`);
    }
  }

  /**
   * Rollbacks of changes applied with --confirm-within to managed interfaces: those this daemon
   * holds, and those whose holder is gone, run when due; a failed one is logged (once per attempt).
   */
  private async checkRollbacks(): Promise<void> {
    if (this.stopped) return;
    for (const m of this.managed.values()) {
      const p = m.cfg;
      let pending;
      try {
        pending = readPending(p);
        if (pending?.failed) {
          const tag = `${pending.id}/${pending.failed.attempts}`;
          if (m.rollbackLogged !== tag) {
            m.rollbackLogged = tag;
            this.log.error({ event: 'rollback_failed', iface: p.iface, netns: p.netns, id: pending.id, attempts: pending.failed.attempts, code: pending.failed.code },
              `the rollback of ${pending.applied} on ${where(p)} failed: ${pending.failed.message}. ${pending.applied} stays live; retry with \`sluice policy rollback ${placeFlags(p)}\` or keep it with \`sluice policy confirm ${placeFlags(p)}\``);
          }
          continue;
        }
        const due = rollbackDue(p);
        if (!due) continue;
        await this.serial(async () => {
          const done = await rollbackNow(p, due.id);
          if (!done) return;
          this.close(m); // reopened by ensure with the restored settings
          this.log.warn({ event: 'rolled_back', iface: p.iface, netns: p.netns, id: due.id, applied: due.applied }, `${due.applied} on ${where(p)} was not confirmed in time: rolled back to the settings from before it`);
          await this.ensure(m, 'rollback');
        });
      } catch (e) {
        // rollbackNow recorded the failure in the pending file: logged above on the next check.
        if ((e as { code?: string }).code !== AgentCode.RollbackFailed) this.log.error({ event: 'rollback_error', iface: p.iface, netns: p.netns }, (e as Error).message);
      }
    }
  }

  /**
   * Readiness for the service manager (Type=notify): READY=1 the first time every configured
   * interface is protected by this daemon (what /healthz calls ok), so that what is ordered after
   * sluice.service starts with protection in place; until then, and after, STATUS= says how many.
   * Checked at start, after every reconcile and after every reload.
   */
  private readiness(): void {
    if (this.stopped || !this.notify.socket) return;
    const all = [...this.managed.values()].every((m) => m.protection && this.stillOurs(m));
    if (all && !this.ready) {
      this.ready = true;
      if (this.tell({ READY: 1, STATUS: this.statusLine() })) {
        this.log.info({ event: 'notified_ready', socket: this.notify.socket }, `told the service manager: ready (${this.statusLine()})`);
      }
      return;
    }
    this.tell({ STATUS: this.statusLine() });
  }

  private statusLine(): string {
    const missing = [...this.managed.values()].filter((m) => !m.protection).map((m) => where(m.cfg));
    const n = this.managed.size;
    return `${n - missing.length} of ${n} interface${n === 1 ? '' : 's'} protected${missing.length ? `; not yet: ${missing.join(', ')} (retried every ${this.config.reconcileIntervalMs / 1000} s)` : ''}`;
  }

  /** Send to the service manager (nothing without $NOTIFY_SOCKET); a failure is logged once. STATUS alone only when it changed. */
  private tell(fields: Record<string, string | number>): boolean {
    if (!this.notify.socket) return false;
    if (Object.keys(fields).length === 1 && fields['STATUS'] !== undefined) {
      if (fields['STATUS'] === this.lastStatus) return false;
    }
    if (fields['STATUS'] !== undefined) this.lastStatus = String(fields['STATUS']);
    try {
      return this.notify.send(fields);
    } catch (e) {
      if (!this.notifyFailed) {
        this.notifyFailed = true;
        this.log.warn({ event: 'notify_failed', socket: this.notify.socket }, `cannot tell the service manager (${this.notify.socket}): ${(e as Error).message}`);
      }
      return false;
    }
  }

  private protectedCount(): number {
    return [...this.managed.values()].filter((m) => m.protection).length;
  }

  /** Run one change at a time, in order; a failure does not block what follows. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------------------------------------
  // Serving: src/cli/daemon.ts (the agent imports no api module); watching

  /**
   * Watch the directories of the config file and of every file it names (policy files, GeoIP
   * CSVs), not the files: editors save by writing a new file and renaming it over the old one,
   * and Kubernetes updates a ConfigMap volume by swapping its `..data` symlink, so a watch on a
   * file itself would go deaf. Events only prompt a look: a reload happens when a file's content
   * differs from what was loaded. Called again after each reload (the files named may change).
   */
  private watchInputs(): void {
    if (this.stopped) return;
    const dirs = new Set<string>();
    for (const f of Object.keys(this.inputs)) {
      dirs.add(dirname(f));
      try { dirs.add(dirname(realpathSync(f))); } catch { /* gone for now: its directory is watched */ }
    }
    for (const [dir, w] of this.watchers) if (!dirs.has(dir)) { w.close(); this.watchers.delete(dir); }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.fileTouched());
        w.on('error', (e) => this.log.warn({ event: 'watch_error', err: e.message }, `watching ${dir} failed (${e.message}); changes are still seen at each reconcile`));
        this.watchers.set(dir, w);
      } catch (e) {
        this.log.warn({ event: 'watch_error', err: (e as Error).message }, `cannot watch ${dir} (${(e as Error).message}); changes are seen at each reconcile`);
      }
    }
  }

  private fileTouched(): void {
    clearTimeout(this.debounce);
    // A refused reload is logged by reloadNow; the running policy stays.
    this.debounce = setTimeout(() => { this.reloadIfChanged('file').catch(() => undefined); }, 250);
    this.debounce.unref();
  }

  /** The inputs whose content differs from what was loaded (a file that cannot be read now is not counted: mid-rename). */
  private changedInputs(): string[] {
    return Object.entries(this.inputs).filter(([f, h]) => {
      try { return hash(readFileSync(f, 'utf8')) !== h; } catch { return false; }
    }).map(([f]) => f);
  }

  /** Reload when a file of the config reads otherwise than when it was last loaded (valid or not). */
  private async reloadIfChanged(source: string): Promise<void> {
    if (this.stopped) return;
    const changed = this.changedInputs();
    if (!changed.length) return;
    this.log.debug({ event: 'changed', files: changed }, `changed: ${changed.join(', ')}`);
    await this.reload(source);
  }

  private schedule(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      void this.reloadIfChanged('file')
        .catch(() => undefined) // refused: logged, the running policy stays
        .then(() => this.serial(() => this.reconcileAll('periodic')))
        .then(() => { this.readiness(); });
    }, this.config.reconcileIntervalMs);
    this.timer.unref();
  }

  // ---------------------------------------------------------------------------------------------
  // Reconciling

  private desired(m: Managed): Limits {
    return m.override ?? m.cfg.limits;
  }

  /** The config's lists with the API's edits laid over them. */
  private desiredLists(m: Managed): InterfaceConfig['lists'] {
    return runtimeIsEmpty(m.edits) ? m.cfg.lists : layered(m.cfg.lists, m.edits);
  }

  /** The config's rules, those switched to dry-run through the API in dry-run. */
  private desiredRules(m: Managed): RuleSpec[] {
    if (!m.dryRun.size) return m.cfg.rules;
    return m.cfg.rules.map((r) => (m.dryRun.has(r.id) ? { ...r, action: 'dry-run' as const } : r));
  }

  /** Everything the daemon keeps true on an interface (Protection.update's change). */
  private desiredChange(m: Managed): SettingsChange & Required<Pick<SettingsChange, 'lists' | 'rules'>> {
    const p = m.cfg;
    return { limits: this.desired(m), lists: this.desiredLists(m), malformedDrop: p.malformedDrop, rules: this.desiredRules(m), geoip: p.geoip, ruleIds: p.ruleIds, newStatesPerSec: p.newStatesPerSec, runtime: emptyRuntime() };
  }

  private async reconcileAll(reason: string): Promise<void> {
    for (const m of this.managed.values()) {
      await this.ensure(m, reason);
      // Expired blocks and over-limit records of keys that never came back (bpf/maps.h, sl_penalty).
      const pen = m.protection && mapOf(m.protection.maps, 'sl_penalty');
      if (pen) sweepPenalties(pen);
    }
  }

  /** Make one interface protected as configured: bring it up if it is not, set back drifted settings. */
  private async ensure(m: Managed, reason: string): Promise<void> {
    const p = m.cfg;
    const limits = this.desired(m);
    try {
      if (m.protection && this.stillOurs(m)) {
        const s = loadSettings(p);
        // A change applied with --confirm-within is left to its rollback (or confirmation).
        if (readPending(p)) return;
        const want = this.desiredChange(m);
        if (s && (!sameLimits(s.limits, limits) || listsText(s.lists) !== listsText(want.lists!) || s.malformedDrop !== p.malformedDrop || rulesText(s) !== rulesText({ rules: want.rules!, geoip: p.geoip }) || (s.newStatesPerSec ?? 0) !== p.newStatesPerSec)) {
          await m.protection.update(want);
          this.log.warn({ event: 'drift', iface: p.iface, netns: p.netns }, `the settings of ${where(p)} were changed outside the daemon (sluice set?): set back to the config's. Change them in ${this.config.file} or with PUT /v1/limits`);
        }
        return;
      }
      if (m.protection) {
        this.log.warn({ event: 'vanished', iface: p.iface, netns: p.netns }, `the protection of ${where(p)} vanished (sluice down?): protecting it again`);
        this.close(m);
      }
      const pinned = loadSettings(p);
      const sizes = this.sizesFor(m, pinned);
      const r = await Protection.up({
        // The object of this installation, never the one the settings recorded: those are the
        // host's (/run), written by whatever ran before (an older image, another package prefix,
        // a checkout), and its path may not exist here or hold another build. A new image or
        // package thus brings its program in, through the pinned link (an upgrade).
        object: DEFAULT_OBJECT,
        iface: p.iface, netns: p.netns, mode: sizes.mode, maxEntries: sizes.maxEntries, maxRules: sizes.maxRules, maxListEntries: sizes.maxListEntries,
        limits, rules: this.desiredRules(m), lists: this.desiredLists(m), malformedDrop: p.malformedDrop, policyFile: p.policyFile,
        geoip: p.geoip, ruleIds: p.ruleIds, egress: p.egress, newStatesPerSec: p.newStatesPerSec, runtime: emptyRuntime(),
        // Protecting again is never refused because a change is pending (its rollback still runs).
        allowPending: readPending(p)?.id,
      });
      m.protection = r.protection;
      m.linkId = r.protection.link.info().id;
      this.startEvents(m);
      m.snap = takeSnapshot(r.protection);
      for (const w of r.warnings) this.log.warn({ event: 'up_warning', iface: p.iface, netns: p.netns }, w);
      const prog = r.protection.programInfo();
      const t = takeSnapshot(r.protection).totals;
      this.log.info({
        event: r.action, reason, iface: p.iface, netns: p.netns, mode: r.protection.settings.mode, program_id: prog.id,
        allowed_packets: t.allowed_packets, dropped_packets: t.dropped_packets,
      }, `${r.action} ${where(p)} (${r.protection.settings.mode} XDP, program ${prog.id})${r.action === 'attached' ? '' : `: counters kept (${t.allowed_packets} allowed, ${t.dropped_packets} dropped so far)`}`);
      if (m.error) this.log.info({ event: 'recovered', iface: p.iface, netns: p.netns }, `${where(p)} is protected again`);
      m.error = undefined;
    } catch (e) {
      const err = e as { code?: string; message?: string };
      const error = { code: err.code ?? ApiCode.Internal, message: err.message ?? String(e), at: new Date().toISOString() };
      if (!m.error || m.error.message !== error.message) {
        if (error.code === AgentCode.PinsAbiMismatch) {
          // Refused before anything changed: what is pinned keeps running, unmanaged, until an
          // operator starts it afresh (`sluice up --reset-state`); then the next reconcile adopts it.
          const running = runningProgram(p);
          this.log.error({ event: 'adopt_refused', iface: p.iface, netns: p.netns, code: error.code, program_id: running },
            `will not adopt the protection pinned for ${where(p)}${running ? ` (program ${running} keeps running and enforcing, unmanaged by this daemon)` : ''}: ${error.message} (checked again every ${this.config.reconcileIntervalMs / 1000} s)`);
        } else {
          this.log.error({ event: 'protect_failed', iface: p.iface, netns: p.netns, code: error.code }, `cannot protect ${where(p)}: ${error.message} (retried every ${this.config.reconcileIntervalMs / 1000} s)`);
        }
      }
      m.error = error;
    }
  }

  /** Whether the pins still hold the link the daemon opened (not taken down, not replaced). */
  private stillOurs(m: Managed): boolean {
    const path = join(pinDir(m.cfg), 'link');
    if (!existsSync(path)) return false;
    try {
      const l = Link.fromPin(path);
      try {
        const info = l.info();
        return info.id === m.linkId && info.ifindex !== 0;
      } finally {
        l.close();
      }
    } catch {
      return false;
    }
  }

  /**
   * Load-time settings for up: what the config says, unless something pinned runs with others.
   * Those cannot change in place (a new program, maps of another size: state and counters would be
   * lost), so the daemon adopts what runs and says how to apply the change.
   */
  private sizesFor(m: Managed, pinned: Settings | undefined): { mode: InterfaceConfig['mode']; maxEntries: number; maxRules: number; maxListEntries: number } {
    const c = m.cfg;
    if (!pinned || !existsSync(join(pinDir(c), 'link'))) return { mode: c.mode, maxEntries: c.maxEntries, maxRules: c.maxRules, maxListEntries: c.maxListEntries };
    const diffs: string[] = [];
    const pinnedLists = pinned.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
    if (c.mode !== 'auto' && c.mode !== pinned.mode) diffs.push(`mode ${pinned.mode} -> ${c.mode}`);
    if (c.maxEntries !== pinned.maxEntries) diffs.push(`max_entries ${pinned.maxEntries} -> ${c.maxEntries}`);
    if (c.maxRules !== pinned.maxRules) diffs.push(`max_rules ${pinned.maxRules} -> ${c.maxRules}`);
    if (c.maxListEntries !== pinnedLists) diffs.push(`max_list_entries ${pinnedLists} -> ${c.maxListEntries}`);
    this.notePending(m, diffs);
    return { mode: 'auto', maxEntries: pinned.maxEntries, maxRules: pinned.maxRules, maxListEntries: pinnedLists };
  }

  private notePending(m: Managed, diffs: string[]): void {
    const note = diffs.join(', ');
    if (note && note !== m.pending) {
      this.log.warn({ event: 'needs_reattach', iface: m.cfg.iface, netns: m.cfg.netns, changes: diffs },
        `${where(m.cfg)}: ${note} needs the program loaded afresh, which cannot happen in place; it keeps running as before. To apply it, run \`sluice down ${placeFlags(m.cfg)}\` and then \`kill -HUP ${process.pid}\` (or POST /v1/reload): the daemon attaches anew (per-client state and counters start from zero; the interface is unprotected in between)`);
    }
    m.pending = note || undefined;
  }

  /** Drain the interface's ring buffer from now on: nothing decided before is shown as new. */
  private startEvents(m: Managed): void {
    if (!m.protection || !mapOf(m.protection.maps, 'sl_events')) return;
    const p = m.cfg;
    try {
      m.events = new EventHub(m.protection, (e) => this.log.error({ event: 'events_failed', iface: p.iface, netns: p.netns }, `reading the events of ${where(p)} failed: ${e.message}`));
    } catch (e) {
      this.log.error({ event: 'events_failed', iface: p.iface, netns: p.netns }, `cannot read the events of ${where(p)}: ${(e as Error).message}`);
    }
  }

  /**
   * Events of a managed interface as they are decided, filtered, until the returned function is
   * called. The daemon is the ring buffer's one consumer; this is how `sluice events` reads when a
   * daemon runs.
   */
  subscribeEvents(q: PlaceQuery, filter: EventFilter, send: (e: EventView) => void, end: () => void): { budget: () => EventBudget | undefined; unsubscribe: () => void } {
    const m = this.find(q);
    const hub = m.events;
    if (!m.protection || !hub) throw new AgentError(AgentCode.NotProtected, `${where(m.cfg)} is not protected now, so it has no events: see GET /v1/status`);
    const unsubscribe = hub.subscribe((e) => { if (filter.matches(e)) send(e); }, end);
    return { budget: () => (m.events === hub ? hub.budget() : undefined), unsubscribe };
  }

  private close(m: Managed): void {
    const hub = m.events;
    m.events = undefined;
    if (hub) void hub.close();
    try { m.protection?.close(); } catch { /* already closed */ }
    m.protection = undefined;
    m.linkId = undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Reload

  /** Validate the file in full, then apply it; an invalid file changes nothing. */
  reload(source: string): Promise<ReloadResult> {
    return this.serial(async () => {
      // The service manager sees the reload from its start to its end, refused or not.
      if (this.ready) this.tell({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec(), STATUS: `reloading (${source})` });
      try {
        return await this.reloadNow(source);
      } finally {
        if (this.ready) this.tell({ READY: 1, STATUS: this.statusLine() });
        else this.readiness();
      }
    });
  }

  private async reloadNow(source: string): Promise<ReloadResult> {
    const at = new Date().toISOString();
    this.reloads.lastAt = Date.now();
    let next: DaemonConfig;
    try {
      next = readConfig(this.config.file).config;
      const misfits = await this.misfits(next);
      if (misfits.length) throw Object.assign(new ConfigError(next.file, misfits), { inputs: next.inputs });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      // What was refused is not retried until a file changes again: the files it was read from
      // (a policy file it names for the first time included), or those known before.
      this.inputs = e.inputs ? { ...e.inputs } : Object.fromEntries(Object.entries(this.inputs).map(([f, h]) => {
        try { return [f, hash(readFileSync(f, 'utf8'))]; } catch { return [f, h]; }
      }));
      this.reloads.failed++;
      this.reloads.lastOk = false;
      this.log.error({ event: 'reload_refused', source, file: e.file, problems: e.problems.map((p) => formatProblem(e.file, p)) },
        `config reload refused, the running policy stays: ${e.message}`);
      this.lastReload = { ok: false, source, at, problems: e.problems, message: e.message };
      if (this.opts.watch ?? true) this.watchInputs();
      throw e;
    }
    this.inputs = { ...next.inputs };
    const { changes, failures } = await this.apply(next);
    if (this.opts.watch ?? true) this.watchInputs();
    if (failures.length) {
      // Applied in part: said as a failure everywhere (the API's answer, /v1/status, the metric).
      this.reloads.failed++;
      this.reloads.lastOk = false;
      const message = `config reload (${source}) failed to apply on ${failures.length} interface${failures.length === 1 ? '' : 's'}: ${failures.map((f) => `${f.path}: ${f.message}`).join('; ')} (what could be applied was; the daemon retries every ${this.config.reconcileIntervalMs / 1000} s)`;
      this.lastReload = { ok: false, source, at, changes, problems: failures, message };
      this.log.error({ event: 'reload_failed', source, changes, problems: failures.map((f) => `${f.path}: ${f.message}`) }, message);
      throw new ApiError(ApiCode.ReloadFailed, 500, message, failures);
    }
    this.reloads.ok++;
    this.reloads.lastOk = true;
    this.lastReload = { ok: true, source, at, changes };
    this.log.info({ event: 'reloaded', source, changes }, `config reloaded (${source}): ${changes.length ? changes.join('; ') : 'nothing changed'}`);
    return this.lastReload;
  }

  /**
   * What a valid config asks of a running program that its load-time sizes cannot hold (the
   * lists, the rule slots): found before anything reaches the kernel, so that such a reload is
   * refused whole instead of applied in part. A program taken down meanwhile (`sluice down`, to
   * load afresh with other sizes) is not asked.
   */
  private async misfits(next: DaemonConfig): Promise<{ path: string; message: string }[]> {
    const out: { path: string; message: string }[] = [];
    for (const [n, cfg] of next.interfaces.entries()) {
      const m = this.managed.get(keyOf(cfg));
      const live = m?.protection?.settings;
      if (!m || !live || !this.stillOurs(m)) continue;
      const held = live.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
      // In slices: a list of 100,000 prefixes compiles without holding the API for its length.
      const entries = (await runAsync(compiledListsSteps(cfg.lists))).length;
      if (entries > held) {
        out.push({ path: `interfaces[${n}].lists`, message: `the lists compile to ${entries} entries; the program running on ${where(cfg)} holds ${held} (max_list_entries is fixed at load: shorten the lists, or \`sluice down ${placeFlags(cfg)}\` and reload to attach afresh with a larger max_list_entries)` });
      }
      try {
        compilePolicy(policyOf({ limits: cfg.limits, rules: cfg.rules }), live.maxRules);
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        for (const p of e.problems) out.push({ path: `interfaces[${n}].policy`, message: `${p} (the program running on ${where(cfg)} has ${live.maxRules} rule slots, fixed at load)` });
      }
    }
    return out;
  }

  /** Reconcile to a validated config; what failed is returned, each with its interface, never dropped. */
  private async apply(next: DaemonConfig): Promise<{ changes: string[]; failures: Problem[] }> {
    const prev = this.config;
    const changes: string[] = [];
    const failures: Problem[] = [];
    const failed = (p: Place, message: string): void => {
      if (!failures.some((f) => f.path === where(p))) failures.push({ path: where(p), message });
    };
    for (const w of next.warnings) this.log.warn({ event: 'config_warning' }, w);
    if (next.log.level !== prev.log.level) {
      this.log.level = next.log.level;
      changes.push(`log level ${prev.log.level} -> ${next.log.level}`);
    }
    if (JSON.stringify(next.fleet) !== JSON.stringify(prev.fleet)) {
      this.log.warn({ event: 'fleet_changed' }, 'the fleet settings changed: they take effect when the daemon restarts (protection stays in force across a restart)');
    }
    if (apiText(next.api, next.metrics) !== apiText(prev.api, prev.metrics)) {
      this.log.warn({ event: 'api_changed' }, 'the api or metrics settings changed: they take effect when the daemon restarts (protection stays in force across a restart)');
    }
    const wanted = new Map(next.interfaces.map((i) => [keyOf(i), i]));
    const leaving = [...this.managed.values()].filter((m) => !wanted.has(keyOf(m.cfg))).map((m) => where(m.cfg));
    if (leaving.length && leaving.length === this.managed.size) {
      this.log.warn({ event: 'removing_all', interfaces: leaving, configured: next.interfaces.length },
        `this reload takes down every interface the daemon protects (${leaving.join(', ')}): the file ${next.interfaces.length ? `names only others (${next.interfaces.map(where).join(', ')})` : 'asks for none (interfaces: [])'}`);
    }
    for (const [key, m] of this.managed) {
      if (wanted.has(key)) continue;
      const had = !!m.protection;
      this.close(m);
      m.manager?.release();
      this.managed.delete(key);
      this.metricsRegistry.forget(m.cfg.iface, m.cfg.netns);
      try {
        await Protection.down(m.cfg);
        changes.push(`${where(m.cfg)}: removed from the config, protection taken down`);
      } catch (e) {
        this.log.error({ event: 'down_failed', iface: m.cfg.iface, netns: m.cfg.netns }, `cannot take down ${where(m.cfg)}: ${(e as Error).message}`);
        if (had) failed(m.cfg, `cannot take it down: ${(e as Error).message}`);
      }
    }
    for (const [key, cfg] of wanted) {
      const m = this.managed.get(key);
      if (!m) {
        const lock = holdLock(managerLockPath(cfg), `state ${STATE_ROOT}, config ${next.file}`);
        if (!('release' in lock)) {
          const msg = `another sluice daemon (process ${lock.holder ?? '?'}${lock.note ? `, ${lock.note}` : ''}) manages ${where(cfg)}: not managed by this one`;
          this.log.error({ event: 'managed_elsewhere', iface: cfg.iface, netns: cfg.netns, code: AgentCode.ManagedElsewhere }, msg);
          changes.push(`${where(cfg)}: ${msg}`);
          continue;
        }
        const fresh: Managed = managedOf(cfg, lock);
        this.managed.set(key, fresh);
        await this.ensure(fresh, 'reload');
        changes.push(`${where(cfg)}: added, ${fresh.protection ? 'protected' : `not protected (${fresh.error?.message})`}`);
        if (!fresh.protection) failed(cfg, `added, but not protected: ${fresh.error?.message ?? 'unknown error'}`);
        continue;
      }
      const old = m.cfg;
      m.cfg = cfg;
      const live = m.protection?.settings;
      const runtime: string[] = [];
      if (!sameLimits(old.limits, cfg.limits)) runtime.push('limits');
      if (listsText(old.lists) !== listsText(cfg.lists)) runtime.push('lists');
      if (old.malformedDrop !== cfg.malformedDrop) runtime.push('malformed');
      if (old.newStatesPerSec !== cfg.newStatesPerSec) runtime.push('new_states_per_sec');
      if (rulesText(old) !== rulesText(cfg)) runtime.push('rules');
      if (old.egress !== cfg.egress) changes.push(`${where(cfg)}: egress ${cfg.egress ? 'on' : 'off'} takes effect with \`sluice up\` or a daemon restart`);
      if (runtime.length) {
        if (m.override && !sameLimits(m.override, cfg.limits)) changes.push(`${where(cfg)}: limits set through the API replaced by the file's`);
        m.override = null;
        // A rule switched to dry-run through the API goes back to the file's mode when the file changes the rules.
        if (m.dryRun.size && runtime.includes('rules')) {
          changes.push(`${where(cfg)}: rules switched to dry-run through the API set back to the file's mode`);
          m.dryRun.clear();
        }
        if (m.protection && this.stillOurs(m)) {
          try {
            await m.protection.update(this.desiredChange(m));
            changes.push(`${where(cfg)}: ${runtime.join(', ')} updated (policy version ${m.protection.limiter.version()})`);
          } catch (e) {
            this.log.error({ event: 'update_failed', iface: cfg.iface, netns: cfg.netns }, `cannot update ${where(cfg)}: ${(e as Error).message}`);
            failed(cfg, `cannot update ${runtime.join(', ')}: ${(e as Error).message}`);
          }
        }
      }
      if (live) {
        const diffs: string[] = [];
        if (cfg.mode !== 'auto' && cfg.mode !== live.mode) diffs.push(`mode ${live.mode} -> ${cfg.mode}`);
        if (cfg.maxEntries !== live.maxEntries) diffs.push(`max_entries ${live.maxEntries} -> ${cfg.maxEntries}`);
        if (cfg.maxRules !== live.maxRules) diffs.push(`max_rules ${live.maxRules} -> ${cfg.maxRules}`);
        this.notePending(m, diffs);
        if (diffs.length) changes.push(`${where(cfg)}: ${diffs.join(', ')} pending (needs a fresh attach; see the log)`);
      }
      await this.ensure(m, 'reload');
      if (!m.protection) failed(cfg, `not protected: ${m.error?.message ?? 'unknown error'}`);
    }
    this.config = next;
    if (next.reconcileIntervalMs !== prev.reconcileIntervalMs) {
      changes.push(`reconcile interval ${prev.reconcileIntervalMs} -> ${next.reconcileIntervalMs} ms`);
      if (this.timer) this.schedule();
    }
    return { changes, failures };
  }

  // ---------------------------------------------------------------------------------------------
  // The API

  private find(q: PlaceQuery): Managed {
    const m = this.managed.get(keyOf(q));
    if (!m) {
      throw new ApiError(ApiCode.NotManaged, 404, `${where(q)} is not in this daemon's config (${this.config.file}); interfaces: ${[...this.managed.values()].map((x) => where(x.cfg)).join(', ') || 'none'}`);
    }
    return m;
  }

  private protectionOf(m: Managed): Protection {
    if (!m.protection) {
      throw Object.assign(new Error(`${where(m.cfg)} is configured but not protected now: ${m.error?.message ?? 'not attached yet'}`), { code: AgentCode.NotProtected });
    }
    return m.protection;
  }

  async status(): Promise<unknown> {
    const interfaces = [];
    for (const m of this.managed.values()) {
      const base = { iface: m.cfg.iface, netns: m.cfg.netns, configured: { mode: m.cfg.mode, max_entries: m.cfg.maxEntries, max_rules: m.cfg.maxRules } };
      const extra = { limits_from: m.override ? 'api' : 'config', ...(m.pending ? { pending: m.pending } : {}) };
      if (!m.protection) {
        interfaces.push({ ...base, protected: false, error: m.error ?? null, ...extra });
        continue;
      }
      try {
        interfaces.push({ ...statusJson(await statusReport(m.protection)), ...base, protected: true, ...extra });
      } catch (e) {
        interfaces.push({ ...base, protected: false, error: { code: (e as { code?: string }).code ?? ApiCode.Internal, message: (e as Error).message }, ...extra });
      }
    }
    const configured = new Set(this.managed.keys());
    return {
      daemon: {
        pid: process.pid,
        config: this.config.file,
        started_at: this.startedAt,
        detach_on_exit: !!this.opts.detachOnExit,
        reconcile_interval_ms: this.config.reconcileIntervalMs,
        last_reload: this.lastReload,
      },
      fleet: this.fleet?.status() ?? { enabled: false },
      interfaces,
      unmanaged: listPlaces().filter((p) => !configured.has(keyOf(p))),
    };
  }

  async stats(q?: PlaceQuery): Promise<unknown> {
    const report = (m: Managed): unknown => {
      const p = this.protectionOf(m);
      const cur = takeSnapshot(p);
      // The rates of the history's last second, the very figures GET /v1/history gives for it.
      const last = m.history.last();
      if (last && Date.now() - last.t < 2.5 * HISTORY_INTERVAL_MS) return { ...statsReport(p, cur), rates: { ...last.rates, at: new Date(last.t).toISOString() } };
      const prev = m.snap && cur.at_ns - m.snap.at_ns >= 500_000_000n ? m.snap : undefined;
      const r = statsReport(p, cur, prev);
      return { ...r, rates: r.rates ? { ...r.rates, at: new Date().toISOString() } : null };
    };
    if (q) return report(this.find(q));
    return { interfaces: [...this.managed.values()].filter((m) => m.protection).map(report) };
  }

  async top(q: PlaceQuery, n: number): Promise<unknown> {
    const m = this.find(q);
    const t0 = process.hrtime.bigint();
    const { rate, top } = await topReport(this.protectionOf(m), n);
    return { iface: q.iface, netns: q.netns, read_ms: +(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1), rate, top };
  }

  /**
   * Limits through the API: validated as in the file, then one policy flip; kept until the config
   * changes this interface. The answer is the limits now in force, as JSON (snake_case).
   */
  async setLimits(q: PlaceQuery, input: LimitsInput): Promise<{ iface: string; netns: string | null; limits: ReturnType<typeof limitsJson> }> {
    const s = await this.applyLimits(q, input);
    return { iface: s.iface, netns: s.netns, limits: limitsJson(s.limits) };
  }

  private applyLimits(q: PlaceQuery, input: LimitsInput): Promise<Settings> {
    return this.serial(async () => {
      const m = this.find(q);
      if (!m.protection || !this.stillOurs(m)) await this.ensure(m, 'api');
      const p = this.protectionOf(m);
      const limits = mergeLimits(this.desired(m), input);
      const problems = limitsProblems(limits);
      if (problems.length) {
        throw new ApiError(ApiCode.BadRequest, 400, `invalid limits: ${problems.map(([k, msg]) => `${k ? `${k}: ` : ''}${msg}`).join('; ')}`,
          problems.map(([k, message]) => ({ path: `limits${k ? `.${k}` : ''}`, message })));
      }
      const s = await p.update({ limits });
      m.override = sameLimits(limits, m.cfg.limits) ? null : limits;
      this.log.info({ event: 'limits_set', iface: q.iface, netns: q.netns, limits: limitsJson(limits), version: p.limiter.version() }, `limits of ${where(q)} set through the API (until the config changes them)`);
      return s;
    });
  }

  /** GET /v1/history: the last 15 minutes at one point a second (after sinceMs, when given). */
  async history(q: PlaceQuery, sinceMs?: number): Promise<{ iface: string; netns: string | null } & HistoryJson> {
    const m = this.find(q);
    return { iface: m.cfg.iface, netns: m.cfg.netns, ...m.history.json(sinceMs) };
  }

  /** The deny, allow and management lists in force, each entry with where it comes from. */
  private listsJson(m: Managed): Record<ListName, { prefix: string; from: 'config' | 'api'; until: string | null }[]> {
    const lists = this.desiredLists(m);
    const out = {} as Record<ListName, { prefix: string; from: 'config' | 'api'; until: string | null }[]>;
    for (const n of ['deny', 'allow', 'mgmt'] as ListName[]) {
      out[n] = lists[n].map((prefix) => {
        const until = n === 'deny' ? m.expiries.get(prefix) : undefined;
        return { prefix, from: m.edits.add[n].includes(prefix) ? 'api' as const : 'config' as const, until: until ? new Date(until).toISOString() : null };
      });
    }
    return out;
  }

  /**
   * GET /v1/policy: the live policy of an interface, read-only: its rules with their mode (a rule
   * switched to dry-run through the API says so), limits, matches and counters; the version and
   * when it changed; the lists; a pending change applied with --confirm-within.
   */
  async policy(q: PlaceQuery): Promise<unknown> {
    const m = this.find(q);
    const p = this.protectionOf(m);
    const s = p.settings;
    const snap = takeSnapshot(p);
    const counters = new Map(snap.rules.map((r) => [r.id, r]));
    const n = (v: number | bigint | null | undefined): number | null => (v === undefined || v === null ? null : Number(v));
    const rules = policyOf({ limits: s.limits, rules: s.rules }).rules.map((r) => {
      const c = counters.get(r.id);
      const conf = m.cfg.rules.find((x) => x.id === r.id);
      const action = r.action ?? 'drop';
      const reasons = Object.fromEntries(Object.entries(c?.reasons ?? {}).map(([k, v]) => [k, v.packets]));
      return {
        id: r.id, name: r.name ?? null,
        mode: action === 'dry-run' ? 'dry-run' : 'enforce',
        action, configured_action: r.id === 0 ? 'drop' : conf?.action ?? 'drop',
        dry_run_from: m.dryRun.has(r.id) ? 'api' : action === 'dry-run' ? 'config' : null,
        switched_at: m.dryRun.get(r.id) ?? null,
        match: {
          src: r.src ?? null, dst: r.dst ?? null, proto: r.proto ?? null, dport: r.dport ?? null, syn: r.syn ?? false,
          tier: r.tier ?? null, dir: r.dir ?? 'ingress',
        },
        limit: {
          algorithm: r.alg ?? 'fixed', rate: n(r.pps === undefined ? 1000 : r.pps), rate_period_ms: r.ppsPeriodMs ?? 1000, burst: n(r.ppsBurst) ?? 0,
          bytes_rate: n(r.bps), bytes_period_ms: r.bpsPeriodMs ?? 1000, bytes_burst: n(r.bpsBurst) ?? 0,
          key: r.key === 'rule' ? 'rule' : { v4: r.key?.v4 ?? 32, v6: r.key?.v6 ?? 64 }, block_ms: r.blockMs ?? null,
        },
        counters: {
          allowed_packets: c?.allowed_packets ?? 0, dropped_packets: c?.dropped_packets ?? 0, allowed_bytes: c?.allowed_bytes ?? 0, dropped_bytes: c?.dropped_bytes ?? 0,
          would_drop: reasons['dryrun'] ?? 0, blocked: reasons['blocked'] ?? 0, new_states: c?.new_states ?? 0, reasons,
        },
      };
    });
    return {
      iface: s.iface, netns: s.netns, version: p.limiter.version(), changed_at: m.seen?.version === p.limiter.version() ? m.seen.at : s.updatedAt,
      file: s.policyFile, limits_from: m.override ? 'api' : 'config', default: limitsJson(s.limits), rules,
      lists: this.listsJson(m), reasons: REASON_NAMES.filter(Boolean), rollback: summarizePending(p.place),
    };
  }

  /**
   * POST /v1/lists: add a prefix to the deny or allow list, or remove it; a deny entry added with
   * a duration (a block) is removed by the daemon when it is over. One policy flip, like a
   * reload; kept over reloads (as the CLI's runtime layer is kept over applies) until removed, its
   * time is up, or the daemon restarts.
   */
  editList(q: PlaceQuery, e: { list: 'deny' | 'allow'; op: 'add' | 'del'; prefix: string; forMs?: number }): Promise<unknown> {
    return this.serial(async () => {
      const m = this.find(q);
      if (!m.protection || !this.stillOurs(m)) await this.ensure(m, 'api');
      const p = this.protectionOf(m);
      let c: string;
      try {
        c = formatPrefix(parsePrefix(e.prefix));
      } catch (err) {
        throw new ApiError(ApiCode.BadRequest, 400, `invalid body: prefix: ${(err as Error).message}`, [{ path: 'prefix', message: (err as Error).message }]);
      }
      const before = this.desiredLists(m)[e.list];
      if (e.op === 'del' && !before.includes(c)) {
        throw Object.assign(new Error(`${c} is not in the ${e.list} list of ${where(q)}, so nothing was removed (the list holds: ${before.join(', ') || 'nothing'})`), { code: AgentCode.NotInList });
      }
      if (e.op === 'add' && e.forMs !== undefined && before.includes(c) && !m.edits.add[e.list].includes(c)) {
        throw new ApiError(ApiCode.BadRequest, 409, `${c} is in the ${e.list} list of the config file (${this.config.file}) for good: a block for a while cannot shorten it`);
      }
      const old = { edits: m.edits, expiry: m.expiries.get(c) };
      if (!(e.op === 'add' && before.includes(c))) m.edits = editRuntime(m.edits, e.list, e.op, [c]);
      if (e.op === 'add' && e.list === 'deny' && e.forMs !== undefined) m.expiries.set(c, Date.now() + e.forMs);
      else if (e.list === 'deny') m.expiries.delete(c);
      try {
        if (m.edits !== old.edits) await p.update(this.desiredChange(m));
      } catch (err) {
        m.edits = old.edits;
        if (old.expiry !== undefined) m.expiries.set(c, old.expiry); else m.expiries.delete(c);
        throw err;
      }
      const until = m.expiries.get(c);
      this.log.info({ event: 'list_edited', iface: q.iface, netns: q.netns, list: e.list, op: e.op, prefix: c, until: until ? new Date(until).toISOString() : null, version: p.limiter.version() },
        `${e.op === 'add' ? `${c} added to` : `${c} removed from`} the ${e.list} list of ${where(q)} through the API${until ? ` until ${new Date(until).toISOString()}` : ''}`);
      return { iface: m.cfg.iface, netns: m.cfg.netns, list: e.list, op: e.op, prefix: c, until: until ? new Date(until).toISOString() : null, version: p.limiter.version(), lists: this.listsJson(m) };
    });
  }

  /**
   * POST /v1/rules/mode: a rule of the policy file to dry-run (it counts what it would drop and
   * passes it) or back to the mode the file gives it. One policy flip; per-client state is kept.
   * Holds until the config changes the interface's rules, or the daemon restarts.
   */
  setRuleMode(q: PlaceQuery, rule: string, mode: 'dry-run' | 'enforce'): Promise<unknown> {
    return this.serial(async () => {
      const m = this.find(q);
      if (!m.protection || !this.stillOurs(m)) await this.ensure(m, 'api');
      const p = this.protectionOf(m);
      const names = m.cfg.rules.map((r) => `${r.id} ${r.name ?? ''}`.trim());
      if (rule === '0' || rule === 'default') {
        throw new ApiError(ApiCode.BadRequest, 400, `the default rule of ${where(q)} has no dry-run switch: its limits are the interface's (PUT /v1/limits); switch a rule of the policy file (${names.join(', ') || 'none'})`);
      }
      const r = m.cfg.rules.find((x) => (/^\d+$/.test(rule) ? x.id === Number(rule) : x.name === rule));
      if (!r) throw new ApiError(ApiCode.BadRequest, 400, `no rule ${JSON.stringify(rule)} on ${where(q)}: its rules are ${names.join(', ') || 'the default rule alone'} (by name or id)`);
      if (mode === 'enforce' && (r.action ?? 'drop') === 'dry-run') {
        throw new ApiError(ApiCode.BadRequest, 409, `rule ${r.name ?? r.id} is in dry-run in the policy file (${m.cfg.policyFile ?? this.config.file}): change its action there`);
      }
      const old = new Map(m.dryRun);
      if (mode === 'dry-run' && (r.action ?? 'drop') !== 'dry-run') { if (!m.dryRun.has(r.id)) m.dryRun.set(r.id, new Date().toISOString()); } else m.dryRun.delete(r.id);
      try {
        await p.update(this.desiredChange(m));
      } catch (err) {
        m.dryRun = old;
        throw err;
      }
      this.log.info({ event: 'rule_mode_set', iface: q.iface, netns: q.netns, rule: r.name ?? r.id, mode, version: p.limiter.version() }, `rule ${r.name ?? r.id} of ${where(q)} set to ${mode === 'dry-run' ? 'dry-run' : `its file's mode (${r.action ?? 'drop'})`} through the API`);
      const pol = await this.policy(q) as { rules: { id: number }[]; version: number };
      return { iface: m.cfg.iface, netns: m.cfg.netns, version: pol.version, rule: pol.rules.find((x) => x.id === r.id) };
    });
  }

  /** POST /v1/policy/confirm: keep a change applied with --confirm-within (no rollback). */
  async confirmPending(q: PlaceQuery): Promise<unknown> {
    const m = this.find(q);
    const pending = summarizePending(m.cfg);
    const confirmed = await confirm(m.cfg);
    if (confirmed) this.log.info({ event: 'confirmed', iface: q.iface, netns: q.netns, applied: pending?.applied ?? null }, `${pending?.applied ?? 'the pending change'} on ${where(q)} confirmed through the API: no rollback`);
    return { iface: m.cfg.iface, netns: m.cfg.netns, confirmed, applied: pending?.applied ?? null };
  }

  /** POST /v1/policy/rollback: roll a change applied with --confirm-within back now (or retry a failed rollback). */
  rollbackPending(q: PlaceQuery): Promise<unknown> {
    return this.serial(async () => {
      const m = this.find(q);
      const pending = summarizePending(m.cfg);
      const done = await rollbackNow(m.cfg);
      if (done) {
        this.close(m); // reopened by ensure with the restored settings
        this.log.warn({ event: 'rolled_back', iface: q.iface, netns: q.netns, applied: pending?.applied ?? null, source: 'api' }, `${pending?.applied ?? 'the pending change'} on ${where(q)} rolled back through the API`);
        await this.ensure(m, 'rollback');
      }
      return { iface: m.cfg.iface, netns: m.cfg.netns, rolled_back: done, applied: pending?.applied ?? null };
    });
  }

  /**
   * /healthz: ok when every configured interface is protected by this daemon now: it holds the
   * interface's protection (attached or adopted, and not failed since), and the link pinned for
   * it is still the one it attached or adopted, attached to an interface (not taken down by
   * `sluice down`, not replaced by another process). No interfaces configured: ok. Read only:
   * it looks at the pins, it changes nothing (the reconcile timer repairs).
   */
  async health(): Promise<{ ok: boolean; interfaces: { iface: string; netns: string | null; protected: boolean; reason?: string }[] }> {
    const interfaces = [...this.managed.values()].map((m) => {
      const base = { iface: m.cfg.iface, netns: m.cfg.netns };
      if (!m.protection) return { ...base, protected: false, reason: m.error?.message ?? 'not attached yet' };
      if (!this.stillOurs(m)) return { ...base, protected: false, reason: 'the pinned link is gone or no longer the one this daemon attached (sluice down?); the daemon re-attaches at its next reconcile' };
      return { ...base, protected: true };
    });
    return { ok: interfaces.every((i) => i.protected), interfaces };
  }

  async metrics(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.metricsRegistry.contentType, body: await this.metricsRegistry.render() };
  }

  /** For tests and embedding: an API instance over this daemon, not listening. */
  api(token: string | null = null): FastifyInstance {
    return this.opts.frontend.inject(this, token);
  }

  /**
   * Every second: the history's next point (the counters' change since the last reading), the
   * state map's count when due, the policy version seen, and deny entries whose time is up.
   */
  sample(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const m of this.managed.values()) {
      const p = m.protection;
      if (p) {
        try {
          const cur = takeSnapshot(p);
          const max = p.limiter.maps.rate_limit_map.maxEntries;
          if (m.snap) m.history.push(m.snap, cur, { entries: m.entries.count, max }, now);
          m.snap = cur;
          const v = p.limiter.version();
          if (!m.seen || m.seen.version !== v) m.seen = { version: v, at: m.seen ? new Date(now).toISOString() : p.settings.updatedAt };
          this.countEntries(m, p);
        } catch (e) {
          this.log.debug({ event: 'sample_failed', iface: m.cfg.iface, netns: m.cfg.netns }, (e as Error).message);
        }
      }
      const due = [...m.expiries].filter(([, at]) => at <= now).map(([prefix]) => prefix);
      if (due.length) {
        for (const prefix of due) m.expiries.delete(prefix);
        void this.serial(async () => {
          m.edits = editRuntime(m.edits, 'deny', 'del', due.filter((c) => m.edits.add.deny.includes(c)));
          if (m.protection && this.stillOurs(m)) await m.protection.update(this.desiredChange(m));
          this.log.info({ event: 'block_expired', iface: m.cfg.iface, netns: m.cfg.netns, prefixes: due }, `the block of ${due.join(', ')} on ${where(m.cfg)} is over: removed from the deny list`);
        }).catch((e) => this.log.error({ event: 'update_failed', iface: m.cfg.iface, netns: m.cfg.netns }, `cannot remove expired blocks ${due.join(', ')} from ${where(m.cfg)}: ${(e as Error).message} (retried at the next reconcile)`));
      }
    }
  }

  /**
   * The state map's entries for the history: one shared walk (as /v1/top, /v1/status and /metrics
   * take), started when the last one is older than ten times what it took (at least a second), so
   * that a map of a million entries is counted every few seconds and a small one every second.
   */
  private countEntries(m: Managed, p: Protection): void {
    const e = m.entries;
    const now = Date.now();
    if (e.busy || now - e.at < Math.max(HISTORY_INTERVAL_MS - 100, 10 * e.ms)) return;
    e.busy = true;
    const t0 = now;
    void statusEntries(p).then((n) => { e.count = n; }, () => undefined).finally(() => { e.busy = false; e.at = Date.now(); e.ms = e.at - t0; });
  }

  // ---------------------------------------------------------------------------------------------
  // Stop

  /** Stop serving and watching; leave protection in force unless detach (default: detachOnExit). */
  async stop(o: { detach?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const detach = o.detach ?? !!this.opts.detachOnExit;
    this.tell({ STOPPING: 1, STATUS: detach ? 'stopping: taking protection down' : 'stopping: protection stays in force' });
    clearInterval(this.timer);
    clearInterval(this.rollbackTimer);
    clearInterval(this.sampleTimer);
    clearTimeout(this.debounce);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    await Promise.allSettled(this.servers.map((s) => s.close()));
    await this.fleet?.stop();
    await this.serial(async () => {
      for (const m of this.managed.values()) {
        this.close(m);
        if (detach) {
          try {
            await Protection.down(m.cfg);
          } catch (e) {
            this.log.error({ event: 'down_failed', iface: m.cfg.iface, netns: m.cfg.netns }, `cannot take down ${where(m.cfg)}: ${(e as Error).message}`);
          }
        }
      }
    });
    for (const m of this.managed.values()) m.manager?.release();
    this.stateLock?.release();
    const n = this.managed.size;
    this.log.info({ event: 'stop', detached: detach }, detach ? `sluice daemon stopped: protection taken down on ${n} interface${n === 1 ? '' : 's'}` : `sluice daemon stopped: protection stays in force on ${n} interface${n === 1 ? '' : 's'} (the next start adopts it)`);
  }
}

/** The file's text and the config it gives (a ConfigError if unreadable or invalid). */
/** What the config is handed from the settings (it reads no settings itself): the rule ids kept. */
const CONFIG_CONTEXT: ConfigContext = { ruleIds: (p) => loadSettings(p)?.ruleIds ?? {} };

function readConfig(file: string): { text: string; config: DaemonConfig } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { text: '', config: loadConfig(file, CONFIG_CONTEXT) }; // throws the ConfigError that says why
  }
  return { text, config: parseConfig(text, file, CONFIG_CONTEXT) };
}
