/**
 * `sluice lab …`: the client/server testbed in network namespaces and its traffic generators.
 * Thin over src/lab.
 */
import { Option, type Command } from 'commander';
import {
  DEFAULT_LAB_ID,
  describeLab,
  labCount,
  labCountReset,
  labDown,
  labFlood,
  labHttp,
  labUp,
  MAX_CLIENTS,
  floodPath,
  parsePageCpu,
  requireLayout,
  type FloodProto,
} from '../../lab';
import { PermissionError } from '../../ebpf';
import { parseDurationMs, parseRate } from '../../limiter/units';
import { num, parsed, printJson, table } from '../common';
import { Progress } from '../terminal';

const int = (what: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  parsed((v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${what} "${v}" must be an integer from ${min} to ${max}`);
    return n;
  });

/** A duration through the one grammar of units (src/limiter/units.ts), in seconds: a unit is required. */
const seconds = (what: string, minMs: number, maxMs: number) => parsed((v: string) => parseDurationMs(v, what, minMs, maxMs) / 1000);

const idOption = (): Option => new Option('--id <id>', 'lab id (lower-case letter, then 1-7 letters or digits)').default(DEFAULT_LAB_ID);

/** Abort on the first Ctrl-C (the generators stop within ~100 ms); a second one kills. */
function abortOnSigint(): { signal: AbortSignal; done(): void } {
  const ac = new AbortController();
  const onSig = (): void => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort();
  };
  process.on('SIGINT', onSig);
  return { signal: ac.signal, done: () => process.removeListener('SIGINT', onSig) };
}

export function register(program: Command): void {
  const lab = program
    .command('lab')
    .description('a client/server testbed in network namespaces, with HTTP and packet generators')
    .addHelpText('after', `
The lab lives entirely in its own namespaces (sluice-lab-<id>-srv, sluice-lab-<id>-c<k>), with
no route out; nothing outside them is touched. Example session:
  sluice lab up --clients 2
  sluice lab http --requests 1000 --concurrency 10
  sluice up --iface labmain-s1 --netns sluice-lab-main-srv --rate 1000
  sluice lab flood --pps max --duration 5s --sources 16
  sluice lab count
  sluice lab down`);
  // Namespaces, veths and /run/sluice/lab need root: say so, instead of a raw EACCES from deep inside.
  lab.hook('preAction', () => {
    if (process.getuid?.() !== 0) {
      throw new PermissionError('the lab creates network namespaces and veth pairs and keeps its state in /run/sluice/lab: run it as root (sudo sluice lab …)', { errno: 13, errnoName: 'EACCES', op: 'lab' });
    }
  });

  lab
    .command('up')
    .description('create the lab (idempotent): namespaces, veth pairs, addresses, HTTP server, receiver count')
    .option('-c, --clients <n>', `client namespaces (1-${MAX_CLIENTS})`, int('clients', 1, MAX_CLIENTS), 1)
    .addOption(new Option('--page-cpu <time>', 'CPU each answer of the HTTP server costs, spent hashing (e.g. 1ms, 500us; 0us: a static page)').argParser(parsed(parsePageCpu)).default(0, '0us'))
    .addOption(idOption())
    .option('--json', 'print the layout as JSON')
    .action(async (o: { clients: number; pageCpu: number; id: string; json?: boolean }) => {
      const lines: string[] = [];
      const { layout, created } = await labUp({ id: o.id, clients: o.clients, pageCpuUs: o.pageCpu, log: (l) => lines.push(l) });
      if (o.json) return printJson(layout);
      console.log(created ? `lab '${layout.id}' is up (layout in /run/sluice/lab/${layout.id}.json):` : `lab '${layout.id}' was already up:`);
      console.log(await describeLab(layout));
      const cpu = layout.server.http.page_cpu_us ?? 0;
      console.log(`HTTP server: pid ${layout.server.http.pid}, port ${layout.server.http.port} on every server address, ${cpu ? `each page costs ${cpu} µs of CPU` : 'a static page'}`);
      console.log(`receiver count: tc ingress on ${layout.clients.map((c) => c.server.ifname).join(', ')} (sluice lab count)`);
      console.log(`no route leaves the lab's namespaces; remove everything with \`sluice lab down${o.id === DEFAULT_LAB_ID ? '' : ` --id ${o.id}`}\``);
    });

  lab
    .command('down')
    .description('remove the lab (idempotent, also after a crash): processes in it, namespaces, state')
    .addOption(idOption())
    .option('--all', 'every lab (every namespace named sluice-lab-*)')
    .action(async (o: { id: string; all?: boolean }) => {
      const removed = await labDown({ id: o.id, all: o.all });
      console.log(removed.length ? `removed ${removed.join(', ')}` : 'nothing to remove');
    });

  lab
    .command('http')
    .description('HTTP load from a client namespace to the server (autocannon)')
    .requiredOption('-n, --requests <n>', 'requests in total', int('requests', 1))
    .requiredOption('-c, --concurrency <n>', 'connections at once', int('concurrency', 1, 10_000))
    .option('-k, --client <k>', 'client number', int('client', 1, MAX_CLIENTS), 1)
    .option('-6, --ipv6', 'to the server over IPv6')
    .addOption(new Option('--timeout <duration>', 'a request taking longer counts as timed out (e.g. 500ms, 5s)').argParser(seconds('timeout', 1, 3_600_000)).default(5, '5s'))
    .addOption(idOption())
    .option('--json', 'print the result as JSON')
    .action(async (o: { requests: number; concurrency: number; client: number; ipv6?: boolean; timeout: number; id: string; json?: boolean }) => {
      const progress = new Progress();
      progress.start(`${num(o.requests)} requests from client ${o.client}`);
      const r = await labHttp(requireLayout(o.id), {
        requests: o.requests, concurrency: o.concurrency, client: o.client, family: o.ipv6 ? 6 : 4, timeoutS: o.timeout,
        onProgress: (done, total) => progress.update(`${num(done)} of ${num(total)}`),
      });
      progress.end();
      if (o.json) return printJson(r);
      console.log(`${r.url} from client ${o.client}: ${num(r.requests)} requests, ${o.concurrency} at once`);
      console.log(table([[num(r.completed), num(r.failed), num(r.timed_out), r.seconds.toFixed(2), num(r.requests_per_second)]], ['completed', 'failed', 'timed out', 'seconds', 'requests/s']));
      const l = r.latency_ms;
      console.log(`latency ms: min ${l.min}  p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}  mean ${l.mean}`);
    });

  lab
    .command('flood')
    .description('a packet flood from a client namespace to the server (live XDP frames, or a paced packet socket)')
    .requiredOption('--pps <rate|max>', "offered packets per second (e.g. 50000, 50k, 2M/s), or 'max'", parsed((v) => (v === 'max' ? 'max' as const : parseRate(v, 'pps'))))
    .requiredOption('-d, --duration <duration>', 'how long, at most 24h (e.g. 500ms, 10s, 5m)', seconds('duration', 1, 86_400_000))
    .addOption(new Option('--sources <k>', 'distinct source addresses, in sequence (1: the client\'s own)').argParser(int('sources', 1, 0xffff)).default(1).conflicts('spoof'))
    .addOption(new Option('--spoof <kind>', 'random spoofed sources (IPv4: from 10.0.0.0/8)').choices(['random']))
    .option('--size <bytes>', 'frame size as the kernel sees it, without FCS', int('size', 42, 1514), 64)
    .addOption(new Option('--proto <proto>', 'what to send').choices(['udp', 'tcp-syn', 'icmp']).default('udp'))
    .option('--dport <port>', 'destination port (udp, tcp-syn), to try port rules', int('dport', 0, 65535), 9)
    .option('--sport <port>', 'source port (udp, tcp-syn)', int('sport', 0, 65535), 40000)
    .option('-6, --ipv6', 'IPv6 frames')
    .option('-k, --client <k>', 'client number', int('client', 1, MAX_CLIENTS), 1)
    .addOption(new Option('--path <path>', `live XDP frames or a paced socket (auto: paced below 200,000 pps)`).choices(['auto', 'live', 'paced']).default('auto'))
    .addOption(idOption())
    .option('--json', 'print {"sent", "seconds", "pps", "asked_pps", "reached", "path"}')
    .action(async (o: {
      pps: number | 'max'; duration: number; sources: number; spoof?: 'random'; size: number; proto: FloodProto; dport: number; sport: number;
      ipv6?: boolean; client: number; path: 'auto' | 'live' | 'paced'; id: string; json?: boolean;
    }) => {
      const layout = requireLayout(o.id);
      const path = floodPath(o);
      if (!o.json) {
        const src = o.spoof ? 'random spoofed sources' : o.sources > 1 ? `${num(o.sources)} sources` : 'one source';
        const ports = o.proto === 'icmp' ? '' : ` port ${o.sport} -> ${o.dport}`;
        console.log(`flooding from client ${o.client} for ${o.duration} s at ${o.pps === 'max' ? 'the highest rate' : `${num(o.pps)} pps`}: ` +
          `${o.proto}${ports} over IPv${o.ipv6 ? 6 : 4}, ${o.size}-byte frames, ${src}, ${path === 'live' ? 'live XDP frames' : 'paced packet socket'} (Ctrl-C stops)`);
      }
      const stop = abortOnSigint();
      try {
        const r = await labFlood(layout, {
          pps: o.pps, seconds: o.duration, size: o.size, proto: o.proto, dport: o.dport, sport: o.sport, family: o.ipv6 ? 6 : 4, client: o.client, path: o.path,
          ...(o.spoof ? { spoof: o.spoof } : { sources: o.sources }), signal: stop.signal,
        });
        // The rate reached against the rate asked: a rate this machine cannot reach ends on time
        // with fewer frames, and says so.
        const reached = o.pps === 'max' ? null : Number((r.pps / o.pps).toFixed(4));
        if (reached !== null && reached < 0.95) console.error(`warning: reached ${num(r.pps)} pps, ${(reached * 100).toFixed(1)}% of the ${num(o.pps as number)} pps asked: this machine's ${r.path} path goes no faster${r.path === 'paced' ? ' (--path live goes faster)' : ''}`);
        if (o.json) return printJson({ sent: r.sent, seconds: Number(r.seconds.toFixed(3)), pps: Math.round(r.pps), asked_pps: o.pps, reached, path: r.path });
        console.log(`sent ${num(r.sent)} frames in ${r.seconds.toFixed(2)} s: ${num(r.pps)} pps offered${reached !== null ? ` (${(reached * 100).toFixed(1)}% of the rate asked)` : ''}, path ${r.path}` +
          `${r.path === 'live' ? ` (${r.threads} generator thread${r.threads > 1 ? 's' : ''}, 100 ms runs)` : ` (latest frame ${((r.lateNsMax ?? 0) / 1000).toFixed(0)} µs behind schedule)`}`);
        console.log('what arrived: `sluice lab count` (after the XDP hook) and `sluice stats` (what Sluice decided)');
      } finally {
        stop.done();
      }
    });

  lab
    .command('count')
    .description('what arrived at the server side per source, after the XDP hook (tc ingress count)')
    .option('--reset', 'start again from zero')
    .option('--top <n>', 'sources shown', int('top', 1), 20)
    .addOption(idOption())
    .option('--json', 'print every source as JSON')
    .action((o: { reset?: boolean; top: number; id: string; json?: boolean }) => {
      const layout = requireLayout(o.id);
      const r = labCount(layout);
      if (o.reset) labCountReset(layout);
      if (o.json) return printJson(r);
      console.log(`arrived at the server side: ${num(r.packets)} IP packets from ${num(r.sources.length)} sources` +
        `${r.unrecorded ? ` (${num(r.unrecorded)} of sources past the table's size)` : ''}, ${num(r.non_ip)} non-IP frames`);
      if (r.sources.length) {
        console.log(table(r.sources.slice(0, o.top).map((s) => [s.address, num(s.packets), num(s.bytes)]), ['source', 'packets', 'bytes']));
        if (r.sources.length > o.top) console.log(`… and ${num(r.sources.length - o.top)} more (--top, --json)`);
      }
      if (o.reset) console.log('reset to zero');
    });
}
