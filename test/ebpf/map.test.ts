/** BpfMap through the real kernel: elements, per-CPU values, iteration, batches. */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { type BpfError, BufferSizeError, type Collection, ObjectSpec, UpdateFlags, numPossibleCpus } from '../../src/ebpf';
import { fixture, frame, u32, u64 } from './helpers';

const lpmKey = (prefixlen: number, a: number, b: number, c: number, d: number): Buffer => {
  const k = Buffer.alloc(8);
  k.writeUInt32LE(prefixlen, 0);
  k.set([a, b, c, d], 4);
  return k;
};

describe('BpfMap', () => {
  let coll: Collection;

  before(async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.setMaxEntries('by_word', 4096).load();
  });
  after(() => coll?.close());
  beforeEach(() => {
    const byWord = coll.map('by_word');
    for (const chunk of byWord.lookupBatch({ delete: true })) void chunk;
  });

  it('updates, looks up and deletes', () => {
    const m = coll.map('by_word');
    assert.equal(m.lookup(u32(1)), undefined);
    m.update(u32(1), u64(10));
    assert.equal(m.lookup(u32(1))?.readBigUInt64LE(0), 10n);
    assert.throws(() => m.update(u32(1), u64(11), UpdateFlags.NoExist), (e: BpfError) => e.errnoName === 'EEXIST');
    m.update(u32(1), u64(12), UpdateFlags.Exist);
    assert.equal(m.lookupAndDelete(u32(1))?.readBigUInt64LE(0), 12n);
    assert.equal(m.delete(u32(1)), false, 'already gone');
    m.update(u32(2), u64(1));
    assert.equal(m.delete(u32(2)), true);
  });

  it('sees what the program wrote', async () => {
    const m = coll.map('by_word');
    const pkt = frame(0x31);
    await coll.program('xdp_tiny').run(pkt, { repeat: 5 });
    assert.equal(m.lookup(pkt.subarray(0, 4))?.readBigUInt64LE(0), 5n);
  });

  it('iterates keys and entries', () => {
    const m = coll.map('by_word');
    for (let i = 0; i < 10; i++) m.update(u32(i), u64(i * 100));
    assert.deepEqual([...m.keys()].map((k) => k.readUInt32LE(0)).sort((a, b) => a - b), [...Array(10).keys()]);
    const entries = new Map([...m].map(([k, v]) => [k.readUInt32LE(0), v.readBigUInt64LE(0)]));
    assert.equal(entries.size, 10);
    assert.equal(entries.get(7), 700n);
  });

  it('reads in batches and drains with delete', () => {
    const m = coll.map('by_word');
    for (let i = 0; i < 1000; i++) m.update(u32(i), u64(i));
    const chunks = [...m.lookupBatch({ batchSize: 64 })];
    assert.ok(chunks.length >= 1000 / 64, `${chunks.length} chunks`);
    assert.ok(chunks.every((c) => c.length <= 64));
    const seen = new Map(chunks.flat().map(([k, v]) => [k.readUInt32LE(0), v.readBigUInt64LE(0)]));
    assert.equal(seen.size, 1000);
    for (const [k, v] of seen) assert.equal(BigInt(k), v);
    const drained = [...m.lookupBatch({ batchSize: 100, delete: true })].flat();
    assert.equal(drained.length, 1000);
    assert.equal([...m.keys()].length, 0);
  });

  it('deletes in a batch', () => {
    const m = coll.map('by_word');
    for (let i = 0; i < 5; i++) m.update(u32(i), u64(i));
    assert.equal(m.deleteBatch([u32(0), u32(1), u32(2)]), 3);
    assert.deepEqual([...m.keys()].map((k) => k.readUInt32LE(0)).sort(), [3, 4]);
  });

  it('falls back to key-by-key iteration where batches are not supported (LPM trie)', () => {
    const m = coll.map('prefixes');
    m.update(lpmKey(24, 192, 0, 2, 0), u32(1));
    m.update(lpmKey(16, 198, 51, 0, 0), u32(2));
    m.update(lpmKey(32, 203, 0, 113, 7), u32(3));
    const chunks = [...m.lookupBatch({ batchSize: 2 })];
    assert.deepEqual(chunks.map((c) => c.length), [2, 1]);
    assert.deepEqual(chunks.flat().map(([, v]) => v.readUInt32LE(0)).sort(), [1, 2, 3]);
    assert.equal([...m.lookupBatch({ delete: true })].flat().length, 3);
    assert.equal([...m.keys()].length, 0);
  });

  it('reads and writes per-CPU values', () => {
    const m = coll.map('counters');
    const cpus = numPossibleCpus();
    assert.equal(m.isPerCpu, true);
    assert.equal(m.valueBufferSize, 8 * cpus);
    m.update(u32(3), Array.from({ length: cpus }, (_, cpu) => u64(cpu + 1)));
    assert.deepEqual(m.lookupPerCpu(u32(3)).map((b) => b.readBigUInt64LE(0)), Array.from({ length: cpus }, (_, cpu) => BigInt(cpu + 1)));
    assert.equal(m.lookup(u32(3))?.length, 8 * cpus, 'raw: all slots');
    assert.throws(() => m.update(u32(3), [u64(1)]), /one value per possible CPU/);
    assert.throws(() => m.update(u32(3), u64(1)), BufferSizeError);
    const batch = [...m.lookupBatch()].flat();
    assert.equal(batch.length, 4, 'array: every index');
    assert.deepEqual(m.splitPerCpu(batch[3]![1]).map((b) => b.readBigUInt64LE(0)), Array.from({ length: cpus }, (_, cpu) => BigInt(cpu + 1)));
    assert.throws(() => coll.map('by_word').lookupPerCpu(u32(0)), /not a per-CPU map/);
  });

  it('reports its shape from the kernel', () => {
    const info = coll.map('by_word').info();
    assert.equal(info.name, 'by_word');
    assert.equal(info.keySize, 4);
    assert.equal(info.valueSize, 8);
    assert.equal(info.maxEntries, 4096);
  });
});
