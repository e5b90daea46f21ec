/**
 * The benchmark baselines of bpf/bench.bpf.c decide what they say: the minimal limiters (fine and
 * coarse clock) pass `minimal_limit` packets of a source in its second and drop the rest, with a map
 * sized by the benchmark; the floors pass a source they hold no state for. Through the real kernel.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ObjectSpec } from '../../src/ebpf';
import { BENCH_OBJECT, XDP_DROP, XDP_PASS } from '../lib/datapath';
import { pkt } from '../lib/packet';

const frame = (i: number): Buffer => pkt().eth().ipv4({ src: `10.60.${i >> 8}.${i & 255}`, dst: '198.51.100.1' }).udp({ sport: 1, dport: 53 }).build();

for (const prog of ['bench_minimal', 'bench_minimal_coarse']) {
  test(`${prog}: ${100} packets a source, then drops; every source of a run has its state`, async () => {
    const spec = ObjectSpec.open(BENCH_OBJECT).setConstants({ minimal_limit: 100 }).setMaxEntries('minimal_map', 4096);
    const coll = await spec.load();
    spec.close();
    try {
      const p = coll.program(prog);
      const verdicts = new Map<number, number>();
      for (let i = 0; i < 150; i++) {
        const r = await p.run(frame(1));
        verdicts.set(r.retval, (verdicts.get(r.retval) ?? 0) + 1);
      }
      assert.deepEqual([verdicts.get(XDP_PASS), verdicts.get(XDP_DROP)], [100, 50]);
      for (let i = 0; i < 3000; i++) await p.run(frame(1000 + i));
      let n = 0;
      for (const _ of coll.map('minimal_map').keys()) n++;
      assert.equal(n, 3001, 'a map sized for the run evicts nothing');
    } finally {
      coll.close();
    }
  });
}

test('the floors pass a source they hold no state for', async () => {
  const coll = await ObjectSpec.open(BENCH_OBJECT).load();
  try {
    for (const prog of ['bench_floor', 'bench_floor_coarse']) assert.equal((await coll.program(prog).run(frame(2))).retval, XDP_PASS);
  } finally {
    coll.close();
  }
});
