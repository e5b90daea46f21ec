/**
 * `sluice events` and the watch views as an operator meets them (issue 17): events carry the time
 * the packet was decided, never replay what was decided before the command started, filter by
 * rule, reason and source, and go through the daemon's API when a daemon manages the interface
 * (it is the ring buffer's one consumer). `stats --watch` prints plain text when piped, one JSON
 * object a line with --json, and ends quietly when its pipe is closed.
 *
 * Traffic: bursts of UDP from the client namespace, each to a port of its own, so that an event
 * names the burst (and so the moment) its packet was sent in.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { request, type IncomingMessage } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { http, killDaemon, startDaemon, writeConfig, type DaemonProcess } from '../daemon/helpers';

interface Ev { time: string; ts_ns: string; source: string; rule_id: number | null; rule: string; reason: string; verdict: string; proto: string; dport: number; bytes: number }

const tb = new Testbed();
let cli: string;
let srv: string;
let veth: Veth;
let on: string[];
const dir = mkdtempSync(join(tmpdir(), 'sluice-events-'));

before(async () => {
  cli = await tb.addNs('evc');
  srv = await tb.addNs('evs');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
  await ok('up', ...on, '--rate', '50', '--burst', '50', '--algorithm', 'token');
});

/** Every `sluice` started by start(), killed at the end whatever happened. */
const children: ChildProcess[] = [];

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await sluice('down', ...on);
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers();
});

/** A running `sluice ...args`, its stdout lines as they come. */
function start(args: string[]): { child: ChildProcess; lines: string[]; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const lines: string[] = [];
  let buf = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  return { child, lines, stderr: () => err, exited };
}

/**
 * Bursts of 200 datagrams (150 over the limit) to port base, base+1 … until `done` resolves or
 * 15 s pass; when each was sent (ms, wall clock) by port.
 */
async function bursts(base: number, done: Promise<unknown>): Promise<Map<number, { from: number; to: number }>> {
  const sent = new Map<number, { from: number; to: number }>();
  let finished = false;
  void done.then(() => { finished = true; });
  const end = Date.now() + 15_000;
  for (let port = base; !finished && Date.now() < end; port++) {
    const from = Date.now();
    await udpSend(tb, cli, veth.b.ipv4, 200, 0, port);
    sent.set(port, { from, to: Date.now() });
    await new Promise((r) => setTimeout(r, 400));
  }
  return sent;
}

test('events give the time each packet was decided and never replay what was decided before the command started', { timeout: 60_000 }, async () => {
  // Drops while nobody reads: their events wait in the ring buffer.
  await udpSend(tb, cli, veth.b.ipv4, 400, 0, 7000);
  await new Promise((r) => setTimeout(r, 1500));
  const ev = start(['events', ...on, '--json', '--count', '20']);
  const sent = await bursts(8000, ev.exited);
  assert.equal(await ev.exited, 0, ev.stderr());
  const events = ev.lines.map((l) => JSON.parse(l) as Ev | { budget: unknown }).filter((e): e is Ev => 'time' in e);
  assert.equal(events.length, 20, ev.lines.join('\n'));
  const stale = events.filter((e) => e.dport === 7000);
  assert.equal(stale.length, 0, `events decided before the command started were shown as new: ${JSON.stringify(stale.slice(0, 3))}`);
  for (const e of events) {
    const s = sent.get(e.dport);
    assert.ok(s, `an event of a port no burst was sent to: ${JSON.stringify(e)}`);
    const t = Date.parse(e.time);
    assert.ok(t >= s.from - 1000 && t <= s.to + 1000, `decided at ${e.time}, sent between ${new Date(s.from).toISOString()} and ${new Date(s.to).toISOString()}`);
    assert.equal(e.source, veth.a.ipv4);
    assert.equal(e.proto, 'udp');
    assert.equal(e.reason, 'limit');
    assert.equal(e.verdict, 'drop');
    assert.equal(e.rule, 'default');
    assert.match(e.ts_ns, /^\d+$/);
  }
  assert.match(ev.stderr(), /^$/);
});

test('events filter by reason, rule and source; a bad filter is an argument error', { timeout: 60_000 }, async () => {
  const mine = start(['events', ...on, '--json', '--count', '5', '--reason', 'limit', '--rule', 'default', '--source', `${veth.a.ipv4}/32`]);
  const other = start(['events', ...on, '--json', '--source', '192.0.2.0/24']);
  const otherReason = start(['events', ...on, '--json', '--reason', 'denylist']);
  await bursts(8100, mine.exited);
  assert.equal(await mine.exited, 0, mine.stderr());
  const got = mine.lines.map((l) => JSON.parse(l) as Ev).filter((e) => 'time' in e);
  assert.equal(got.length, 5);
  assert.ok(got.every((e) => e.reason === 'limit' && e.rule === 'default' && e.source === veth.a.ipv4));
  for (const p of [other, otherReason]) {
    p.child.kill('SIGINT');
    assert.equal(await p.exited, 0, p.stderr());
    assert.equal(p.lines.filter((l) => 'time' in (JSON.parse(l) as object)).length, 0, `a filter that matches nothing showed: ${p.lines.join('\n')}`);
  }
  const bad = await sluice('events', ...on, '--reason', 'bogus');
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /SLUICE_E_INVALID_ARGUMENT.*unknown reason "bogus": one of .*limit/);
  const badSource = await sluice('events', ...on, '--source', '10.0.0.0/99');
  assert.equal(badSource.code, 2, badSource.stderr);
});

test('with a daemon managing the interface, events come through its API (the ring buffer has one consumer)', { timeout: 60_000 }, async () => {
  const socketPath = join(dir, 'api.sock');
  const config = join(dir, 'sluice.yaml');
  writeConfig(config, { interfaces: [{ iface: veth.b.ifname, netns: srv, limits: { algorithm: 'token', rate: 50, burst: 50 } }], api: { socket: socketPath } });
  let d: DaemonProcess | undefined = startDaemon(config);
  try {
    await d.waitLog((l) => l.event === 'ready', 'ready');
    // Through the API directly: server-sent events, one JSON object per `data:` line.
    const stream = new Promise<string>((res, rej) => {
      const req = request({ socketPath, path: `/v1/events?iface=${veth.b.ifname}&netns=${srv}&reason=limit`, headers: { host: 'localhost' } }, (r: IncomingMessage) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (x: string) => {
          body += x;
          if ((body.match(/^data: \{"time"/gm) ?? []).length >= 3) { req.destroy(); res(body); }
        });
      });
      req.on('error', (e: Error) => { if (!/socket hang up|aborted/.test(e.message)) rej(e); });
      req.end();
      setTimeout(() => { req.destroy(); rej(new Error('no events through GET /v1/events within 20 s')); }, 20_000).unref();
    });
    const cliEvents = start(['events', ...on, '--count', '3']);
    const sent = await bursts(8200, Promise.all([stream, cliEvents.exited]));
    const body = await stream;
    assert.match(body, /^event: budget\ndata: \{"suppressed":\d+,"lost":\d+\}$/m);
    const viaApi = body.split('\n').filter((l) => l.startsWith('data: {"time"')).map((l) => JSON.parse(l.slice(6)) as Ev);
    assert.ok(viaApi.every((e) => e.reason === 'limit' && sent.has(e.dport)), body);
    assert.equal(await cliEvents.exited, 0, cliEvents.stderr());
    assert.equal(cliEvents.lines.length, 3, cliEvents.lines.join('\n'));
    assert.ok(cliEvents.lines.every((l) => l.includes(veth.a.ipv4) && / limit +drop +udp\/82\d\d /.test(l)), cliEvents.lines.join('\n'));
    const bad = await http({ socketPath }, 'GET', `/v1/events?iface=${veth.b.ifname}&netns=${srv}&reason=nope`);
    assert.equal(bad.status, 400, bad.text);
    const code = await killDaemon(d, 'SIGTERM');
    d = undefined;
    assert.equal(code.code, 0);
  } finally {
    if (d) await killDaemon(d);
  }
});

test('stats --watch: one JSON object a line, plain text when piped, quiet when the pipe closes', { timeout: 30_000 }, async () => {
  // `| head -n 2`: the reader goes away after two lines.
  const j = start(['stats', ...on, '--watch', '200ms', '--json']);
  while (j.lines.length < 2) await new Promise((r) => setTimeout(r, 50));
  j.child.stdout!.destroy();
  const code = await j.exited;
  assert.equal(code, 0, j.stderr());
  assert.equal(j.stderr(), '', 'no EPIPE stack trace');
  for (const l of j.lines.slice(0, 2)) {
    const s = JSON.parse(l) as { dropped_packets: number; drop_rate: number; rates: { drop_rate: number } | null };
    assert.equal(typeof s.dropped_packets, 'number');
    assert.equal(typeof s.rates?.drop_rate, 'number');
  }
  const plain = start(['stats', ...on, '--watch', '200ms']);
  while (plain.lines.filter((l) => l.startsWith('drop rate')).length < 2) await new Promise((r) => setTimeout(r, 50));
  plain.child.kill('SIGINT');
  await plain.exited;
  const text = plain.lines.join('\n');
  assert.doesNotMatch(text, /\x1b/, 'no escape sequences when piped');
  assert.match(text, /drop rate now [\d.]+%, since attach [\d.]+%/);
});

test('stats --watch on a terminal redraws in place, with a sparkline of the last minute', { timeout: 30_000 }, async () => {
  // script(1) gives the command a pseudo-terminal, as an operator's shell would.
  const cmd = [process.execPath, BIN, 'stats', ...on, '--watch', '200ms'].map((a) => `'${a}'`).join(' ');
  const tty = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
  children.push(tty);
  let out = '';
  tty.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise((res) => tty.once('exit', res));
  const deadline = Date.now() + 15_000;
  while ((out.match(/\x1b\[H\x1b\[2J/g) ?? []).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  tty.kill('SIGINT');
  await exited;
  assert.ok((out.match(/\x1b\[H\x1b\[2J/g) ?? []).length >= 3, `redrawn in place: ${JSON.stringify(out.slice(0, 300))}`);
  assert.match(out, /dropped\/s, last minute \S*[▁▂▃▄▅▆▇█]+/);
  assert.match(out, /Ctrl-C to stop/);
});

// Last: it applies a policy of its own.
test('a long load shows progress on a terminal, and nothing extra when stderr is not one', { timeout: 60_000 }, async () => {
  const file = join(dir, 'big.yaml');
  const deny = Array.from({ length: 20_000 }, (_, i) => `  - 198.18.${i >> 8}.${i & 255}/32`).join('\n');
  writeFileSync(file, `defaults: { algorithm: token, rate: 50, burst: 50 }\ndeny:\n${deny}\n`);
  const cmd = [process.execPath, BIN, 'policy', 'apply', file, ...on].map((a) => `'${a}'`).join(' ');
  const tty = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
  children.push(tty);
  let out = '';
  tty.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  assert.equal(await new Promise((res) => tty.once('exit', res)), 0, out);
  assert.match(out, /reading and checking .*big\.yaml….* 1 rules?, 20,000 list prefixes \([\d.]+ s\)/);
  assert.match(out, /writing rules and lists to the kernel \(one flip\)….*\([\d.]+ s\)/);
  const piped = await sluice('policy', 'apply', file, ...on);
  assert.equal(piped.code, 0, piped.stderr);
  assert.doesNotMatch(piped.stderr, /reading and checking|\x1b/);
});
