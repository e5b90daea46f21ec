/**
 * The fleet (issue 14): how close N nodes on one machine hold one global limit per source, through
 * a real redis-server (and a 3-master Redis Cluster), in three traffic shapes: equal traffic on all
 * nodes, all of it on one, and traffic moving to another node every 2 s. Each node is a namespace
 * with its own protected veth and its own `sluice run` (test/lib/fleet.ts); the clients of every
 * node send from the same address. A row per run: what the receivers counted against L x T, the
 * Redis commands each node sent per second, and each daemon's CPU. The `split` rows are the fixed
 * L/N split without the exchange (Redis stopped; each node on its local: limit of L/N).
 *
 *   npm run bench:fleet [-- --seconds 10 --limit 1000 --interval 100 --nodes 2,3,4 --offered 1.8 --out bench/results/fleet.json]
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../src/ebpf';
import { Fleet, freeRedisPorts, RedisCluster, RedisServer, shapes } from '../src/lab/fleet';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const SECONDS = Number(arg('seconds', '10'));
const LIMIT = Number(arg('limit', '1000'));
const INTERVAL = Number(arg('interval', '100'));
const NODES = arg('nodes', '2,3,4').split(',').map(Number);
/** Offered in total, as a multiple of the limit. */
const OFFERED = Number(arg('offered', '1.8'));
const OUT = arg('out', join(REPO, 'bench', 'results', 'fleet.json'));

interface Row {
  nodes: number;
  redis: 'standalone' | 'cluster' | 'none';
  shape: string;
  interval_ms: number;
  limit: number;
  seconds: number;
  passed: number;
  expected: number;
  error_pct: number;
  within_10pct: boolean;
  per_node: number[];
  redis_cmds_per_s_per_node: number;
  agent_cpu_pct: number;
}

/** Commands the nodes sent (the scripts' own HGETALL, HSET and PEXPIRE are Redis's, not theirs). */
const SENT = ['evalsha', 'eval', 'ping', 'script'];
const commands = (servers: RedisServer[]): number => servers.filter((s) => s.running).reduce((a, s) => {
  const text = s.cli('info', 'commandstats');
  return a + SENT.reduce((b, c) => b + Number(new RegExp(`^cmdstat_${c}:calls=(\\d+)`, 'm').exec(text)?.[1] ?? 0), 0);
}, 0);

async function measure(fleet: Fleet, n: number, redis: Row['redis'], shape: 'equal' | 'one' | 'moving', servers: RedisServer[]): Promise<Row> {
  const s = shapes(n, SECONDS, Math.round(OFFERED * LIMIT))[shape];
  const c0 = commands(servers);
  const cpu0 = fleet.nodes.map((x) => fleet.cpuSeconds(x));
  const t0 = Date.now();
  const r = await fleet.run(s.plan, s.pps, SECONDS);
  const wall = (Date.now() - t0) / 1000;
  const cpu = fleet.nodes.map((x, i) => fleet.cpuSeconds(x) - cpu0[i]!);
  const cmds = commands(servers) - c0;
  const passed = r.received.reduce((a, b) => a + b, 0);
  const expected = LIMIT * SECONDS;
  const row: Row = {
    nodes: n, redis, shape, interval_ms: INTERVAL, limit: LIMIT, seconds: SECONDS, passed, expected,
    error_pct: Math.round(((passed - expected) / expected) * 1000) / 10,
    within_10pct: passed >= 0.9 * expected && passed <= 1.1 * expected,
    per_node: r.received,
    redis_cmds_per_s_per_node: Math.round((cmds / wall / n) * 10) / 10,
    agent_cpu_pct: Math.round((cpu.reduce((a, b) => a + b, 0) / n / wall) * 1000) / 10,
  };
  console.log(`${String(n).padStart(5)}  ${redis.padEnd(10)}  ${shape.padEnd(6)}  ${String(passed).padStart(6)}  ${String(expected).padStart(6)}  ${(row.error_pct >= 0 ? '+' : '') + row.error_pct.toFixed(1).padStart(5)}%  ${row.within_10pct ? 'yes' : 'NO '}  ${String(row.redis_cmds_per_s_per_node).padStart(8)}  ${row.agent_cpu_pct.toFixed(1).padStart(6)}%  ${JSON.stringify(r.received)}`);
  return row;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  console.log(`fleet: limit ${LIMIT}/s per source, ${SECONDS} s per run, interval ${INTERVAL} ms, offered ${OFFERED} x the limit; ${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(2)}`);
  console.log('nodes  redis       shape   passed  expect   error  ok   cmds/s/n    cpu%  per node');
  const [port] = await freeRedisPorts(1);
  const redis = new RedisServer(port!);
  await redis.start();
  try {
    for (const n of NODES) {
      const fleet = new Fleet({ nodes: n, limit: LIMIT, local: Math.floor(LIMIT / n), intervalMs: INTERVAL });
      try {
        await fleet.setup();
        await fleet.startDaemons({ redis: `127.0.0.1:${port}`, name: `bench${n}` });
        await fleet.waitConnected(true);
        for (const shape of ['equal', 'one', 'moving'] as const) rows.push(await measure(fleet, n, 'standalone', shape, [redis]));
        if (n === 3) {
          await redis.stop();
          await fleet.waitConnected(false);
          rows.push({ ...(await measure(fleet, n, 'none', 'one', [])), shape: 'one (fixed L/N split, no exchange)' });
          await redis.start();
          const ports = await freeRedisPorts(3);
          const cluster = new RedisCluster(ports);
          try {
            await cluster.start();
            await fleet.startDaemons({ cluster: ports.map((p) => `127.0.0.1:${p}`), name: `bench${n}` });
            await fleet.waitConnected(true);
            for (const shape of ['equal', 'one', 'moving'] as const) rows.push(await measure(fleet, n, 'cluster', shape, cluster.nodes));
          } finally {
            await fleet.stopDaemons();
            await cluster.dispose();
          }
        }
      } finally {
        await fleet.dispose();
      }
    }
  } finally {
    await redis.dispose();
  }
  const result = {
    bench: 'fleet',
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, load1: loadavg()[0] },
    settings: { limit_per_s: LIMIT, seconds: SECONDS, interval_ms: INTERVAL, offered_x_limit: OFFERED, local_per_node: 'limit / nodes' },
    results: rows,
  };
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${OUT}\n\nAs docs/fleet.md shows it:\n`);
  console.log('| nodes | redis | shape | passed | expected | error | within 10% | cmds/s per node | cpu per daemon |');
  console.log('| ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |');
  for (const r of rows) console.log(`| ${r.nodes} | ${r.redis} | ${r.shape} | ${r.passed} | ${r.expected} | ${r.error_pct >= 0 ? '+' : ''}${r.error_pct.toFixed(1)}% | ${r.within_10pct ? 'yes' : 'no'} | ${r.redis_cmds_per_s_per_node} | ${r.agent_cpu_pct.toFixed(1)}% |`);
  if (rows.some((r) => r.redis !== 'none' && !r.within_10pct)) process.exitCode = 1;
}

void main().catch((e: unknown) => { console.error(e); process.exit(1); });
