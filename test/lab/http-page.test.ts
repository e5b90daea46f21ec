/**
 * The two HTTP pieces of the web demo, through the lab's real namespaces: the server's page costs
 * the CPU it is asked to (counted by the kernel for the server's process, not timed), and the
 * well-behaved users ask at their pace whatever the server does (open loop), reporting each
 * request with the time it was started.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { labDown, labHttp, labUp, type LabLayout } from '../../src/lab';
import { startHttpUsers } from '../../src/lab/http-users';
import { assertNoLeftovers, runId } from '../lib/netns';

const ID = `${runId().slice(0, 6)}hp`;

after(async () => {
  await labDown({ id: ID });
  await assertNoLeftovers(ID, { waitMs: 2000 });
});

/** CPU the process has used (user + system), ms, as the kernel counts it (clock ticks). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // fields 14 and 15, in USER_HZ (100)
}

async function serverCpuFor(l: LabLayout, requests: number): Promise<number> {
  const c0 = cpuMs(l.server.http.pid);
  const r = await labHttp(l, { requests, concurrency: 4 });
  assert.equal(r.completed, requests, JSON.stringify(r));
  return cpuMs(l.server.http.pid) - c0;
}

test('each page costs the CPU asked for (2 ms: 400 pages take 0.8 s of the server\'s CPU or more), a static page almost none', async () => {
  const busy = (await labUp({ id: ID, clients: 1, pageCpuUs: 2000 })).layout;
  assert.equal(busy.server.http.page_cpu_us, 2000);
  const spent = await serverCpuFor(busy, 400);
  // At least what the pages cost (less one clock tick of rounding at each end), and not more than
  // twice that: the page's loop stops within a tenth of its cost, HTTP adds a fraction of a ms.
  assert.ok(spent >= 800 - 20 && spent <= 1600, `400 pages of 2 ms cost the server ${spent} ms of CPU`);

  const plain = (await labUp({ id: ID, clients: 1, pageCpuUs: 0 })).layout;
  assert.notEqual(plain.server.http.pid, busy.server.http.pid, 'another page cost is another server');
  const little = await serverCpuFor(plain, 400);
  console.log(`server CPU for 400 pages: 2 ms pages ${spent} ms, static ${little} ms`);
  assert.ok(little < spent / 3, `400 static pages cost ${little} ms, 400 pages of 2 ms ${spent} ms`);
});

test('users ask at their pace even when the server cannot keep up, and count what is not answered in time', async () => {
  // 40 ms a page: the server answers 25 a second at most; the users ask 50 a second.
  const l = (await labUp({ id: ID, clients: 1, pageCpuUs: 40_000 })).layout;
  const c = l.clients[0]!;
  const users = await startHttpUsers(c.netns, `http://${c.server.ipv4}/`, { rate: 50, connections: 4, timeout_ms: 500 });
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 3000));
  const t1 = Date.now();
  const end = await users.stop();
  assert.ok(users.endedBefore(t1), 'every request started has been reported');
  const s = users.samples;
  assert.equal(s.length, end.requests, 'each request started is reported once');
  // Open loop: about 50 a second were started, whatever the server did (the client's own lag, on a
  // busy machine, only delays a request: it is still started).
  const expected = (50 * (t1 - t0)) / 1000;
  assert.ok(end.requests >= expected * 0.9 && end.requests <= expected * 1.1 + 1, `${end.requests} requests started in ${t1 - t0} ms at 50/s`);
  const ok = s.filter((x) => x.outcome === 'ok').length;
  const timedOut = s.filter((x) => x.outcome === 'timed_out').length;
  console.log(`users at 50/s for ${t1 - t0} ms against a server of 25/s: ${end.requests} started, ${ok} answered, ${timedOut} timed out`);
  assert.ok(timedOut > 0, 'requests the server could not answer in 500 ms timed out');
  assert.ok(ok <= 25 * ((t1 - t0) / 1000 + 0.5) + 4, `${ok} answered: no more than the server can serve`);
  assert.ok(s.every((x) => x.at >= t0 - 50 && x.at <= t1 + 50), 'every request carries the time it was started');
  assert.ok(s.filter((x) => x.outcome === 'timed_out').every((x) => x.ms >= 499), 'a request times out after the timeout, not before');
});
