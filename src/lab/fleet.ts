/**
 * A fleet on one machine, for the fleet test and `npm run bench:fleet`: N nodes, each a network
 * namespace with its own protected veth and its own `sluice run` (own state directory, own API
 * socket); one client namespace per node, every one with the same source address, so that the same
 * client sends to every node (as behind anycast or a load balancer); a real redis-server (or a
 * 3-master Redis Cluster) started on loopback ports, each stopped by its PID, also on failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { SLUICE_BIN as SLUICE } from '../ebpf/paths';
import { http, killDaemon, watchDaemon, type DaemonProcess } from './daemon-process';
import { runId, Testbed } from './testbed';

// ---------------------------------------------------------------------------------------------
// redis-server, by PID

const servers = new Set<RedisServer>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => { for (const s of servers) s.killSync(); });
}

export class RedisServer {
  private child: ChildProcess | undefined;
  private exited: Promise<unknown> | undefined;
  readonly dir: string;

  constructor(readonly port: number, private readonly extra: string[] = []) {
    this.dir = mkdtempSync(join(tmpdir(), `sluice-redis-${runId()}-${port}-`));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Start (again, on the same port and directory) and wait until it answers PING. */
  async start(): Promise<void> {
    hookExit();
    servers.add(this);
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--daemonize', 'no', '--protected-mode', 'no', ...this.extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = once(child, 'exit');
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited: ${out.slice(-500)}`);
      const r = spawnSync('redis-cli', ['-p', String(this.port), 'ping'], { encoding: 'utf8', timeout: 2000 });
      // PONG, or NOAUTH from a server started with --requirepass: it answers.
      if (r.stdout?.trim() === 'PONG' || /NOAUTH/.test(`${r.stdout}${r.stderr}`)) return;
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} does not answer: ${out.slice(-500)}`);
      await new Promise((r2) => setTimeout(r2, 50));
    }
  }

  /** Stop it by its PID (SIGKILL: as abrupt as a crash) and wait for its exit. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.running) process.kill(this.child!.pid!, signal);
    await this.exited;
  }

  /** Stop and remove its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    servers.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  killSync(): void {
    try { if (this.running) process.kill(this.child!.pid!, 'SIGKILL'); } catch { /* gone */ }
    rmSync(this.dir, { recursive: true, force: true });
  }

  cli(...args: string[]): string {
    const r = spawnSync('redis-cli', ['-p', String(this.port), ...args], { encoding: 'utf8', timeout: 10_000 });
    return r.stdout ?? '';
  }
}

/** A Redis Cluster of `masters` masters (no replicas) on consecutive loopback ports. */
export class RedisCluster {
  readonly nodes: RedisServer[];

  constructor(readonly ports: number[]) {
    this.nodes = ports.map((p) => new RedisServer(p, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${p}.conf`, '--cluster-node-timeout', '2000']));
  }

  async start(): Promise<void> {
    for (const n of this.nodes) await n.start();
    const r = spawnSync('redis-cli', ['--cluster', 'create', ...this.ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`redis-cli --cluster create failed: ${r.stdout}\n${r.stderr}`);
    const deadline = Date.now() + 20_000;
    while (!this.nodes.every((n) => n.cli('cluster', 'info').includes('cluster_state:ok'))) {
      if (Date.now() > deadline) throw new Error('the cluster did not reach cluster_state:ok within 20 s');
      await new Promise((r2) => setTimeout(r2, 100));
    }
  }

  async dispose(): Promise<void> {
    for (const n of this.nodes) await n.dispose();
  }
}

/** A port on loopback that nothing listens on now (and port + 10000, a cluster's bus port, too). */
export async function freeRedisPorts(n: number): Promise<number[]> {
  const { createServer } = await import('node:net');
  const out: number[] = [];
  while (out.length < n) {
    const p = 20000 + Math.floor(Math.random() * 30000);
    if (out.includes(p)) continue;
    const ok = await Promise.all([p, p + 10000].map((q) => new Promise<boolean>((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen(q, '127.0.0.1', () => s.close(() => res(true)));
    })));
    if (ok.every(Boolean)) out.push(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The nodes

export interface FleetNode {
  index: number;
  client: string;
  ns: string;
  iface: string;
  stateDir: string;
  socket: string;
  config: string;
  daemon: DaemonProcess | undefined;
}

export interface FleetOptions {
  nodes: number;
  /** The global limit, packets per second per source. */
  limit: number;
  /** Each node's limit without the fleet; default limit / nodes (the fixed split). */
  local?: number;
  intervalMs: number;
}

export const CLIENT = '10.66.0.1';
export const SERVER = '10.66.0.2';
export const PORT = 9000;

export class Fleet {
  readonly tb = new Testbed();
  readonly nodes: FleetNode[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), `sluice-fleet-${runId()}-`));

  constructor(readonly o: FleetOptions) {}

  async setup(): Promise<void> {
    for (let i = 0; i < this.o.nodes; i++) {
      const client = await this.tb.addNs(`c${i}`);
      const ns = await this.tb.addNs(`n${i}`);
      const veth = await this.tb.addVeth(client, ns, { ipv4: [CLIENT, SERVER], ipv6: ['fd00:66::1', 'fd00:66::2'] });
      const stateDir = join(this.dir, `node${i}`);
      mkdirSync(stateDir, { recursive: true });
      this.nodes.push({ index: i, client, ns, iface: veth.b.ifname, stateDir, socket: join(stateDir, 'api.sock'), config: join(stateDir, 'sluice.yaml'), daemon: undefined });
      await this.tb.exec(client, 'ping', ['-c', '1', '-W', '1', SERVER]);
    }
  }

  /** (Re)start every node's daemon with this fleet section (null: none). */
  async startDaemons(fleet: Record<string, unknown> | null): Promise<void> {
    await this.stopDaemons();
    for (const n of this.nodes) {
      writeFileSync(n.config, stringify({
        interfaces: [{ iface: n.iface, netns: n.ns, max_entries: 4096, limits: { rate: this.o.limit, scope: 'global', local: this.o.local ?? Math.floor(this.o.limit / this.o.nodes) } }],
        api: { socket: n.socket },
        log: { level: 'info' },
        ...(fleet ? { fleet: { ...fleet, node: `node${n.index}`, interval: `${this.o.intervalMs}ms` } } : {}),
      }));
      const child = spawn(process.execPath, [SLUICE, 'run', '--config', n.config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SLUICE_STATE_DIR: n.stateDir } });
      n.daemon = watchDaemon(child);
    }
    for (const n of this.nodes) await n.daemon!.waitLog((l) => l.event === 'ready', `node ${n.index} ready`, 30_000);
  }

  async stopDaemons(): Promise<void> {
    for (const n of this.nodes) if (n.daemon) { await killDaemon(n.daemon, 'SIGTERM'); n.daemon = undefined; }
  }

  async status(n: FleetNode): Promise<{ fleet: Record<string, unknown>; interfaces: Record<string, unknown>[] }> {
    const r = await http({ socketPath: n.socket }, 'GET', '/v1/status');
    return r.json as { fleet: Record<string, unknown>; interfaces: Record<string, unknown>[] };
  }

  async metrics(n: FleetNode): Promise<string> {
    return (await http({ socketPath: n.socket }, "GET", "/metrics")).text;
  }

  /** Wait until every node says connected (or, with false, not connected). */
  async waitConnected(want: boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await Promise.all(this.nodes.map((n) => this.status(n)));
      if (st.every((s) => s.fleet['connected'] === want)) return;
      if (Date.now() > deadline) throw new Error(`nodes not ${want ? 'connected' : 'disconnected'} within ${timeoutMs} ms: ${JSON.stringify(st.map((s) => s.fleet))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Traffic of one shape: plan[i] lists, for node i, the [from, to) seconds (from the common start)
   * during which its client sends at pps[i]. Starts at a whole second plus 50 ms of the wall clock
   * (the fleet's windows are the wall clock's), lasts `seconds`. Returns what each node's receiver
   * counted and what each client sent.
   */
  async run(plan: [number, number][][], pps: number[], seconds: number, during?: (startMs: number) => Promise<void>): Promise<{ received: number[]; sent: number[]; perSecond: number[] }> {
    const start = Math.ceil((Date.now() + 1500) / 1000) * 1000 + 50;
    const receivers = this.nodes.map((n) => this.tb.spawn(n.ns, process.execPath, ['-e', RECEIVER, String(PORT), String(start), String(start + seconds * 1000 + 500)]));
    const senders = this.nodes.map((n, i) => this.tb.spawn(n.client, process.execPath, ['-e', SENDER, SERVER, String(PORT), String(pps[i] ?? 0), String(start), JSON.stringify(plan[i] ?? [])]));
    const read = (c: ChildProcess): Promise<Record<string, number> & { per_second?: number[] }> => new Promise((res, rej) => {
      let out = '';
      c.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
      c.once('exit', () => {
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) res(JSON.parse(line) as Record<string, number> & { per_second?: number[] });
        else rej(new Error(`traffic process ended without a result: ${out}`));
      });
    });
    const rs = receivers.map(read);
    const ss = senders.map(read);
    if (during) await during(start);
    const sent = (await Promise.all(ss)).map((x) => x['sent']!);
    const got = await Promise.all(rs);
    const received = got.map((x) => x['received']!);
    const perSecond: number[] = [];
    for (const g of got) (g.per_second ?? []).forEach((v, i) => { perSecond[i] = (perSecond[i] ?? 0) + v; });
    return { received, sent, perSecond: Array.from(perSecond, (x) => x ?? 0) };
  }

  /** CPU seconds the node's daemon has used so far (utime + stime). */
  cpuSeconds(n: FleetNode): number {
    const pid = n.daemon?.child.pid;
    if (!pid) return 0;
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  }

  async dispose(): Promise<void> {
    await this.stopDaemons().catch(() => undefined);
    for (const n of this.nodes) {
      spawnSync(process.execPath, [SLUICE, 'down', '--iface', n.iface, '--netns', n.ns], { env: { ...process.env, SLUICE_STATE_DIR: n.stateDir }, stdio: 'ignore', timeout: 30_000 });
    }
    await this.tb.cleanup();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Counts UDP datagrams until the given wall-clock time (ms). */
const RECEIVER = `
const s = require('dgram').createSocket('udp4');
const start = Number(process.argv[2]);
let n = 0;
const per = [];
s.on('message', () => { n++; const i = Math.max(0, Math.floor((Date.now() - start) / 1000)); per[i] = (per[i] || 0) + 1; });
s.bind(Number(process.argv[1]));
const end = () => { process.stdout.write(JSON.stringify({ received: n, per_second: Array.from(per, (x) => x || 0) }) + '\\n'); process.exit(0); };
setTimeout(end, Number(process.argv[3]) - Date.now());
`;

/** Sends at pps during each [from, to) second of its plan, counted from the wall-clock start. */
const SENDER = `
const [dst, port, pps, start, plan] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4]), JSON.parse(process.argv[5])];
const s = require('dgram').createSocket('udp4');
const buf = Buffer.alloc(32);
let sent = 0;
const send = () => new Promise((res) => s.send(buf, port, dst, () => res()));
(async () => {
  for (const [from, to] of plan) {
    const t0 = start + from * 1000, t1 = start + to * 1000;
    let done = 0;
    while (Date.now() < t0) await new Promise((r) => setTimeout(r, Math.min(20, Math.max(1, t0 - Date.now() - 1))));
    while (Date.now() < t1) {
      const due = Math.min((t1 - t0) / 1000 * pps, (Date.now() - t0) / 1000 * pps);
      if (done >= due) { await new Promise((r) => setTimeout(r, 1)); continue; }
      const batch = Math.ceil(due - done);
      await Promise.all(Array.from({ length: batch }, send));
      done += batch;
    }
    sent += done;
  }
  process.stdout.write(JSON.stringify({ sent }) + '\\n');
  s.close();
})();
`;

/** The three shapes of the issue for n nodes over `seconds`, total rate `total`. */
export function shapes(n: number, seconds: number, total: number): Record<'equal' | 'one' | 'moving', { plan: [number, number][][]; pps: number[] }> {
  const moving: [number, number][][] = Array.from({ length: n }, () => []);
  for (let t = 0, k = 0; t < seconds; t += 2, k++) moving[k % n]!.push([t, Math.min(seconds, t + 2)]);
  return {
    equal: { plan: Array.from({ length: n }, () => [[0, seconds]]), pps: Array.from({ length: n }, () => Math.round(total / n)) },
    one: { plan: [[[0, seconds]], ...Array.from({ length: n - 1 }, () => [])], pps: [total, ...Array.from({ length: n - 1 }, () => 0)] },
    moving: { plan: moving, pps: Array.from({ length: n }, () => total) },
  };
}
