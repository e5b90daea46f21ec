/**
 * Plugin slots through the kernel: a rule naming a slot hands its packets to the plugged program,
 * which decides them (here: the example drop_ssdp); the built-in limiter decides again once the slot
 * is emptied, and other rules never see the plugin.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Reason } from '../../src/generated/types';
import { plugProgram, unplugProgram } from '../../src/limiter/plugins';
import { assertProgramsUnloaded, REPO, TestDatapath } from '../lib/datapath';
import { IPPROTO, pkt } from '../lib/packet';

const PLUGIN = join(REPO, 'bpf', 'plugins', 'drop_ssdp.bpf.o');
let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const udp = (src: string, dport: number): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1, dport }).build();

test('a plugged program decides its rule\'s packets; unplugging restores the built-in path', async () => {
  dp.setNow(1_000_000_000n);
  dp.limiter.applyPolicy({
    rules: [
      { id: 0, alg: 'fixed', pps: 1_000_000 },
      { id: 1, src: ['10.40.0.0/16'], proto: IPPROTO.UDP, alg: 'fixed', pps: 1, plugin: 3 },
    ],
  });
  const array = dp.coll.maps.get('sl_plugins_xdp')!;
  const prog = await plugProgram(array, 'xdp', 3, PLUGIN, 'xdp');
  try {
    const c0 = dp.limiter.counters(1);
    assert.equal(await dp.run(udp('10.40.0.1', 1900)), 'drop', 'SSDP: dropped by the plugin');
    for (let i = 0; i < 5; i++) assert.equal(await dp.run(udp('10.40.0.1', 53)), 'pass', 'the plugin passes the rest, whatever the rule\'s own limit');
    assert.equal(await dp.run(udp('10.41.0.1', 1900)), 'pass', 'another rule never sees the plugin');
    const c1 = dp.limiter.counters(1);
    assert.equal(c1.reason_packets[Reason.PLUGIN]! - c0.reason_packets[Reason.PLUGIN]!, 6n, 'handed over: counted once each');
    assert.equal(c1.reason_packets[Reason.PASS], c0.reason_packets[Reason.PASS], 'the built-in limiter did not run');
  } finally {
    prog.close();
  }
  assert.equal(unplugProgram(array, 3), true);
  const c0 = dp.limiter.counters(1);
  assert.equal(await dp.run(udp('10.40.0.2', 1900)), 'pass', 'built-in: first packet within 1/s');
  assert.equal(await dp.run(udp('10.40.0.2', 1900)), 'drop', 'built-in: second over the limit');
  const c1 = dp.limiter.counters(1);
  assert.equal(c1.reason_packets[Reason.PLUGIN], c0.reason_packets[Reason.PLUGIN], 'an empty slot counts no hand-over');
  assert.equal(c1.reason_packets[Reason.LIMIT]! - c0.reason_packets[Reason.LIMIT]!, 1n);
});

test('a packet an empty slot sends back to the built-in limiter is counted once', async () => {
  dp.setNow(2_000_000_000n);
  // The default rule in dry-run ranks last, so an orphan fragment of 10.40/16 gets the plugged rule.
  dp.limiter.applyPolicy({
    rules: [
      { id: 0, alg: 'fixed', pps: 1_000_000, action: 'dry-run' },
      { id: 1, src: ['10.40.0.0/16'], proto: IPPROTO.UDP, alg: 'fixed', pps: 1_000, plugin: 4 },
    ],
  });
  const g0 = dp.limiter.globalCounters();
  const c0 = dp.limiter.counters(1);
  const later = pkt().eth().ipv4({ src: '10.40.0.9', dst: '198.51.100.1', fragOffset: 10, id: 9, protocol: IPPROTO.UDP }).payload(64).build();
  assert.equal(await dp.run(later), 'pass');
  const g1 = dp.limiter.globalCounters();
  const c1 = dp.limiter.counters(1);
  assert.equal(c1.reason_packets[Reason.PASS]! - c0.reason_packets[Reason.PASS]!, 1n, 'decided by the plugged rule\'s built-in limit');
  for (const r of [Reason.FRAG_ORPHAN, Reason.UNCERTAIN]) {
    assert.equal(g1.reason_packets[r]! - g0.reason_packets[r]!, 1n, `reason ${r}: counted once, not again when the empty slot sent it back`);
  }
});

test('a program of the wrong type is refused', async () => {
  await assert.rejects(plugProgram(dp.coll.maps.get('sl_plugins_tc')!, 'tc', 0, PLUGIN, 'xdp'), /cannot go into an tc slot/);
  await assert.rejects(plugProgram(dp.coll.maps.get('sl_plugins_xdp')!, 'xdp', 16, PLUGIN, 'xdp'), /slot 16/);
});
