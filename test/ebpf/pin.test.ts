/** Pins in bpffs and handles by id; everything under a per-run directory that is always removed. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpfError, BpfMap, type Collection, Link, ObjectSpec, Program } from '../../src/ebpf';
import { fixture, frame, leftovers, pinDir, removePinDir, runId, u32, u64, XDP } from './helpers';

describe('pins', () => {
  let coll: Collection;
  let dir: string;

  before(async () => {
    dir = pinDir('pins');
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.load();
  });
  after(() => {
    coll?.close();
    if (dir) removePinDir(dir);
    assert.deepEqual(leftovers(), [], `nothing of ${runId} stays behind`);
  });

  it('a pinned program outlives its fd and comes back by path and by id', async () => {
    const path = join(dir, 'xdp_tiny');
    const prog = coll.program('xdp_tiny');
    prog.pin(path);
    const id = prog.info().id;
    using again = Program.fromPin(path);
    assert.equal(again.info().id, id);
    assert.equal(again.name, 'xdp_tiny');
    assert.equal((await again.run(frame(0xff))).retval, XDP.DROP);
    using byId = Program.fromId(id);
    assert.equal(byId.info().tag, prog.info().tag);
  });

  it('a pinned map shares its state with the original', () => {
    const path = join(dir, 'by_word');
    const map = coll.map('by_word');
    map.pin(path);
    using again = BpfMap.fromPin(path);
    assert.deepEqual(
      { name: again.name, type: again.type, keySize: again.keySize, valueSize: again.valueSize, maxEntries: again.maxEntries },
      { name: map.name, type: map.type, keySize: map.keySize, valueSize: map.valueSize, maxEntries: map.maxEntries },
    );
    again.update(u32(42), u64(4242));
    assert.equal(map.lookup(u32(42))?.readBigUInt64LE(0), 4242n);
    using ro = BpfMap.fromPin(path, { readOnly: true });
    assert.equal(ro.lookup(u32(42))?.readBigUInt64LE(0), 4242n);
    assert.throws(() => ro.update(u32(1), u64(1)), (e: BpfError) => e.errnoName === 'EPERM');
    using byId = BpfMap.fromId(map.info().id);
    assert.equal(byId.lookup(u32(42))?.readBigUInt64LE(0), 4242n);
  });

  it('a pin of another kind is refused, and its fd closed', () => {
    const path = join(dir, 'a_map');
    coll.map('counters').pin(path);
    assert.throws(() => Program.fromPin(path), /is a BPF map, not a prog/);
    assert.throws(() => Link.fromPin(path), /is a BPF map, not a link/);
    coll.program('xdp_pass').pin(join(dir, 'a_prog'));
    assert.throws(() => BpfMap.fromPin(join(dir, 'a_prog')), /is a BPF prog, not a map/);
  });

  it('pinning over an existing path fails with EEXIST; a missing pin with ENOENT', () => {
    const path = join(dir, 'twice');
    coll.program('xdp_pass').pin(path);
    assert.throws(() => coll.program('xdp_pass').pin(path), (e: BpfError) => e instanceof BpfError && e.errnoName === 'EEXIST' && e.op === 'bpf_obj_pin');
    assert.throws(() => Program.fromPin(join(dir, 'missing')), (e: BpfError) => e.errnoName === 'ENOENT' && e.op === 'bpf_obj_get');
    assert.ok(existsSync(path));
  });
});
