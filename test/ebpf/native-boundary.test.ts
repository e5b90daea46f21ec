/**
 * The C layer checks every buffer it hands to a map syscall against the map's own sizes (read
 * from the kernel by fd), whatever the caller says: the TypeScript layer's checks are bypassed
 * here on purpose, by calling the addon directly. At 4b64801 a short value buffer for a lookup
 * came back with the kernel's write past its end, and a short update value stored whatever
 * followed it in memory. Also: a failure to tag a new object handle frees it once (it freed it,
 * then its finalizer freed it again).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { BpfMap, type Collection, MapType, ObjectSpec, numPossibleCpus } from '../../src/ebpf';
import { native } from '../../src/ebpf/native';
import { fixture, u32, u64 } from './helpers';

const sizeError = (what: RegExp) => (e: unknown): boolean => e instanceof TypeError && what.test(e.message);

describe('native map calls check sizes in C', () => {
  let coll: Collection;
  let fd: number; // by_word: LRU hash, 4-byte keys, 8-byte values
  let pcpu: number; // counters: per-CPU array, 4-byte keys, 8-byte values per CPU

  before(async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.load();
    fd = coll.map('by_word').fd;
    pcpu = coll.map('counters').fd;
    coll.map('by_word').update(u32(1), u64(0x1122334455667788n));
  });
  after(() => coll?.close());

  it('lookup: a value buffer shorter than value_size is refused, not overrun', () => {
    assert.throws(() => native().mapLookupElem(fd, u32(1), 2), sizeError(/valueLen must be 8 bytes.*got 2/));
    assert.throws(() => native().mapLookupElem(fd, Buffer.alloc(2), 8), sizeError(/key must be 4 bytes.*got 2/));
    assert.throws(() => native().mapLookupElem(fd, null, 8), sizeError(/4-byte keys, got none/));
    assert.equal(native().mapLookupElem(fd, u32(1), 8)?.readBigUInt64LE(0), 0x1122334455667788n);
  });

  it('per-CPU lookup: one value is not enough, every possible CPU has a slot', () => {
    const cpus = numPossibleCpus();
    if (cpus > 1) assert.throws(() => native().mapLookupElem(pcpu, u32(0), 8), sizeError(new RegExp(`must be ${8 * cpus} bytes .*${cpus} possible CPUs`)));
    assert.equal(native().mapLookupElem(pcpu, u32(0), 8 * cpus)?.length, 8 * cpus);
  });

  it('update: a short value or key is refused before the kernel reads past it', () => {
    assert.throws(() => native().mapUpdateElem(fd, u32(2), Buffer.from([0xaa]), 0), sizeError(/value must be 8 bytes.*got 1/));
    assert.throws(() => native().mapUpdateElem(fd, Buffer.alloc(1), u64(1), 0), sizeError(/key must be 4 bytes/));
    assert.equal(native().mapLookupElem(fd, u32(2), 8), null, 'nothing was written');
    if (numPossibleCpus() > 1) assert.throws(() => native().mapUpdateElem(pcpu, u32(0), u64(1), 0), sizeError(/possible CPUs/));
  });

  it('delete, lookup-and-delete, get_next_key: keys and the key length asked for', () => {
    assert.throws(() => native().mapDeleteElem(fd, Buffer.alloc(3)), sizeError(/key must be 4 bytes.*got 3/));
    assert.throws(() => native().mapLookupAndDeleteElem(fd, u32(1), 4), sizeError(/valueLen must be 8/));
    assert.throws(() => native().mapGetNextKey(fd, null, 1), sizeError(/keyLen must be 4/));
    assert.throws(() => native().mapGetNextKey(fd, Buffer.alloc(1), 4), sizeError(/key must be 4 bytes/));
    assert.ok(native().mapGetNextKey(fd, null, 4), 'a first key with the right length');
  });

  it('batches: packed keys and values must be count entries of the map\'s sizes', () => {
    assert.throws(() => native().mapLookupBatch(fd, null, 2, 8, 16, {}), sizeError(/keyLen must be 4/));
    assert.throws(() => native().mapLookupBatch(fd, null, 4, 1, 16, {}), sizeError(/valueLen must be 8/));
    assert.throws(() => native().mapLookupBatch(fd, null, 4, 8, 16, { keys: Buffer.alloc(60), values: Buffer.alloc(128) }), sizeError(/must hold 16 entries \(64 and 128 bytes\), got 60 and 128/));
    const given = { keys: Buffer.alloc(64), values: Buffer.alloc(128) };
    const r = native().mapLookupBatch(fd, null, 4, 8, 16, given);
    assert.ok(r.keys === given.keys && r.values === given.values && r.count >= 1, 'the buffers given are filled');
    assert.throws(() => native().mapDeleteBatch(fd, Buffer.alloc(4), 2), sizeError(/2 keys of 4 bytes.*got 4 bytes/));
    assert.throws(() => native().mapUpdateBatch(fd, Buffer.alloc(8), Buffer.alloc(8), 2), sizeError(/values must be 2 values of 8 bytes/));
    assert.throws(() => native().mapUpdateBatch(fd, Buffer.alloc(4), Buffer.alloc(16), 2), sizeError(/keys must be 2 keys/));
    assert.equal(native().mapUpdateBatch(fd, Buffer.concat([u32(7), u32(8)]), Buffer.concat([u64(70), u64(80)]), 2), 2);
    assert.equal(coll.map('by_word').lookup(u32(8))?.readBigUInt64LE(0), 80n);
  });

  it('a map created through the binding is checked the same way', () => {
    using m = BpfMap.create({ type: MapType.LruHash, name: 'boundary', keySize: 16, valueSize: 32, maxEntries: 64 });
    assert.deepEqual([m.keySize, m.valueSize, m.maxEntries, m.name], [16, 32, 64, 'boundary']);
    assert.throws(() => native().mapUpdateElem(m.fd, Buffer.alloc(16), Buffer.alloc(31), 0), sizeError(/value must be 32 bytes.*got 31/));
    m.update(Buffer.alloc(16), Buffer.alloc(32, 1));
    assert.equal(m.lookup(Buffer.alloc(16))?.[31], 1);
  });
});

describe('objectOpenFile', () => {
  it('frees a handle once when tagging it fails (the finalizer owns it)', () => {
    // In a child: a double free aborts the process (glibc) or corrupts its heap.
    const script = `
      const { native } = require(${JSON.stringify(require.resolve('../../src/ebpf/native'))});
      const path = ${JSON.stringify(fixture('tiny'))};
      (async () => {
        for (let i = 0; i < 20; i++) {
          native().testFailNextTag();
          try { native().objectOpenFile(path); } catch (e) { if (e.code !== 'ERR_SLUICE_NAPI') throw e; }
          globalThis.gc();
          await new Promise((r) => setImmediate(r));
        }
        for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
        const h = native().objectOpenFile(path); // the addon still works
        native().objectClose(h);
        console.log('ok');
      })().catch((e) => { console.error(e); process.exit(3); });`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null, `child died by ${r.signal}: ${r.stderr.slice(-500)}`);
    assert.equal(r.status, 0, r.stderr.slice(-500));
    assert.match(r.stdout, /ok/);
  });
});
