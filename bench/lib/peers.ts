/**
 * The peers Sluice is measured against, set up inside the benchmark's server namespace only (so
 * they go with it): nftables with a per-source meter at netdev ingress, iptables hashlimit per
 * source in raw PREROUTING, and the Node.js limiter (bench/node-limiter.ts); plus the UDP sink that
 * keeps passed packets from triggering ICMP replies. Each reports what it decided.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { nsExec, run } from '../../src/lab/netns';

/** Debian packages the peers need; installed when missing (idempotent). */
const PACKAGES = ['nftables', 'iptables'];

export async function installPeers(log: (s: string) => void): Promise<void> {
  const missing: string[] = [];
  for (const p of PACKAGES) {
    const r = await run('dpkg-query', ['-W', '-f=${Status}', p]);
    if (!r.stdout.includes('install ok installed')) missing.push(p);
  }
  if (!missing.length) return;
  log(`installing ${missing.join(', ')} (apt-get)`);
  await run('apt-get', ['update', '-qq'], { check: true, timeoutMs: 300_000 });
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    check: true, timeoutMs: 600_000,
  });
}

export async function peerVersions(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[]): Promise<string> => {
    try {
      return (await run(cmd, args)).stdout.trim().split('\n')[0] ?? '';
    } catch {
      return 'missing';
    }
  };
  return {
    nft: await first('nft', ['--version']),
    iptables: await first('iptables', ['--version']),
    node: process.version,
  };
}

/** What a limiter has decided so far: every packet it saw, and those it let through. */
export interface Decisions {
  decided: number;
  passed: number;
}

/** A running limiter: read its decisions so far (one consistent reading); stop it. */
export interface Decider {
  read(): Promise<Decisions>;
  stop(): Promise<void>;
}

/** The per-source limit every limiter enforces, and the size of its per-source table. */
export interface PeerLimit {
  pps: number;
  burst: number;
  tableSize: number;
}

// ---------------------------------------------------------------------------------------------
// nftables: a dynamic set of sources, each with its own limit, at the earliest hook (netdev ingress)

export async function startNft(ns: string, dev: string, table: string, l: PeerLimit): Promise<Decider> {
  // An element times out 10 s after its last packet; when the set is full, a new source cannot be
  // added and the rule does not match: the packet is accepted (nftables' documented behaviour).
  const ruleset = `table netdev ${table} {
  set persrc {
    type ipv4_addr
    size ${l.tableSize}
    flags dynamic,timeout
    timeout 10s
  }
  chain in {
    type filter hook ingress device "${dev}" priority -500; policy accept;
    meta protocol ip counter
    meta protocol ip update @persrc { ip saddr limit rate over ${l.pps}/second burst ${l.burst} packets } counter drop
    meta protocol ip counter
  }
}
`;
  await nsExec(ns, 'nft', ['-f', '-'], { input: ruleset, check: true });
  const counters = async (): Promise<number[]> => {
    const r = await nsExec(ns, 'nft', ['-j', 'list', 'table', 'netdev', table], { check: true });
    const items = (JSON.parse(r.stdout) as { nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[] }).nftables;
    return items.filter((i) => i.rule).map((i) => i.rule!.expr.find((e) => e.counter)?.counter?.packets ?? 0);
  };
  return {
    // Every IPv4 packet, and those past the limit rule (with the set full, a new source is).
    read: async () => {
      const [decided = 0, , passed = 0] = await counters();
      return { decided, passed };
    },
    stop: async () => {
      await nsExec(ns, 'nft', ['delete', 'table', 'netdev', table]);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// iptables: hashlimit per source, in the raw table's PREROUTING (its earliest hook)

export async function startIptables(ns: string, dev: string, chain: string, l: PeerLimit): Promise<Decider> {
  const ipt = (args: string[]): Promise<unknown> => nsExec(ns, 'iptables', ['-w', '-t', 'raw', ...args], { check: true });
  await ipt(['-N', chain]);
  await ipt(['-A', 'PREROUTING', '-i', dev, '-p', 'udp', '-j', chain]);
  // When its table is full, hashlimit cannot add a source and drops the packet.
  await ipt(['-A', chain, '-m', 'hashlimit', '--hashlimit-name', chain.toLowerCase(), '--hashlimit-mode', 'srcip',
    '--hashlimit-above', `${l.pps}/sec`, '--hashlimit-burst', String(l.burst),
    '--hashlimit-htable-max', String(l.tableSize), '--hashlimit-htable-size', String(l.tableSize),
    '--hashlimit-htable-expire', '10000', '-j', 'DROP']);
  // What gets past the limit: counted here, since a packet hashlimit drops for want of room in
  // its table (a "hotdrop") moves no rule's counter.
  await ipt(['-A', chain, '-j', 'RETURN']);
  const read = async (): Promise<Decisions> => {
    const r = await nsExec(ns, 'iptables-save', ['-t', 'raw', '-c'], { check: true });
    const pkts = (pattern: RegExp): number => {
      const line = r.stdout.split('\n').find((x) => pattern.test(x));
      return Number(/^\[(\d+):/.exec(line ?? '')?.[1] ?? 0);
    };
    return { decided: pkts(new RegExp(`-A PREROUTING .*-j ${chain}\\b`)), passed: pkts(new RegExp(`-A ${chain} -j RETURN`)) };
  };
  return {
    read,
    stop: async () => {
      await nsExec(ns, 'iptables', ['-w', '-t', 'raw', '-D', 'PREROUTING', '-i', dev, '-p', 'udp', '-j', chain]);
      await nsExec(ns, 'iptables', ['-w', '-t', 'raw', '-F', chain]);
      await nsExec(ns, 'iptables', ['-w', '-t', 'raw', '-X', chain]);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Processes in the server namespace, pinned to the receiving CPU

/** Spawn `argv` in namespace ns on `cpu`; resolves once it prints "listening". */
async function spawnListening(ns: string, cpu: number, argv: string[]): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns, 'taskset', '-c', String(cpu), ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const ok = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (line) => {
      clearTimeout(timer);
      rl.close();
      resolve(line.startsWith('listening'));
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ok) {
    child.kill('SIGKILL');
    throw new Error(`${argv.join(' ')} did not start in ${ns}: ${err.trim()}`);
  }
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await gone;
}

/**
 * A UDP socket bound to `port` that never reads: passed packets end in its (full) receive queue
 * instead of making the stack answer with ICMP port unreachable.
 */
export async function startSink(ns: string, cpu: number, port: number): Promise<{ stop(): Promise<void> }> {
  const py = `import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind(("0.0.0.0",${port}))
print("listening",flush=True)
time.sleep(1e9)`;
  const child = await spawnListening(ns, cpu, ['python3', '-c', py]);
  return { stop: () => stopChild(child) };
}

export const NODE_LIMITER = join(__dirname, '..', 'node-limiter.js');

export async function startNodeLimiter(ns: string, cpu: number, port: number, l: PeerLimit): Promise<Decider> {
  const child = await spawnListening(ns, cpu, [process.execPath, NODE_LIMITER, String(port), String(l.pps), String(l.burst), String(l.tableSize)]);
  const rl = createInterface({ input: child.stdout! });
  const report = (): Promise<{ passed: number; dropped: number; sources: number }> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the Node.js limiter did not report within 5 s')), 5000);
      rl.once('line', (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { passed: number; dropped: number; sources: number });
      });
      child.stdin!.write('report\n');
    });
  return {
    read: async () => {
      const r = await report();
      return { decided: r.passed + r.dropped, passed: r.passed };
    },
    stop: async () => {
      rl.close();
      await stopChild(child);
    },
  };
}
