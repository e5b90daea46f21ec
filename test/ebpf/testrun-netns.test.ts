/**
 * progTestRun's netns option (native/testrun.c): the thread that runs the test enters the namespace
 * given and comes back, as the lab's live-frame runs need (their redirect target is resolved in the
 * running thread's namespace; test/lab and test/stack cover that path end to end). Until the lab's
 * own copy of the live test run (native/lab.c) was folded in here, the option did not exist and was
 * ignored: a namespace that does not exist still ran.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type Collection, ObjectSpec } from '../../src/ebpf';
import { native } from '../../src/ebpf/native';
import { fixture, frame, runId, XDP } from './helpers';

describe('progTestRun in a network namespace', () => {
  let coll: Collection;
  let fd: number;

  before(async () => {
    using spec = ObjectSpec.open(fixture('tiny'));
    coll = await spec.load();
    fd = coll.program('xdp_tiny').fd;
  });
  after(() => coll?.close());

  it("runs in the namespace given, with the same verdicts, and reports the syscall's wall time", async () => {
    for (const netns of [undefined, null, '/proc/self/ns/net']) {
      const drop = await native().progTestRun(fd, frame(0xff), netns === undefined ? {} : { netns });
      const pass = await native().progTestRun(fd, frame(0x01), netns === undefined ? {} : { netns });
      assert.equal(drop.retval, XDP.DROP, `netns ${netns}`);
      assert.equal(pass.retval, XDP.PASS, `netns ${netns}`);
      assert.equal(typeof drop.elapsedNs, 'number');
      assert.ok(drop.elapsedNs > 0, `elapsedNs ${drop.elapsedNs}`);
    }
    const onCpu = await native().progTestRunOnCpu(fd, frame(0xff), { netns: '/proc/self/ns/net' }, 0);
    assert.equal(onCpu.retval, XDP.DROP);
  });

  it('a namespace that cannot be entered fails the run, naming it, and runs nothing', async () => {
    const missing = `/run/netns/${runId}-missing`;
    await assert.rejects(native().progTestRun(fd, frame(0xff), { netns: missing }), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /ENOENT/);
      assert.ok(e.message.includes(missing), e.message);
      return true;
    });
    // The calling thread is where it was: the next run, without a namespace, still decides.
    assert.equal((await native().progTestRun(fd, frame(0x01), {})).retval, XDP.PASS);
  });

  it('a netns that is not a string is a TypeError', () => {
    assert.throws(() => native().progTestRun(fd, frame(0xff), { netns: 7 as unknown as string }), TypeError);
  });
});
