/**
 * The lab: one server namespace and N client namespaces, each client joined to the server by a veth
 * pair, addresses inside the namespaces only and no route out, an HTTP server in the server
 * namespace, and the receiver-side count on the server's veths.
 *
 *   sluice-lab-<id>-srv      server; interface lab<id>-s<k> towards client k (2 receive queues,
 *                            GRO on), 10.213.<k>.1/24 and fd00:1ab:0:<k>::1/64
 *   sluice-lab-<id>-c<k>     client k; interface lab<id>-c<k>, 10.213.<k>.2/24 and fd00:1ab:0:<k>::2/64
 *
 * Every object carries the fixed prefix and the lab id; the layout is recorded in
 * /run/sluice/lab/<id>.json, and `down` also finds a lab by its namespace names, so both `up` and
 * `down` are idempotent and safe after a crash. The lab creates veths directly inside its own
 * namespaces and never touches an interface outside them.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setGro } from '../ebpf/lab';
import { attachCount, type CountAttachment, type CountSite } from './count';
import type { FloodTarget } from './flood';
import { addNetns, configureEnd, createVeth, deleteNetns, initNetns, listNetns, netnsPids, run, waitLinkReady } from './netns';

export const NETNS_PREFIX = 'sluice-lab-';
export const STATE_DIR = '/run/sluice/lab';
export const DEFAULT_LAB_ID = 'main';
export const MAX_CLIENTS = 32;
export const LAB_ID_RE = /^[a-z][a-z0-9]{1,7}$/;
/** Receive queues of the server's veths, so that both CPUs take packets as on a real NIC. */
export const SERVER_RX_QUEUES = 2;
export const HTTP_PORT = 80;
/** The most CPU one answer of the lab's HTTP server may cost (0.1 s). */
export const MAX_PAGE_CPU_US = 100_000;

/** The CPU a page costs, as written on the command line: "1ms", "0.5ms", "750us" (or "750µs"); in µs. */
export function parsePageCpu(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|us|µs)\s*$/.exec(v);
  if (!m) throw new Error(`page CPU "${v}" must be a time with its unit, in ms or us (e.g. 1ms, 0.5ms, 750us)`);
  const us = Math.round(Number(m[1]) * (m[2] === 'ms' ? 1000 : 1) * 1000) / 1000;
  if (!Number.isInteger(us)) throw new Error(`page CPU "${v}" must be whole microseconds`);
  if (us > MAX_PAGE_CPU_US) throw new Error(`page CPU "${v}" is too large (at most ${MAX_PAGE_CPU_US / 1000}ms)`);
  return us;
}

export interface LabEnd {
  ifname: string;
  mac: string;
  ipv4: string;
  ipv6: string;
}

export interface LabClient extends LabEnd {
  /** 1-based. */
  index: number;
  netns: string;
  /** The server's end of this client's veth. */
  server: LabEnd;
  prefix4: number;
  prefix6: number;
  /** First source of multi-source floods from this client (its own range, outside every link). */
  source_base4: string;
  source_base6: string;
}

export interface LabLayout {
  id: string;
  created: string;
  /** page_cpu_us: CPU each answer costs (0: a static page; absent in layouts of older labs). */
  server: { netns: string; http: { port: number; pid: number; page_cpu_us?: number } };
  clients: LabClient[];
  count: CountAttachment;
}

export function checkLabId(id: string): string {
  if (!LAB_ID_RE.test(id)) throw new Error(`lab id ${JSON.stringify(id)} must match ${LAB_ID_RE} (it goes into interface names of at most 15 characters)`);
  return id;
}

const statePath = (id: string): string => join(STATE_DIR, `${id}.json`);
const serverNs = (id: string): string => `${NETNS_PREFIX}${id}-srv`;
const clientNs = (id: string, k: number): string => `${NETNS_PREFIX}${id}-c${k}`;
const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** The planned layout of lab `id` with n clients (names, addresses, MACs); nothing is created. */
export function planLab(id: string, n: number): Omit<LabLayout, 'created' | 'server' | 'count'> & { server: { netns: string } } {
  checkLabId(id);
  if (!Number.isInteger(n) || n < 1 || n > MAX_CLIENTS) throw new RangeError(`clients must be 1..${MAX_CLIENTS}, got ${n}`);
  const clients: LabClient[] = [];
  for (let k = 1; k <= n; k++) {
    clients.push({
      index: k,
      netns: clientNs(id, k),
      ifname: `lab${id}-c${k}`,
      mac: `02:5c:1a:b0:${hex2(k)}:02`,
      ipv4: `10.213.${k}.2`,
      ipv6: `fd00:1ab:0:${k.toString(16)}::2`,
      prefix4: 24,
      prefix6: 64,
      server: { ifname: `lab${id}-s${k}`, mac: `02:5c:1a:b0:${hex2(k)}:01`, ipv4: `10.213.${k}.1`, ipv6: `fd00:1ab:0:${k.toString(16)}::1` },
      source_base4: `10.${100 + k}.0.1`,
      source_base6: `fd00:${(0x100 + k).toString(16)}:0:1::2`,
    });
  }
  return { id, server: { netns: serverNs(id) }, clients };
}

/**
 * A layout file written before its keys were snake_case (sourceBase4, createdHooks), as it is now:
 * a lab brought up by an older sluice can still be used and taken down.
 */
function fromOlderLayout(l: LabLayout): LabLayout {
  type Old = { sourceBase4?: string; sourceBase6?: string; createdHooks?: string[] };
  for (const c of l.clients as (LabClient & Old)[]) {
    if (c.source_base4 === undefined && c.sourceBase4 !== undefined) c.source_base4 = c.sourceBase4;
    if (c.source_base6 === undefined && c.sourceBase6 !== undefined) c.source_base6 = c.sourceBase6;
    delete c.sourceBase4;
    delete c.sourceBase6;
  }
  const count = l.count as CountAttachment & Old;
  if (count && count.created_hooks === undefined) {
    count.created_hooks = count.createdHooks ?? [];
    delete count.createdHooks;
  }
  return l;
}

/** The recorded layout of lab `id`, or undefined. */
export function readLayout(id: string = DEFAULT_LAB_ID): LabLayout | undefined {
  try {
    return fromOlderLayout(JSON.parse(readFileSync(statePath(checkLabId(id)), 'utf8')) as LabLayout);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** The layout of a lab that is up, or an error that says how to bring it up. */
export function requireLayout(id: string = DEFAULT_LAB_ID): LabLayout {
  const l = readLayout(id);
  if (!l) throw new Error(`lab '${id}' is not up: run \`sluice lab up${id === DEFAULT_LAB_ID ? '' : ` --id ${id}`}\` first`);
  return l;
}

function writeLayout(l: LabLayout): void {
  mkdirSync(STATE_DIR, { recursive: true });
  const tmp = `${statePath(l.id)}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(l, null, 2)}\n`);
  renameSync(tmp, statePath(l.id));
}

/** Lab ids that have a namespace or a state file. */
export async function listLabs(): Promise<string[]> {
  const ids = new Set<string>();
  for (const ns of await listNetns()) {
    const m = new RegExp(`^${NETNS_PREFIX}([a-z0-9]+)-(srv|c\\d+)$`).exec(ns);
    if (m) ids.add(m[1]!);
  }
  try {
    for (const f of readdirSync(STATE_DIR)) if (f.endsWith('.json')) ids.add(f.slice(0, -5));
  } catch {
    /* no state directory */
  }
  return [...ids].filter((id) => LAB_ID_RE.test(id)).sort();
}

/** The count's site: the server's veths. */
export function countSite(l: { server: { netns: string }; clients: LabClient[] }): CountSite {
  return { netns: l.server.netns, ifnames: l.clients.map((c) => c.server.ifname) };
}

/** Client k (1-based) of lab l. */
export function labClient(l: LabLayout, k: number): LabClient {
  const c = l.clients.find((x) => x.index === k);
  if (!c) throw new RangeError(`lab '${l.id}' has clients 1..${l.clients.length}, not ${k}`);
  return c;
}

/** What the flood generator needs to send from client k (1-based). */
export function floodTarget(l: LabLayout, k = 1): FloodTarget {
  const c = labClient(l, k);
  return {
    netns: c.netns, ifname: c.ifname, mac: c.mac, ipv4: c.ipv4, ipv6: c.ipv6,
    peerMac: c.server.mac, peerIpv4: c.server.ipv4, peerIpv6: c.server.ipv6,
    sourceBase4: c.source_base4, sourceBase6: c.source_base6,
  };
}

async function isHealthy(l: LabLayout, clients: number, pageCpuUs: number): Promise<boolean> {
  if (l.clients.length !== clients || (l.server.http.page_cpu_us ?? 0) !== pageCpuUs) return false;
  const have = new Set(await listNetns());
  if (!have.has(l.server.netns) || l.clients.some((c) => !have.has(c.netns))) return false;
  return (await netnsPids(l.server.netns)).includes(l.server.http.pid);
}

export interface UpOptions {
  id?: string;
  clients?: number;
  /** Microseconds of CPU each answer of the HTTP server costs (default 0: a static page). */
  pageCpuUs?: number;
  /** Report progress lines (default: silent). */
  log?: (line: string) => void;
}

/**
 * Bring lab `id` up with `clients` clients. If it is already up with that many clients, nothing
 * changes; anything else under its name (a half-made lab after a crash, another size) is removed
 * first. On failure everything made so far is removed again.
 */
export async function labUp(o: UpOptions = {}): Promise<{ layout: LabLayout; created: boolean }> {
  const id = checkLabId(o.id ?? DEFAULT_LAB_ID);
  const n = o.clients ?? 1;
  const pageCpuUs = o.pageCpuUs ?? 0;
  if (!Number.isInteger(pageCpuUs) || pageCpuUs < 0 || pageCpuUs > MAX_PAGE_CPU_US) throw new RangeError(`page CPU must be 0..${MAX_PAGE_CPU_US} µs, got ${pageCpuUs}`);
  const log = o.log ?? ((): void => undefined);
  const plan = planLab(id, n);
  const existing = readLayout(id);
  if (existing && (await isHealthy(existing, n, pageCpuUs))) return { layout: existing, created: false };
  await labDown({ id });
  try {
    await addNetns(plan.server.netns);
    await initNetns(plan.server.netns);
    for (const c of plan.clients) {
      await addNetns(c.netns);
      await initNetns(c.netns);
    }
    for (const c of plan.clients) {
      await createVeth(
        { ns: plan.server.netns, ifname: c.server.ifname, mac: c.server.mac, numRxQueues: SERVER_RX_QUEUES, numTxQueues: SERVER_RX_QUEUES },
        { ns: c.netns, ifname: c.ifname, mac: c.mac },
      );
      await configureEnd(plan.server.netns, c.server.ifname, { ipv4: c.server.ipv4, prefix4: c.prefix4, ipv6: c.server.ipv6, prefix6: c.prefix6 });
      await configureEnd(c.netns, c.ifname, { ipv4: c.ipv4, prefix4: c.prefix4, ipv6: c.ipv6, prefix6: c.prefix6 });
      // NAPI on the server's end: frames that the generator redirects into the client's veth
      // are otherwise dropped without a trace when no XDP program is attached there.
      setGro(c.server.ifname, true, { netns: plan.server.netns });
      await waitLinkReady(plan.server.netns, c.server.ifname);
      await waitLinkReady(c.netns, c.ifname);
      log(`  ${c.netns}  ${c.ifname}  ${c.ipv4}/${c.prefix4}  ${c.ipv6}/${c.prefix6}  ${c.mac}`);
      log(`  ${plan.server.netns}  ${c.server.ifname}  ${c.server.ipv4}/${c.prefix4}  ${c.server.ipv6}/${c.prefix6}  ${c.server.mac}  (${SERVER_RX_QUEUES} rx queues, GRO on)`);
    }
    const count = await attachCount(countSite(plan));
    const pid = await startHttpServer(plan.server.netns, HTTP_PORT, pageCpuUs);
    const layout: LabLayout = { ...plan, created: new Date().toISOString(), server: { netns: plan.server.netns, http: { port: HTTP_PORT, pid, page_cpu_us: pageCpuUs } }, count };
    writeLayout(layout);
    return { layout, created: true };
  } catch (e) {
    await labDown({ id });
    throw e;
  }
}

/**
 * The HTTP server (src/lab/http-server.ts) in `netns`, detached; resolves with its pid once it
 * listens. V8 collects garbage on the main thread alone, so that the server can be given real-time priority
 * (the web demo does) without its garbage collector waiting on helper threads kept off the CPU.
 */
async function startHttpServer(netns: string, port: number, pageCpuUs: number): Promise<number> {
  const script = join(__dirname, 'http-server.js');
  // `ip netns exec` execs the command after setns, so the child's pid is the server's pid.
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '--single-threaded-gc', script, String(port), String(pageCpuUs)], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  child.stdout!.destroy();
  child.stderr!.destroy();
  child.unref();
  if (!ready || child.pid === undefined) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw new Error(`the lab's HTTP server did not start in ${netns}: ${out.trim()}`);
  }
  return child.pid;
}

export interface DownOptions {
  id?: string;
  /** Every lab (every namespace with the lab prefix, every state file). */
  all?: boolean;
}

/**
 * Remove lab `id` (or every lab): kill what runs in its namespaces, delete them (with them go the
 * veths, the count filters and anything attached to those veths) and its state file. Idempotent.
 * Returns the namespaces removed.
 */
export async function labDown(o: DownOptions = {}): Promise<string[]> {
  const ids = o.all ? await listLabs() : [checkLabId(o.id ?? DEFAULT_LAB_ID)];
  const removed: string[] = [];
  const errors: string[] = [];
  const have = await listNetns();
  for (const id of ids) {
    const mine = have.filter((ns) => ns === serverNs(id) || new RegExp(`^${NETNS_PREFIX}${id}-c\\d+$`).test(ns));
    // Processes inside the lab's own namespaces are the lab's (HTTP server, generators): a
    // namespace lives on while a process is in it, so they go first.
    const pids = (await Promise.all(mine.map(netnsPids))).flat().filter((p) => p !== process.pid);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
    for (const ns of mine) {
      const r = await deleteNetns(ns);
      if (r.gone) removed.push(ns);
      else errors.push(`ip netns del ${ns}: ${r.stderr}`);
    }
    rmSync(statePath(id), { force: true });
  }
  if (errors.length > 0) throw new Error(`lab down: ${errors.join('; ')}`);
  return removed;
}

/** `ip -brief address` of every lab namespace, for a human. */
export async function describeLab(l: LabLayout): Promise<string> {
  const lines: string[] = [];
  for (const ns of [l.server.netns, ...l.clients.map((c) => c.netns)]) {
    const r = await run('ip', ['-n', ns, '-brief', 'address', 'show']);
    lines.push(`${ns}:`, ...r.stdout.trim().split('\n').map((s) => `  ${s}`));
  }
  return lines.join('\n');
}
