/**
 * Prometheus metrics, read from the maps at scrape time (nothing is copied between scrapes):
 * counters per interface, rule, verdict and reason; new states, state-map fill and evictions; the
 * policy version; sampled events suppressed or lost; the daemon's reloads; and the process's own
 * metrics (CPU, memory, event-loop lag).
 *
 * Counting the entries of a state map means walking it (the kernel keeps no count for an LRU
 * hash): done with batch lookups that yield to the event loop between batches, at most once per
 * `stateCacheMs` per interface, and shared by concurrent scrapes and API requests (sharedWalk).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { REASON_NAMES, type RuleStats, type SlotStats } from '../limiter/stats';

/** The reason metric's help: every reason the data path counts, from the generated enum. */
export function reasonHelp(): string {
  return `Packets by rule and reason (${REASON_NAMES.filter(Boolean).join(', ')}); reasons that never counted are left out`;
}

/**
 * What the metrics read of one protected interface; the agent implements it over its protection
 * (src/agent/report.ts, metricsReader). Every call reads the maps now.
 */
export interface ProtectionReader {
  /** The counters now: per rule, the global slot, and the new states counted since attach. */
  snapshot(): { rules: readonly RuleStats[]; global: SlotStats; totals: { new_states: number } };
  /** The policy version in force. */
  version(): number;
  /** The state map's size. */
  readonly maxEntries: number;
  /** The state map's entries, counted by a walk shared with the API's /v1/top and /v1/status. */
  countEntries(): Promise<number>;
  /** Sampled events the kernel did not emit, summed over CPUs; undefined without the map. */
  eventBudget(): { suppressed: number; lost: number } | undefined;
}

export interface MetricsInterface {
  iface: string;
  netns: string | null;
  /** Open while the interface is protected; undefined while it is not (the last attempt failed). */
  protection: ProtectionReader | undefined;
  /** The state of a change applied with --confirm-within, if one is pending: pending, failed, orphaned. */
  rollback?: string | null;
}

export interface ReloadCounts {
  ok: number;
  failed: number;
  lastOk: boolean | null;
  /** Unix time of the last reload attempt, ms; null before any. */
  lastAt: number | null;
}

/** What the fleet's exchange says of itself (src/fleet/exchange.ts, FleetStatus). */
export interface FleetMetrics {
  connected: boolean;
  rounds: number;
  errors: number;
  keys_exchanged_total: number;
  keys_tracked: number;
  lag_ms: number | null;
  last_round_ms: number | null;
}

export interface MetricsSource {
  metricInterfaces(): MetricsInterface[];
  reloadCounts(): ReloadCounts;
  /** The fleet's exchange, or null without one (no fleet metrics then). */
  fleetStatus?(): FleetMetrics | null;
}

interface Labels { iface: string; netns: string }

interface InterfaceData {
  labels: Labels;
  up: boolean;
  rules?: (RuleStats | (SlotStats & { id: 'global'; name?: undefined }))[];
  version?: number;
  entries?: number;
  maxEntries?: number;
  evictions?: number;
  events?: { suppressed: number; lost: number };
}

const IFACE = ['iface', 'netns'] as const;
const RULE = ['iface', 'netns', 'rule_id', 'rule'] as const;

export interface MetricsOptions {
  /** How long a state-map entry count is reused. Default 5 s. */
  stateCacheMs?: number;
  /** Also export the process's own metrics (process_*, nodejs_*). Default true. */
  processMetrics?: boolean;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly stateCacheMs: number;
  private data: Promise<InterfaceData[]> | undefined;
  private readonly counts = new Map<string, { at: number; entries: number; newStates: number; pending?: Promise<void> }>();
  /** Highest eviction estimate reported per interface: a counter must not go down. */
  private readonly evictHigh = new Map<string, number>();

  constructor(private readonly source: MetricsSource, o: MetricsOptions = {}) {
    this.stateCacheMs = o.stateCacheMs ?? 5000;
    if (o.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const r = [this.registry];
    const self = this;
    const each = async (fn: (d: InterfaceData) => void): Promise<void> => {
      for (const d of await self.collectOnce()) fn(d);
    };
    const ruleLabels = (d: InterfaceData, x: { id: number | 'global'; name?: string | undefined }) => ({ ...d.labels, rule_id: String(x.id), rule: x.name ?? '' });

    new Gauge({
      name: 'sluice_up', help: '1 while a configured interface is protected, 0 while it is not (see the daemon log and /v1/status for why)',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => this.set(d.labels, d.up ? 1 : 0)); },
    });
    const fleet = (): FleetMetrics | null => source.fleetStatus?.() ?? null;
    new Gauge({
      name: 'sluice_fleet_connected', help: '1 while the fleet exchange works (global rules hold fleet-wide), 0 while every global rule is on its local limit',
      registers: r,
      collect() { this.reset(); const f = fleet(); if (f) this.set(f.connected ? 1 : 0); },
    });
    new Counter({
      name: 'sluice_fleet_rounds_total', help: 'Exchange rounds that succeeded', registers: r,
      collect() { this.reset(); const f = fleet(); if (f) this.inc(f.rounds); },
    });
    new Counter({
      name: 'sluice_fleet_errors_total', help: 'Exchange rounds that failed (Redis unreachable, slow or failing)', registers: r,
      collect() { this.reset(); const f = fleet(); if (f) this.inc(f.errors); },
    });
    new Counter({
      name: 'sluice_fleet_keys_exchanged_total', help: 'Keys of global rules sent to the fleet, summed over rounds', registers: r,
      collect() { this.reset(); const f = fleet(); if (f) this.inc(f.keys_exchanged_total); },
    });
    new Gauge({
      name: 'sluice_fleet_keys_tracked', help: 'Keys of global rules this node tracks', registers: r,
      collect() { this.reset(); const f = fleet(); if (f) this.set(f.keys_tracked); },
    });
    new Gauge({
      name: 'sluice_fleet_lag_seconds', help: 'Seconds since the last exchange round that succeeded', registers: r,
      collect() { this.reset(); const f = fleet(); if (f && f.lag_ms !== null) this.set(f.lag_ms / 1000); },
    });
    new Gauge({
      name: 'sluice_fleet_round_seconds', help: 'How long the last successful exchange round took', registers: r,
      collect() { this.reset(); const f = fleet(); if (f && f.last_round_ms !== null) this.set(f.last_round_ms / 1000); },
    });
    new Counter({
      name: 'sluice_packets_total', help: 'Packets decided, by rule and verdict (pass includes dry-run would-drops; rule_id "global": lists, non-IP, malformed)',
      labelNames: [...RULE, 'verdict'], registers: r,
      async collect() {
        this.reset();
        await each((d) => d.rules?.forEach((x) => {
          this.inc({ ...ruleLabels(d, x), verdict: 'pass' }, x.allowed_packets);
          this.inc({ ...ruleLabels(d, x), verdict: 'drop' }, x.dropped_packets);
        }));
      },
    });
    new Counter({
      name: 'sluice_bytes_total', help: 'Frame bytes decided, by rule and verdict',
      labelNames: [...RULE, 'verdict'], registers: r,
      async collect() {
        this.reset();
        await each((d) => d.rules?.forEach((x) => {
          this.inc({ ...ruleLabels(d, x), verdict: 'pass' }, x.allowed_bytes);
          this.inc({ ...ruleLabels(d, x), verdict: 'drop' }, x.dropped_bytes);
        }));
      },
    });
    new Counter({
      name: 'sluice_reason_packets_total', help: reasonHelp(),
      labelNames: [...RULE, 'reason'], registers: r,
      async collect() {
        this.reset();
        await each((d) => d.rules?.forEach((x) => {
          for (const [reason, v] of Object.entries(x.reasons)) this.inc({ ...ruleLabels(d, x), reason }, v.packets);
        }));
      },
    });
    new Counter({
      name: 'sluice_reason_bytes_total', help: 'Frame bytes by rule and reason',
      labelNames: [...RULE, 'reason'], registers: r,
      async collect() {
        this.reset();
        await each((d) => d.rules?.forEach((x) => {
          for (const [reason, v] of Object.entries(x.reasons)) this.inc({ ...ruleLabels(d, x), reason }, v.bytes);
        }));
      },
    });
    new Counter({
      name: 'sluice_new_states_total', help: 'Insertions into the per-client state maps (rate_limit_map, rate_limit_map6), by rule',
      labelNames: RULE, registers: r,
      async collect() { this.reset(); await each((d) => d.rules?.forEach((x) => { if (x.id !== 'global') this.inc(ruleLabels(d, x), x.new_states); })); },
    });
    new Gauge({
      name: 'sluice_state_entries', help: 'Entries in the per-client state map now (counted at most every few seconds)',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.entries !== undefined) this.set(d.labels, d.entries); }); },
    });
    new Gauge({
      name: 'sluice_state_max_entries', help: 'Size of the per-client state map (LRU): beyond it the least recently used entries are evicted',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.maxEntries !== undefined) this.set(d.labels, d.maxEntries); }); },
    });
    new Counter({
      name: 'sluice_state_evictions_total', help: 'Evictions from the state map, estimated: new states minus entries present (the kernel counts neither)',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.evictions !== undefined) this.inc(d.labels, d.evictions); }); },
    });
    new Gauge({
      name: 'sluice_policy_version', help: 'Version of the live policy (config_map.version); it grows by one with every change',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.version !== undefined) this.set(d.labels, d.version); }); },
    });
    new Gauge({
      name: 'sluice_rollback', help: '1 while a change applied with --confirm-within awaits confirmation, by state: pending (its rollback is armed), failed (the rollback failed: the change stays live), orphaned (no process will roll it back); absent when nothing is pending',
      labelNames: [...IFACE, 'state'], registers: r,
      collect() {
        this.reset();
        for (const i of self.source.metricInterfaces()) if (i.rollback) this.set({ iface: i.iface, netns: i.netns ?? '', state: i.rollback }, 1);
      },
    });
    new Counter({
      name: 'sluice_events_suppressed_total', help: 'Drop events not sampled because the per-CPU event budget was spent',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.events) this.inc(d.labels, d.events.suppressed); }); },
    });
    new Counter({
      name: 'sluice_events_lost_total', help: 'Drop events lost because the ring buffer was full',
      labelNames: IFACE, registers: r,
      async collect() { this.reset(); await each((d) => { if (d.events) this.inc(d.labels, d.events.lost); }); },
    });
    new Counter({
      name: 'sluice_config_reloads_total', help: 'Config reloads by result (error: refused, the running policy stayed)',
      labelNames: ['result'], registers: r,
      collect() {
        this.reset();
        const c = self.source.reloadCounts();
        this.inc({ result: 'ok' }, c.ok);
        this.inc({ result: 'error' }, c.failed);
      },
    });
    new Gauge({
      name: 'sluice_config_last_reload_success', help: '1 if the last config reload was applied, 0 if it was refused',
      registers: r,
      collect() { const c = self.source.reloadCounts(); this.set(c.lastOk === false ? 0 : 1); },
    });
    new Gauge({
      name: 'sluice_config_last_reload_timestamp_seconds', help: 'Unix time of the last config load or reload attempt',
      registers: r,
      collect() { const c = self.source.reloadCounts(); this.set(c.lastAt === null ? 0 : c.lastAt / 1000); },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * One reading of the maps shared by every metric of one scrape: the registry asks every metric
   * in one synchronous pass, so the reading is kept until the next turn of the event loop.
   */
  private collectOnce(): Promise<InterfaceData[]> {
    if (!this.data) {
      this.data = this.read();
      setImmediate(() => { this.data = undefined; });
    }
    return this.data;
  }

  private async read(): Promise<InterfaceData[]> {
    const out: InterfaceData[] = [];
    for (const m of this.source.metricInterfaces()) {
      const labels = { iface: m.iface, netns: m.netns ?? '' };
      const p = m.protection;
      if (!p) {
        out.push({ labels, up: false });
        continue;
      }
      const key = `${labels.netns}/${labels.iface}`;
      try {
        await this.refreshCount(key, p);
        const snap = p.snapshot();
        const c = this.counts.get(key)!;
        const evictions = Math.max(this.evictHigh.get(key) ?? 0, c.newStates - c.entries);
        this.evictHigh.set(key, evictions);
        out.push({
          labels,
          up: true,
          rules: [...snap.rules, { ...snap.global, id: 'global' }],
          version: p.version(),
          entries: c.entries,
          maxEntries: p.maxEntries,
          evictions,
          ...eventsOf(p),
        });
      } catch {
        // Closed or taken down between the listing and the reading: reported as not up.
        out.push({ labels, up: false });
      }
    }
    return out;
  }

  private async refreshCount(key: string, p: ProtectionReader): Promise<void> {
    const cur = this.counts.get(key);
    if (cur && Date.now() - cur.at < this.stateCacheMs) return;
    if (cur?.pending) return cur.pending;
    const pending = (async () => {
      // One walk shared with the API's /v1/top and /v1/status on the same map.
      const entries = await p.countEntries();
      // Read after counting, so that new states counted during the walk are in it too.
      const newStates = p.snapshot().totals.new_states;
      this.counts.set(key, { at: Date.now(), entries, newStates });
    })();
    if (cur) cur.pending = pending;
    else this.counts.set(key, { at: 0, entries: 0, newStates: 0, pending });
    try {
      await pending;
    } catch (e) {
      this.counts.delete(key);
      throw e;
    }
  }

  /** Forget cached counts of interfaces no longer served. */
  forget(iface: string, netns: string | null): void {
    const key = `${netns ?? ''}/${iface}`;
    this.counts.delete(key);
    this.evictHigh.delete(key);
  }
}

function eventsOf(p: ProtectionReader): { events?: { suppressed: number; lost: number } } {
  const events = p.eventBudget();
  return events ? { events } : {};
}
