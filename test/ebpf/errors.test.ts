/** Error classes and their mapping from native errors. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { BpfError, ErrorCode, NotSupportedError, summarizeVerifierLog, VerifierError } from '../../src/ebpf';
import { fromNative } from '../../src/ebpf/errors';
import { native } from '../../src/ebpf/native';
import { fixture } from './helpers';

const nativeError = (code: string, errno: number, syscall: string, extra: object = {}): Error =>
  Object.assign(new Error(`${syscall}: failed (${code})`), { code, errno, syscall, ...extra });

describe('errors', () => {
  it('summarizes a verifier log by its last meaningful line', () => {
    const log = [
      '0: R1=ctx() R10=fp0',
      '0: (61) r1 = *(u32 *)(r1 +0)          ; R1=pkt(r=0)',
      '1: (71) r1 = *(u8 *)(r1 +100)',
      'invalid access to packet, off=100 size=1, R1(id=0,off=100,r=0)',
      'R1 offset is outside of the packet',
      'processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
      '',
    ].join('\n');
    assert.deepEqual(summarizeVerifierLog(log), { summary: 'R1 offset is outside of the packet', omitted: 4 });
    assert.equal(summarizeVerifierLog('').omitted, 0);
  });

  it('maps errno to classes with stable codes', () => {
    const ns = fromNative(nativeError('EOPNOTSUPP', 95, 'bpf_link_create'));
    assert.ok(ns instanceof NotSupportedError);
    assert.equal(ns.code, ErrorCode.NotSupported);
    assert.ok(fromNative(nativeError('ENOTSUPP', 524, 'bpf_map_lookup_batch')) instanceof NotSupportedError);
    const plain = fromNative(nativeError('ENOENT', 2, 'bpf_obj_get', { libbpfLog: 'libbpf: something\n' }));
    assert.ok(plain instanceof BpfError && !(plain instanceof NotSupportedError));
    assert.equal(plain.code, ErrorCode.Bpf);
    assert.equal(plain.errno, 2);
    assert.equal(plain.errnoName, 'ENOENT');
    assert.equal(plain.op, 'bpf_obj_get');
    assert.match(plain.message, /bpf_obj_get.*\(libbpf: something\)/);
    const v = fromNative(nativeError('EACCES', 13, 'bpf_object__load', { log: 'a\nb\nlast\n', program: 'p' }));
    assert.ok(v instanceof VerifierError);
    assert.equal(v.message, "load program 'p': EACCES: last (2 lines omitted, see .log)");
    const other = new Error('not native');
    assert.equal(fromNative(other), other);
  });

  it('native errors carry errno name, number and the failing call', () => {
    assert.throws(() => native().mapLookupElem(987654, Buffer.alloc(4), 8), (e: BpfError) => {
      assert.ok(e instanceof BpfError);
      assert.equal(e.errnoName, 'EBADF');
      assert.equal(e.errno, 9);
      assert.equal(e.op, 'bpf_map_lookup_elem');
      assert.match(e.message, /^bpf_map_lookup_elem: Bad file descriptor \(EBADF\)/);
      return true;
    });
  });

  it('without privileges, a load is a PermissionError that says to run as root', (t) => {
    // A child process as nobody, without capabilities. Skipped where setpriv cannot do that.
    const script = `
      const { ObjectSpec } = require(${JSON.stringify(require.resolve('../../src/ebpf'))});
      ObjectSpec.open(${JSON.stringify(fixture('tiny'))}).load().then(
        () => console.log(JSON.stringify({ loaded: true })),
        (e) => console.log(JSON.stringify({ name: e.name, code: e.code, errnoName: e.errnoName, message: e.message })));`;
    let out: string;
    try {
      out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '-e', script], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      return t.skip(`cannot run as nobody: ${(e as Error).message.split('\n')[0]}`);
    }
    const r = JSON.parse(out.trim()) as { loaded?: boolean; name?: string; code?: string; errnoName?: string; message?: string };
    assert.notEqual(r.loaded, true, 'an unprivileged load must fail');
    assert.equal(r.name, 'PermissionError');
    assert.equal(r.code, ErrorCode.Permission);
    assert.equal(r.errnoName, 'EPERM');
    assert.match(r.message ?? '', /Run as root/);
  });
});
