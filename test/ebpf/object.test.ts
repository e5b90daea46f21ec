/** ObjectSpec → Collection → Program.run, through the real kernel. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import {
  BpfError,
  BufferSizeError,
  ClosedError,
  type Collection,
  ErrorCode,
  MapType,
  ObjectSpec,
  ProgramType,
  VerifierError,
  enableStats,
  numPossibleCpus,
} from '../../src/ebpf';
import { fixture, frame, u32, XDP } from './helpers';

describe('ObjectSpec', () => {
  it('lists programs and maps before load', () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    assert.deepEqual(spec.programs.map((p) => [p.name, p.section, p.type]), [
      ['xdp_tiny', 'xdp', ProgramType.Xdp],
      ['xdp_pass', 'xdp', ProgramType.Xdp],
      ['tc_pass', 'tc', ProgramType.SchedCls],
    ]);
    const counters = spec.map('counters');
    assert.deepEqual(counters && { ...counters }, {
      name: 'counters', type: MapType.PerCpuArray, keySize: 4, valueSize: 8, maxEntries: 4, flags: 0, internal: false,
    });
    assert.equal(spec.map('.rodata')?.internal, true);
    assert.deepEqual(spec.variables().map((v) => [v.name, v.offset, v.size]), [['drop_byte', 0, 1], ['unused_knob', 4, 4]]);
    assert.deepEqual([...spec.rodata()], [0xff, 0, 0, 0, 7, 0, 0, 0]);
  });

  it('rejects constants that do not exist or do not fit, naming each', () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    assert.throws(() => spec.setConstants({ nope: 1, drop_byte: 256, unused_knob: 1.5 }), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /'nope' is not a .rodata variable/);
      assert.match(e.message, /'drop_byte': 256 does not fit 1 byte/);
      assert.match(e.message, /'unused_knob': 1.5 is not an integer/);
      return true;
    });
    assert.throws(() => spec.setRodata(Buffer.alloc(3)), BufferSizeError);
    spec.setConstants({ drop_byte: 0x10, unused_knob: 0xffffffff });
    assert.deepEqual([...spec.rodata()], [0x10, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  });

  it('a missing file is ENOENT from bpf_object__open_file', () => {
    assert.throws(() => ObjectSpec.open('/nonexistent/x.bpf.o'), (e: BpfError) =>
      e instanceof BpfError && e.errnoName === 'ENOENT' && e.op === 'bpf_object__open_file');
  });

  it('is closed after close()', () => {
    const spec = ObjectSpec.open(fixture('tiny'));
    spec.close();
    assert.throws(() => spec.programs, (e: Error) => e instanceof ClosedError && (e as ClosedError).code === ErrorCode.Closed);
  });
});

describe('Collection and Program.run', () => {
  let coll: Collection;

  before(async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.setMaxEntries('by_word', 2048).load();
  });
  after(() => coll?.close());

  it('has every program and map, with their fds', () => {
    assert.deepEqual([...coll.programs.keys()].sort(), ['tc_pass', 'xdp_pass', 'xdp_tiny']);
    assert.ok(coll.maps.has('by_word') && coll.maps.has('counters'));
    assert.equal(coll.map('by_word').maxEntries, 2048);
    assert.equal(coll.map('by_word').info().maxEntries, 2048, 'setMaxEntries reached the kernel');
    assert.equal(coll.map('.rodata').type, MapType.Array);
    const info = coll.program('xdp_tiny').info();
    assert.equal(info.name, 'xdp_tiny');
    assert.equal(info.type, ProgramType.Xdp);
    assert.match(info.tag, /^[0-9a-f]{16}$/);
    assert.ok(info.verifiedInsns > 0);
    assert.equal(info.mapIds.length, info.nrMapIds);
  });

  it('drops by the default knob, passes otherwise', async () => {
    const prog = coll.program('xdp_tiny');
    assert.equal((await prog.run(frame(0xff))).retval, XDP.DROP);
    assert.equal((await prog.run(frame(0x01))).retval, XDP.PASS);
  });

  it('returns the packet as the program left it', async () => {
    const prog = coll.program('xdp_tiny');
    const rewritten = await prog.run(frame(0xee));
    assert.equal(rewritten.retval, XDP.PASS);
    assert.equal(rewritten.data.length, 64);
    assert.equal(rewritten.data[1], 0x42);
    const grown = await prog.run(frame(0xdd));
    assert.equal(grown.data.length, 72, 'bpf_xdp_adjust_tail(+8) is visible in the output');
    const input = frame(0x01);
    assert.deepEqual((await prog.run(input)).data, input);
  });

  it('runs a batch of frames, one test run each, with a result per frame', async () => {
    const prog = coll.program('xdp_tiny');
    const counters = coll.map('counters');
    const sum = (): bigint => counters.lookupPerCpu(u32(0)).reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
    const before = sum();
    const r = await prog.runBatch([frame(0xff), frame(0x01), Buffer.alloc(10), frame(0xff)]);
    // A frame shorter than Ethernet fails on its own (-EINVAL) and the others still run.
    assert.deepEqual([...r], [XDP.DROP, XDP.PASS, -22, XDP.DROP]);
    assert.equal(sum() - before, 3n, 'the program ran once for each frame it was given');
    assert.deepEqual([...(await prog.runBatch([]))], []);
  });

  it('repeats and reports an average duration', async () => {
    const counters = coll.map('counters');
    const sum = (): bigint => counters.lookupPerCpu(u32(0)).reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
    const before = sum();
    const r = await coll.program('xdp_tiny').run(frame(0x01), { repeat: 1000 });
    assert.equal(r.retval, XDP.PASS);
    assert.ok(r.durationNs >= 0 && r.durationNs < 1e6, `duration ${r.durationNs} ns`);
    assert.equal(sum() - before, 1000n);
  });

  it('takes and returns a context', async () => {
    const ctx = Buffer.alloc(24); // struct xdp_md; data_end must be the packet length
    ctx.writeUInt32LE(64, 4);
    const r = await coll.program('xdp_pass').run(frame(0x01), { ctx });
    assert.equal(r.retval, XDP.PASS);
    assert.equal(r.ctx?.length, 24);
    assert.equal(r.ctx?.readUInt32LE(4), 64);
  });

  it('runs on two CPUs at once, each pinned', async (t) => {
    if (numPossibleCpus() < 2) return t.skip('needs two CPUs');
    const prog = coll.program('xdp_tiny');
    const counters = coll.map('counters');
    const byWord = coll.map('by_word');
    const pkt = frame(0x07);
    const key = pkt.subarray(0, 4);
    byWord.update(key, Buffer.alloc(8)); // present from the start: every increment is an atomic add
    const before = counters.lookupPerCpu(u32(0)).map((b) => b.readBigUInt64LE(0));
    const N = 20_000;
    const results = await Promise.all([prog.runOnCpu(0, pkt, { repeat: N }), prog.runOnCpu(1, pkt, { repeat: N })]);
    assert.deepEqual(results.map((r) => r.retval), [XDP.PASS, XDP.PASS]);
    const afterRun = counters.lookupPerCpu(u32(0)).map((b) => b.readBigUInt64LE(0));
    assert.equal(afterRun[0]! - before[0]!, BigInt(N), 'CPU 0 slot');
    assert.equal(afterRun[1]! - before[1]!, BigInt(N), 'CPU 1 slot');
    assert.equal(byWord.lookup(key)?.readBigUInt64LE(0), BigInt(2 * N), 'shared entry, both CPUs');
  });

  it('counts run time while statistics are on', async () => {
    const prog = coll.program('xdp_pass');
    const before = prog.info().runCnt;
    {
      using _stats = enableStats();
      await prog.run(frame(1), { repeat: 100 });
    }
    const info = prog.info();
    assert.equal(info.runCnt - before, 100);
    assert.ok(info.runTimeNs > 0);
    await prog.run(frame(1), { repeat: 100 });
    assert.equal(prog.info().runCnt - before, 100, 'not counted once statistics are off');
  });

  it('refuses a CPU that does not exist', async () => {
    await assert.rejects(() => coll.program('xdp_pass').runOnCpu(1000, frame(1)), (e: BpfError) => e.op === 'pthread_setaffinity_np' && e.errnoName === 'EINVAL');
  });

  it('checks sizes before the kernel sees them', () => {
    const byWord = coll.map('by_word');
    assert.throws(() => byWord.lookup(Buffer.alloc(3)), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.ok(e instanceof BufferSizeError);
      assert.match(e.message, /by_word.*key must be 4 bytes, got 3/);
      return true;
    });
    assert.throws(() => byWord.update(u32(1), Buffer.alloc(4)), /value must be 8 bytes, got 4/);
  });

  it('a closed program refuses to run', async () => {
    const p = coll.program('xdp_pass').clone();
    p.close();
    assert.throws(() => p.fd, ClosedError);
    await assert.rejects(() => p.run(frame(1)), ClosedError);
  });
});

describe('load-time constants', () => {
  it('a changed knob changes behaviour; the spec loads again', async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    {
      using c = await spec.load();
      assert.equal((await c.program('xdp_tiny').run(frame(0xff))).retval, XDP.DROP);
    }
    spec.setConstants({ drop_byte: 0x01 });
    using c = await spec.load();
    const prog = c.program('xdp_tiny');
    assert.equal((await prog.run(frame(0xff))).retval, XDP.PASS);
    assert.equal((await prog.run(frame(0x01))).retval, XDP.DROP);
    assert.equal(c.map('.rodata').lookup(u32(0))?.[0], 0x01, 'the kernel sees the knob in .rodata');
  });

  it('autoload off leaves a program out', async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    spec.setAutoload('tc_pass', false);
    using c = await spec.load();
    assert.deepEqual([...c.programs.keys()].sort(), ['xdp_pass', 'xdp_tiny']);
  });
});

describe('ownership', () => {
  it('leaves no fd behind after load, run and close', async () => {
    const openFds = (): number => readdirSync('/proc/self/fd').length;
    const cycle = async (): Promise<void> => {
      using spec = ObjectSpec.open(fixture('tiny'));
      using c = await spec.load();
      await c.program('xdp_tiny').runOnCpu(0, frame(1));
      [...c.map('by_word').lookupBatch()].flat();
    };
    await cycle(); // warm-up: libbpf probes the kernel once
    const before = openFds();
    for (let i = 0; i < 3; i++) await cycle();
    assert.equal(openFds(), before);
  });
});

describe('VerifierError', () => {
  it('carries the log, a one-line summary and the program', async () => {
    using spec = ObjectSpec.open(fixture('bad'));
    await assert.rejects(() => spec.load(), (e: unknown) => {
      assert.ok(e instanceof VerifierError, String(e));
      assert.equal(e.code, ErrorCode.Verifier);
      assert.equal(e.program, 'xdp_bad');
      assert.equal(e.errnoName, 'EACCES');
      assert.equal(e.op, 'bpf_object__load');
      assert.match(e.log, /invalid access to packet/);
      assert.match(e.summary, /outside of the packet|invalid access to packet/);
      assert.ok(!e.message.includes('\n'), 'message is one line');
      assert.match(e.message, /^load program 'xdp_bad': EACCES: .+ \(\d+ lines omitted, see \.log\)$/);
      assert.equal(e.truncated, false);
      return true;
    });
  });

  it('grows a small log buffer until the log fits', async () => {
    using spec = ObjectSpec.open(fixture('bad'));
    const full = await spec.load().catch((e: VerifierError) => e.log);
    await assert.rejects(() => spec.load({ logSize: 256 }), (e: VerifierError) => {
      assert.equal(e.log, full);
      assert.equal(e.truncated, false);
      return true;
    });
  });

  it('says so when the log hits logSizeMax', async () => {
    using spec = ObjectSpec.open(fixture('bad'));
    await assert.rejects(() => spec.load({ logSize: 256, logSizeMax: 256 }), (e: VerifierError) => {
      assert.ok(e instanceof VerifierError);
      assert.equal(e.truncated, true);
      assert.equal(e.errnoName, 'ENOSPC');
      assert.ok(e.log.length > 0);
      assert.match(e.message, /larger logSizeMax/);
      return true;
    });
  });

  it('loads the rest once the bad program is left out', async () => {
    using spec = ObjectSpec.open(fixture('bad'));
    using c = await spec.setAutoload('xdp_bad', false).load();
    assert.equal((await c.program('xdp_ok').run(frame(0))).retval, XDP.PASS);
  });
});
