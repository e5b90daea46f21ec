/**
 * Adopting what is pinned opens the pinned maps; every fd it opens is closed again. At 4b64801
 * each adoption (every `sluice up` of a protected interface, every restart of the daemon's
 * reconcile) left one fd per pinned map open in the process. On a veth in a namespace this test
 * creates.
 */
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Protection } from '../../src/agent/protection';
import type { Place } from '../../src/agent/state';
import { assertNoLeftovers, runId, Testbed } from '../lib/netns';

const tb = new Testbed();
let place: Place;

/** Open fds of this process that are BPF maps. */
function mapFds(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try { if (readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:bpf-map') n++; } catch { /* closed meanwhile */ }
  }
  return n;
}

before(async () => {
  const a = await tb.addNs('a');
  const b = await tb.addNs('b');
  const veth = await tb.addVeth(a, b);
  place = { iface: veth.b.ifname, netns: b };
});

after(async () => {
  try { await Protection.down(place); } catch { /* already down */ }
  await tb.cleanup();
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

test('up, then up again three times (adopting): no map fd is left open', async () => {
  const before = mapFds();
  const first = await Protection.up({ ...place, limits: { rate: 100 } });
  assert.equal(first.action, 'attached');
  first.protection.close();
  const attached = mapFds();
  for (let i = 0; i < 3; i++) {
    const r = await Protection.up({ ...place, limits: { rate: 100 + i } });
    assert.equal(r.action, 'adopted');
    r.protection.close();
  }
  assert.equal(mapFds(), attached, `map fds after three adoptions (${before} before the first up)`);
});
