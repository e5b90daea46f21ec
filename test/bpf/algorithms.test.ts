/**
 * The algorithms' long-run behaviour under steady streams, through the kernel with the test clock.
 * In particular the token bucket refills continuously: a client sending faster than one packet per
 * second gets its rate (the article's bucket refilled only in whole seconds and reset its refill
 * time on every packet, so such a client was starved after its first burst).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { AlgName } from '../../src/limiter/models';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const frame = pkt().eth().ipv4({ src: '203.0.113.9', dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).payload(50).build();

/** Send one packet every gapNs for seconds; count passes. */
async function stream(gapNs: bigint, seconds: number, start = 10_000_000_000n): Promise<number> {
  let passed = 0;
  const n = Number(BigInt(seconds) * 1_000_000_000n / gapNs);
  for (let i = 0; i < n; i++) {
    dp.setNow(start + BigInt(i) * gapNs);
    if ((await dp.run(frame)) === 'pass') passed++;
  }
  return passed;
}

test('token bucket refills to the nanosecond: 100/s, burst 10, offered 1000/s for 10 s', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 100, ppsBurst: 10 }] });
  const passed = await stream(1_000_000n, 10);
  // The burst, then one packet per 10 ms for 10 s (the first packet of the stream at t=0).
  assert.ok(passed >= 1005 && passed <= 1010, `passed ${passed}, expected 10 + 100 x 10 minus rounding`);
});

test('token bucket at a rate that does not divide a second: 3/s, burst 2, offered 10/s for 20 s', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 3, ppsBurst: 2 }] });
  const passed = await stream(100_000_000n, 20);
  assert.ok(passed >= 60 && passed <= 62, `passed ${passed}, expected 3 per second plus the burst`);
});

test('token bucket of one: arrivals on a 100 ms grid pass every 400 ms at 3/s (no credit is kept)', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 3, ppsBurst: 1 }] });
  assert.equal(await stream(100_000_000n, 20), 50);
});

for (const alg of ['fixed', 'sliding', 'gcra'] as AlgName[]) {
  test(`${alg}: long-run rate under a steady stream at 4x the limit`, async () => {
    dp.clearState();
    dp.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 250, ppsBurst: alg === 'gcra' ? 25 : 0 }] });
    const passed = await stream(1_000_000n, 8);
    // 250/s for 8 s, plus at most one burst or window's edge.
    assert.ok(passed >= 1990 && passed <= 2000 + 250, `passed ${passed} over 8 s at 250/s`);
  });
}

test('bytes per second: a byte limit holds packets of any size to the byte rate', async () => {
  dp.clearState();
  const big = pkt().eth().ipv4({ src: '203.0.113.10', dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).payload(958).build();
  assert.equal(big.length, 1000);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1_000_000, bps: 100_000, bpsBurst: 10_000 }] });
  let passed = 0;
  for (let i = 0; i < 2000; i++) {
    dp.setNow(10_000_000_000n + BigInt(i) * 1_000_000n); // 1000 packets/s, 1 MB/s offered for 2 s
    if ((await dp.run(big)) === 'pass') passed++;
  }
  // 10 kB burst + 100 kB/s for 2 s = 210 packets of 1000 bytes.
  assert.ok(passed >= 205 && passed <= 210, `passed ${passed} packets of 1000 bytes`);
});
