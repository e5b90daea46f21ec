/**
 * Attaching to interfaces: only to a veth pair inside two network namespaces
 * this test creates (named after the run id) and always deletes. No host
 * interface is ever touched.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type BpfError,
  type Collection,
  ifindex,
  ifname,
  Link,
  LinkType,
  NotSupportedError,
  ObjectSpec,
  tcAttach,
  tcDetach,
  tcHookCreate,
  tcHookDestroy,
  tcQuery,
  withNetns,
  xdpAttach,
  xdpDetach,
  xdpQuery,
} from '../../src/ebpf';
import { createVethPair, fixture, leftovers, pinDir, removePinDir, runId, u32, type VethPair } from './helpers';

describe('attach in network namespaces', () => {
  let coll: Collection;
  let veth: VethPair;
  let dir: string;

  before(async () => {
    veth = createVethPair();
    dir = pinDir('links');
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.load();
  });
  after(() => {
    try {
      coll?.close();
      if (dir) removePinDir(dir);
    } finally {
      veth?.destroy();
    }
    assert.deepEqual(leftovers(), [], `nothing of ${runId} stays behind`);
  });

  const id = (name: string): number => coll.program(name).info().id;

  it('resolves interfaces inside a namespace, and only there', () => {
    const idx = ifindex(veth.ifA, veth.nsA);
    assert.ok(idx > 1);
    assert.equal(ifname(idx, veth.nsA), veth.ifA);
    assert.throws(() => ifindex(veth.ifA), (e: BpfError) => e.errnoName === 'ENODEV', 'vA is not in the host namespace');
    assert.throws(() => ifindex(veth.ifA, `${runId}-missing`), (e: BpfError) => e.op === 'setns' && e.errnoName === 'ENOENT');
  });

  it('withNetns runs a function inside and always comes back', () => {
    const hostNs = (): string => readlinkSync(`/proc/self/task/${process.pid}/ns/net`); // the JS thread's own
    const before = hostNs();
    assert.equal(withNetns(veth.nsB, () => ifindex(veth.ifB)), ifindex(veth.ifB, veth.nsB));
    assert.throws(() => withNetns(veth.nsB, () => { throw new Error('boom'); }), /boom/);
    assert.throws(() => withNetns(veth.nsB, async () => 1), /synchronous/);
    assert.equal(hostNs(), before, 'back in the original namespace');
    assert.throws(() => ifindex(veth.ifB), (e: BpfError) => e.errnoName === 'ENODEV');
  });

  it('attaches by link in generic mode, updates, and detaches', () => {
    const opts = { netns: veth.nsA };
    using link = Link.attachXdp(coll.program('xdp_tiny'), veth.ifA, { mode: 'generic', ...opts });
    let q = xdpQuery(veth.ifA, opts);
    assert.equal(q.mode, 'generic');
    assert.equal(q.genericProgId, id('xdp_tiny'));
    assert.equal(q.progId, id('xdp_tiny'));
    const info = link.info();
    assert.equal(info.type, LinkType.Xdp);
    assert.equal(info.progId, id('xdp_tiny'));
    assert.equal(info.ifindex, ifindex(veth.ifA, veth.nsA));

    assert.throws(() => xdpAttach(veth.ifA, coll.program('xdp_pass'), { mode: 'generic', ...opts }), (e: BpfError) => e.errnoName === 'EBUSY',
      'netlink cannot replace a program attached by link');

    link.update(coll.program('xdp_pass'));
    assert.equal(xdpQuery(veth.ifA, opts).genericProgId, id('xdp_pass'));
    assert.throws(() => link.update(coll.program('xdp_tiny'), { expected: coll.program('xdp_tiny') }), (e: BpfError) => e.errnoName === 'EPERM');
    link.update(coll.program('xdp_tiny'), { expected: coll.program('xdp_pass') });
    assert.equal(xdpQuery(veth.ifA, opts).genericProgId, id('xdp_tiny'));

    link.detach();
    q = xdpQuery(veth.ifA, opts);
    assert.equal(q.mode, 'none');
    assert.equal(q.progId, 0);
  });

  it('attaches by link in native mode and sees real packets', async (t) => {
    const opts = { netns: veth.nsB };
    let link: Link;
    try {
      link = Link.attachXdp(coll.program('xdp_tiny'), veth.ifB, { mode: 'native', ...opts });
    } catch (e) {
      if (e instanceof NotSupportedError) return t.skip(`native XDP on veth: ${e.message}`);
      throw e;
    }
    try {
      const q = xdpQuery(veth.ifB, opts);
      assert.equal(q.mode, 'native');
      assert.equal(q.nativeProgId, id('xdp_tiny'));
      // Traffic only between the two namespaces, over link-local IPv6.
      const counters = coll.map('counters');
      const seen = (): bigint => counters.lookupPerCpu(u32(0)).reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
      const before = seen();
      // What counts is what arrives on vB; an echo reply may still be lost (neighbour discovery
      // under load), so ping's own exit code is not the test.
      spawnSync('ip', ['netns', 'exec', veth.nsA, 'ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', `${veth.addrB}%${veth.ifA}`], { stdio: 'ignore' });
      assert.ok(seen() > before, 'the program saw the pings arrive on vB');
    } finally {
      link.close();
    }
    assert.equal(xdpQuery(veth.ifB, opts).mode, 'none', 'closing the only link detaches');
  });

  it('a pinned link keeps the program attached after close', () => {
    const opts = { netns: veth.nsA };
    const path = join(dir, 'xdp_link');
    const link = Link.attachXdp(coll.program('xdp_pass'), veth.ifA, { mode: 'generic', ...opts });
    link.pin(path);
    const linkId = link.info().id;
    link.close();
    assert.equal(xdpQuery(veth.ifA, opts).genericProgId, id('xdp_pass'));
    using again = Link.fromPin(path);
    assert.equal(again.info().id, linkId);
    using byId = Link.fromId(linkId);
    assert.equal(byId.info().progId, id('xdp_pass'));
    again.detach();
    assert.equal(xdpQuery(veth.ifA, opts).mode, 'none');
  });

  it('attaches and detaches by netlink', () => {
    const opts = { netns: veth.nsA };
    xdpAttach(veth.ifA, coll.program('xdp_tiny'), { mode: 'generic', ...opts });
    assert.equal(xdpQuery(veth.ifA, opts).genericProgId, id('xdp_tiny'));
    assert.throws(() => xdpAttach(veth.ifA, coll.program('xdp_pass'), { mode: 'generic', ifNotExists: true, ...opts }), (e: BpfError) => e.errnoName === 'EBUSY');
    xdpAttach(veth.ifA, coll.program('xdp_pass'), { mode: 'generic', replace: coll.program('xdp_tiny'), ...opts });
    assert.equal(xdpQuery(veth.ifA, opts).genericProgId, id('xdp_pass'));
    xdpDetach(veth.ifA, { mode: 'generic', expected: coll.program('xdp_pass'), ...opts });
    assert.equal(xdpQuery(veth.ifA, opts).mode, 'none');
  });

  it('attaches tc filters on egress and ingress', () => {
    const opts = { netns: veth.nsA };
    assert.equal(tcHookCreate(veth.ifA, 'egress', opts), true);
    assert.equal(tcHookCreate(veth.ifA, 'ingress', opts), false, 'one clsact serves both directions');
    for (const dir of ['egress', 'ingress'] as const) {
      const f = tcAttach(veth.ifA, dir, coll.program('tc_pass'), { handle: 1, priority: 1, ...opts });
      assert.deepEqual(f, { handle: 1, priority: 1, progId: id('tc_pass') });
      assert.throws(() => tcAttach(veth.ifA, dir, coll.program('tc_pass'), { handle: 1, priority: 1, ...opts }), (e: BpfError) => e.errnoName === 'EEXIST');
      tcAttach(veth.ifA, dir, coll.program('tc_pass'), { handle: 1, priority: 1, replace: true, ...opts });
      assert.equal(tcQuery(veth.ifA, dir, { handle: 1, priority: 1, ...opts })?.progId, id('tc_pass'));
      tcDetach(veth.ifA, dir, { handle: 1, priority: 1, ...opts });
      assert.equal(tcQuery(veth.ifA, dir, { handle: 1, priority: 1, ...opts }), undefined);
    }
    tcHookDestroy(veth.ifA, 'both', opts); // our own namespace: nobody else uses this qdisc
  });
});
