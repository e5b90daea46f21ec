/**
 * The fleet's exchange (docs/fleet.md): every interval, for each protected interface, read the keys
 * of global rules that its data path recorded (sl_fleet_cand: bounded, never the state maps), send
 * their usage and demand in the current window to Redis in one script per round (per hash slot on
 * a Cluster), and write back what this node may pass (sl_fleet_grant). The data path decides every
 * packet by itself: by the grant while it holds, by the rule's local: limit without one. When a
 * round fails (Redis unreachable, slow, failing over) every grant is withdrawn at once, so each node
 * is on its local limit within one interval; grants also lapse by themselves (until) should this
 * process stop exchanging. Nothing here waits on Redis while packets are decided or the API answers.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { BpfMap } from '../ebpf';
import { decodeFleetCand, encodeFleetGrant, KeyFlags, SL_FLEET_GRANT_SIZE } from '../generated/types';
import { formatPrefix, type PolicySpec } from '../limiter/policy';
import { mapOf } from '../limiter/datapath';
import type { FleetConfig } from '../limiter/fleet-config';
import { ROUND_LUA, slotOf } from './script';

/** What the exchange needs of the daemon's config `fleet:` (src/limiter/fleet-config.ts). */
export type { FleetConfig } from '../limiter/fleet-config';

/** What the exchange reads and writes of a protected interface; the agent hands it in. */
export interface FleetProtection {
  /** The interface's maps by name (sl_fleet_cand, sl_fleet_grant). */
  readonly maps: { get(name: string): BpfMap | undefined };
  /** The policy in force now. */
  policy(): PolicySpec;
}

/** One protected interface as the daemon has it. */
export interface FleetPart {
  iface: string;
  netns: string | null;
  protection: FleetProtection | undefined;
}

/** A global rule: its limit per window for the whole fleet. */
export interface GlobalRule {
  id: number;
  name: string;
  /** Packets per window, fleet-wide: floor(rate x window / period) + burst. */
  limit: number;
  windowMs: number;
}

/** The global rules of a policy, by id. */
export function globalRules(policy: PolicySpec): Map<number, GlobalRule> {
  const out = new Map<number, GlobalRule>();
  for (const r of policy.rules) {
    if (r.scope !== 'global' || r.pps === null || r.pps === undefined) continue;
    const period = r.ppsPeriodMs ?? 1000;
    const windowMs = r.windowMs ?? period;
    const limit = Number((BigInt(r.pps) * BigInt(windowMs)) / BigInt(period) + BigInt(r.ppsBurst ?? 0));
    out.set(r.id, { id: r.id, name: r.name ?? `rule${r.id}`, limit, windowMs });
  }
  return out;
}

/** What the agent keeps of one key between rounds. */
interface KeyState {
  /** The window (wall-clock ms / windowMs) the allocation is for; -1 before the key's first round,
   * -2 for a key counted before this process started. */
  win: number;
  /** sl_fleet_cand.used when that window's allocation began: the node's usage in it is used - base. */
  base: bigint;
  /** This node's allocation in the window, as Redis last answered. */
  mine: number;
  lastSeen: bigint;
  /** Wall-clock ms of the last round that saw the key's demand grow. */
  activeAt: number;
  /** Whether it was exchanged in its current window. */
  sent: boolean;
}

interface PartState {
  member: string;
  keys: Map<string, KeyState>;
  lastRoundAt: number;
  /** Its first round: the keys found then were counted before this process (a restart). */
  fresh: boolean;
}

export interface FleetStatus {
  enabled: true;
  name: string;
  node: string;
  mode: 'standalone' | 'cluster';
  redis: string[];
  interval_ms: number;
  connected: boolean;
  /** Every global rule is on its local limit (not connected). */
  fallback: boolean;
  /** When connected last changed (ISO). */
  since: string;
  last_round_at: string | null;
  last_round_ms: number | null;
  /** Milliseconds since the last round that succeeded (null before any). */
  lag_ms: number | null;
  keys_exchanged: number;
  keys_tracked: number;
  rounds: number;
  errors: number;
  keys_exchanged_total: number;
  last_error: string | null;
}

type RoundFn = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

interface Item {
  grant: BpfMap;
  key: Buffer;
  st: KeyState;
  rkey: string;
  limit: number;
  windowMs: number;
  used: number;
  want: number;
  rel: boolean;
  member: string;
}

/** Keys per script call: a round with more sends several calls (in one pipeline on standalone). */
const KEYS_PER_CALL = 256;

export class FleetExchange {
  private readonly client: Redis | Cluster;
  private readonly parts = new Map<string, PartState>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private connected = false;
  private since = new Date().toISOString();
  private lastOkAt: number | null = null;
  private lastRoundMs: number | null = null;
  private keysExchanged = 0;
  private keysExchangedTotal = 0;
  private rounds = 0;
  private errors = 0;
  private lastError: string | null = null;
  /** Grants are withdrawn once per outage, not every round of it. */
  private withdrawn = true;

  private lastWritten = 0;

  /**
   * statusFile: where the status is written (at each change of connection, and once a second), for
   * `sluice status`, which reads pins and files rather than asking the daemon.
   */
  constructor(readonly cfg: FleetConfig, private readonly log: Logger, private readonly source: () => FleetPart[], private readonly statusFile?: string) {
    const common: RedisOptions = {
      ...(cfg.username ? { username: cfg.username } : {}),
      ...(cfg.password ? { password: cfg.password } : {}),
      ...(cfg.tls ? { tls: { ...cfg.tls } } : {}),
      commandTimeout: cfg.timeoutMs,
      connectTimeout: Math.max(1000, cfg.timeoutMs),
      maxRetriesPerRequest: 0,
    };
    // Reconnect with backoff, capped at a few intervals: a Redis back again is used again soon.
    const cap = Math.max(200, 5 * cfg.intervalMs);
    const backoff = (times: number): number => Math.min(25 * 2 ** Math.min(times, 10), cap);
    if (cfg.mode === 'cluster') {
      const o: ClusterOptions = {
        redisOptions: common,
        enableOfflineQueue: false,
        // Not auto-pipelined: its batches refuse keys of slots held by different shards. A round's
        // calls (one per slot) are sent at once anyway, each on its shard's connection.
        clusterRetryStrategy: backoff,
        scaleReads: 'master',
        slotsRefreshTimeout: Math.max(1000, cfg.timeoutMs),
      };
      this.client = new Cluster(cfg.nodes.map((n) => ({ host: n.host, port: n.port })), o);
    } else {
      this.client = new Redis({ ...common, host: cfg.nodes[0]!.host, port: cfg.nodes[0]!.port, enableOfflineQueue: false, retryStrategy: backoff });
    }
    this.client.defineCommand('sluiceRound', { lua: ROUND_LUA });
    // Errors are the rounds' to report (once per outage); an unhandled 'error' would end the process.
    this.client.on('error', (e: Error) => { this.lastError = e.message; });
  }

  get addresses(): string[] {
    return this.cfg.nodes.map((n) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`));
  }

  start(): void {
    this.log.info({ event: 'fleet_start', fleet: this.cfg.name, node: this.cfg.node, mode: this.cfg.mode, redis: this.addresses, interval_ms: this.cfg.intervalMs },
      `fleet ${this.cfg.name}: global rules exchange through ${this.cfg.mode === 'cluster' ? 'the Redis Cluster at ' : 'Redis at '}${this.addresses.join(', ')} every ${this.cfg.intervalMs} ms (node ${this.cfg.node}); until the first round, each node is on its local limits`);
    const tick = (): void => {
      if (this.stopped) return;
      const t0 = Date.now();
      this.running = this.round().then(() => this.writeStatus(false)).catch((e: unknown) => {
        this.log.error({ event: 'fleet_round_bug', err: (e as Error).message }, `fleet round failed unexpectedly: ${(e as Error).message}`);
      }).finally(() => {
        this.running = undefined;
        if (!this.stopped) this.timer = setTimeout(tick, Math.max(0, this.cfg.intervalMs - (Date.now() - t0)));
      });
    };
    // The first round once the client is ready, or after its connect timeout (then it reports).
    let begun = false;
    const begin = (): void => {
      if (begun) return;
      begun = true;
      clearTimeout(first);
      tick();
    };
    const first = setTimeout(begin, Math.max(1000, this.cfg.timeoutMs));
    this.client.once('ready', begin);
    this.timer = first;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    this.client.disconnect();
    this.writeStatus(true, { stopped: true });
  }

  /** The status for `sluice status` (FleetStatusFile), at most once a second unless forced. */
  writeStatus(force: boolean, extra: Record<string, unknown> = {}): void {
    if (!this.statusFile || (!force && Date.now() - this.lastWritten < 1000)) return;
    this.lastWritten = Date.now();
    try {
      const tmp = `${this.statusFile}.tmp`;
      writeFileSync(tmp, `${JSON.stringify({ pid: process.pid, written_at: new Date().toISOString(), ...this.status(), ...extra })}\n`);
      renameSync(tmp, this.statusFile);
    } catch (e) {
      this.log.debug({ event: 'fleet_status_file', err: (e as Error).message }, `cannot write ${this.statusFile}: ${(e as Error).message}`);
    }
  }

  status(): FleetStatus {
    let tracked = 0;
    for (const p of this.parts.values()) tracked += p.keys.size;
    return {
      enabled: true,
      name: this.cfg.name,
      node: this.cfg.node,
      mode: this.cfg.mode,
      redis: this.addresses,
      interval_ms: this.cfg.intervalMs,
      connected: this.connected,
      fallback: !this.connected,
      since: this.since,
      last_round_at: this.lastOkAt === null ? null : new Date(this.lastOkAt).toISOString(),
      last_round_ms: this.lastRoundMs,
      lag_ms: this.lastOkAt === null ? null : Date.now() - this.lastOkAt,
      keys_exchanged: this.keysExchanged,
      keys_tracked: tracked,
      rounds: this.rounds,
      errors: this.errors,
      keys_exchanged_total: this.keysExchangedTotal,
      last_error: this.lastError,
    };
  }

  /** One round over every protected interface with global rules. */
  async round(): Promise<void> {
    const t0 = performance.now();
    const nowMs = Date.now();
    const mono = process.hrtime.bigint();
    const items: Item[] = [];
    const refresh: { grant: BpfMap; key: Buffer; st: KeyState }[] = [];
    const iv = this.cfg.intervalMs;
    const seenParts = new Set<string>();
    for (const part of this.source()) {
      const prot = part.protection;
      const cand = prot && mapOf(prot.maps, 'sl_fleet_cand');
      const grant = prot && mapOf(prot.maps, 'sl_fleet_grant');
      if (!prot || !cand || !grant) continue;
      const rules = globalRules(prot.policy());
      if (!rules.size) continue;
      const id = `${part.netns ?? ''}/${part.iface}`;
      seenParts.add(id);
      let ps = this.parts.get(id);
      if (!ps) {
        ps = { member: `${this.cfg.node}/${part.netns ?? 'host'}/${part.iface}`, keys: new Map(), lastRoundAt: nowMs - iv, fresh: true };
        this.parts.set(id, ps);
      }
      const roundSec = Math.max(iv, nowMs - ps.lastRoundAt) / 1000;
      ps.lastRoundAt = nowMs;
      let n = 0;
      for (const chunk of cand.lookupBatch()) {
        for (const [k, v] of chunk) {
          if (++n > this.cfg.maxKeys) break;
          const key = Buffer.from(k);
          const hex = key.toString('hex');
          const ruleId = key.readUInt16LE(0);
          const rule = rules.get(ruleId);
          if (!rule) {
            // No longer a global rule: forgotten on this side; its Redis hashes expire.
            cand.delete(key);
            grant.delete(key);
            ps.keys.delete(hex);
            continue;
          }
          const c = decodeFleetCand(v);
          let st = ps.keys.get(hex);
          if (!st) {
            // A key new since the last round: what it met and passed is this window's. One found
            // at the first round was counted before this process started (an agent's restart): its
            // history is not its demand, nor this window's usage.
            st = { win: -1, base: 0n, mine: 0, lastSeen: ps.fresh ? c.seen : 0n, activeAt: nowMs, sent: false };
            if (ps.fresh) st.win = -2;
            ps.keys.set(hex, st);
          }
          const demand = Number(c.seen - st.lastSeen);
          st.lastSeen = c.seen;
          if (demand > 0) st.activeAt = nowMs;
          if (nowMs - st.activeAt > 2 * rule.windowMs + 2 * iv) {
            // Past its window with no traffic: forgotten on this side (Redis expires its hashes).
            cand.delete(key);
            grant.delete(key);
            ps.keys.delete(hex);
            continue;
          }
          const w = Math.floor(nowMs / rule.windowMs);
          if (st.win !== w) {
            st.base = st.win === -1 ? 0n : c.used;
            if (st.win === -2) st.activeAt = nowMs;
            st.mine = 0;
            st.win = w;
            st.sent = false;
          }
          let used = Number(c.used - st.base);
          // What it may need until the round after next, at the rate it met packets this round.
          const want = demand > 0 ? Math.min(rule.limit, Math.ceil((demand / roundSec) * (2 * iv) / 1000)) : 0;
          let rel = false;
          if (demand === 0 && st.mine > used) {
            // Idle here with budget held: freeze the grant where it stands, then release the rest.
            grant.update(key, encodeFleetGrant({ cap: c.used, until: mono + BigInt(this.validityNs()) }, Buffer.alloc(SL_FLEET_GRANT_SIZE)));
            const again = cand.lookup(key);
            if (again) used = Number(decodeFleetCand(again).used - st.base);
            rel = true;
          }
          if (demand === 0 && !rel && st.sent && used <= st.mine) {
            refresh.push({ grant, key, st });
            continue;
          }
          items.push({ grant, key, st, rkey: `${this.cfg.name}:{${rule.name}|${keyText(key)}}:${w}`, limit: rule.limit, windowMs: rule.windowMs, used, want, rel, member: ps.member });
        }
      }
    }
    for (const id of this.parts.keys()) if (!seenParts.has(id)) this.parts.delete(id);
    for (const ps of this.parts.values()) ps.fresh = false;

    try {
      // Ready, or the round fails now (a client that is reconnecting refuses commands anyway).
      if (this.client.status !== 'ready') throw new Error(this.lastError ?? `the connection is ${this.client.status}`);
      if (items.length) await this.send(items, nowMs);
      else await this.ping();
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    const until = mono + BigInt(this.validityNs());
    const buf = Buffer.alloc(SL_FLEET_GRANT_SIZE);
    for (const it of items) {
      it.st.sent = true;
      it.grant.update(it.key, encodeFleetGrant({ cap: it.st.base + BigInt(it.st.mine), until }, buf));
    }
    for (const r of refresh) r.grant.update(r.key, encodeFleetGrant({ cap: r.st.base + BigInt(r.st.mine), until }, buf));
    this.rounds++;
    this.keysExchanged = items.length;
    this.keysExchangedTotal += items.length;
    this.lastOkAt = Date.now();
    this.lastRoundMs = performance.now() - t0;
    this.withdrawn = false;
    if (!this.connected) {
      this.connected = true;
      this.since = new Date().toISOString();
      this.lastError = null;
      this.log.info({ event: 'fleet_connected', fleet: this.cfg.name, redis: this.addresses },
        `fleet ${this.cfg.name}: exchanging through ${this.addresses.join(', ')}; global rules hold fleet-wide`);
      this.writeStatus(true);
    }
  }

  /** How long a grant holds without a new round: a few intervals, and the timeout of one. */
  private validityNs(): number {
    return (3 * this.cfg.intervalMs + this.cfg.timeoutMs) * 1e6;
  }

  /** A round with nothing to exchange still finds out whether Redis answers. */
  private async ping(): Promise<void> {
    const deadline = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer within ${this.cfg.timeoutMs} ms`)), this.cfg.timeoutMs);
      t.unref();
    });
    if (this.client instanceof Cluster) await Promise.race([Promise.all(this.client.nodes('master').map((n) => n.ping())), deadline]);
    else await Promise.race([this.client.ping(), deadline]);
  }

  private async send(items: Item[], nowMs: number): Promise<void> {
    const stale = 3 * this.cfg.intervalMs;
    const groups: Item[][] = [];
    if (this.cfg.mode === 'cluster') {
      const bySlot = new Map<number, Item[]>();
      for (const it of items) {
        const s = slotOf(it.rkey);
        const g = bySlot.get(s);
        if (g) g.push(it);
        else bySlot.set(s, [it]);
      }
      for (const g of bySlot.values()) for (let i = 0; i < g.length; i += KEYS_PER_CALL) groups.push(g.slice(i, i + KEYS_PER_CALL));
    } else {
      for (let i = 0; i < items.length; i += KEYS_PER_CALL) groups.push(items.slice(i, i + KEYS_PER_CALL));
    }
    const argsOf = (g: Item[]): (string | number)[] => {
      // A window's hash outlives its window by one, then goes.
      const ttl = 2 * Math.max(...g.map((it) => it.windowMs)) + 10 * this.cfg.intervalMs;
      const out: (string | number)[] = [...g.map((it) => it.rkey), g[0]!.member, nowMs, stale, ttl];
      for (const it of g) out.push(it.limit, it.used, it.want, it.rel ? '1' : '0');
      return out;
    };
    let replies: unknown[];
    const deadline = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer within ${this.cfg.timeoutMs} ms`)), this.cfg.timeoutMs);
      t.unref();
    });
    if (this.cfg.mode === 'cluster') {
      const call = (this.client as unknown as { sluiceRound: RoundFn }).sluiceRound.bind(this.client);
      replies = await Promise.race([Promise.all(groups.map((g) => call(g.length, ...argsOf(g)))), deadline]);
    } else {
      const pipe = this.client.pipeline() as unknown as { sluiceRound: (...a: (string | number)[]) => unknown; exec(): Promise<[Error | null, unknown][] | null> };
      for (const g of groups) pipe.sluiceRound(g.length, ...argsOf(g));
      const res = await Promise.race([pipe.exec(), deadline]);
      if (!res) throw new Error('the pipeline was not run');
      replies = res.map(([err, r]) => { if (err) throw err; return r; });
    }
    groups.forEach((g, gi) => {
      const r = replies[gi] as number[];
      g.forEach((it, i) => { it.st.mine = Number(r[2 * i]); });
    });
  }

  /** A failed round: every grant withdrawn (each node on its local limit), said loudly once. */
  private fail(e: Error): void {
    this.errors++;
    this.lastError = e.message;
    if (!this.withdrawn) {
      for (const part of this.source()) {
        const grant = part.protection && mapOf(part.protection.maps, 'sl_fleet_grant');
        if (!grant) continue;
        for (const k of [...grant.keys()]) grant.delete(k);
      }
      this.withdrawn = true;
    }
    if (this.connected || (this.rounds === 0 && this.errors === 1)) {
      this.connected = false;
      this.since = new Date().toISOString();
      this.log.error({ event: 'fleet_disconnected', fleet: this.cfg.name, redis: this.addresses, err: e.message },
        `fleet ${this.cfg.name}: Redis at ${this.addresses.join(', ')} does not answer (${e.message}): every global rule is on its local limit on this node until it does (retrying with backoff)`);
      this.writeStatus(true);
    }
    this.writeStatus(false);
  }
}

/** A candidate key as text: the rule's bucket, or the address prefix. */
export function keyText(key: Buffer): string {
  const plen = key[2]!;
  const flags = key[3]!;
  if (flags & KeyFlags.PER_RULE) return 'rule';
  const addr = Buffer.alloc(16);
  key.copy(addr, 0, 4, 20);
  return formatPrefix({ family: flags & KeyFlags.V4 ? 4 : 6, plen, addr });
}
