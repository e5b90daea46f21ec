/**
 * Fuzz: at least 1,000,000 random and mutated frames per run through BPF_PROG_TEST_RUN, checked
 * against invariants that need no second parser (test/fuzz/lib.ts lists them). SLUICE_FUZZ_FRAMES
 * sets the number of frames, SLUICE_FUZZ_SEED replays a run; a failure prints its seed, the frame
 * and the `npm run fuzz` command that replays it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertProgramsUnloaded, PROD_OBJECT, TestDatapath } from '../lib/datapath';
import { Fuzzer } from './lib';

const FRAMES = Number(process.env.SLUICE_FUZZ_FRAMES ?? 1_000_000);
const SEED = Number(process.env.SLUICE_FUZZ_SEED ?? Date.now() % 1_000_000_007);
/** The production object, on the kernel's clock: what is attached must not fault either. */
const PROD_FRAMES = Math.min(FRAMES, 100_000);

let dp: TestDatapath;
let prod: TestDatapath;
before(async () => {
  dp = await TestDatapath.load({ maxEntries: 1 << 18, maxRules: 16 });
  prod = await TestDatapath.load({ object: PROD_OBJECT, maxEntries: 1 << 18, maxRules: 16 });
});
after(async () => {
  dp?.close();
  prod?.close();
  await assertProgramsUnloaded();
});

test(`${FRAMES} fuzzed frames hold every invariant (seed ${SEED})`, async (t) => {
  const r = await new Fuzzer(dp, { frames: FRAMES, seed: SEED, log: (l) => t.diagnostic(l) }).run();
  t.diagnostic(`${r.frames} frames run (${r.refused} shorter than 14 bytes refused, ${r.probes} probed alone, ${r.padded} padded copies run too, ${r.readable} with a readable source), ${r.passed} passed, ${r.keys} keys; ${r.seconds.toFixed(1)} s, ${r.framesPerSecond} frames/s`);
  t.diagnostic(`reasons: ${Object.entries(r.reasons).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  assert.equal(r.frames + r.refused, FRAMES);
  // A run that never reaches some outcome would not test much.
  for (const what of ['global NON_IP', 'global TRUNCATED', 'global BAD_IPV4', 'global BAD_IPV6', 'global VLAN_DEPTH', 'global TINY_FRAG', 'global EXT_CHAIN', 'global FRAG_ORPHAN', 'global UNCERTAIN', 'global MGMT', 'global DENYLIST', 'global ALLOWLIST', 'rule 0 PASS', 'rule 0 LIMIT']) {
    if (FRAMES >= 100_000) assert.ok((r.reasons[what] ?? 0) > 0, `the run reached ${what}`);
  }
  for (const id of [1, 2, 3, 4, 5, 6, 7]) if (FRAMES >= 100_000) assert.ok((r.reasons[`rule ${id} PASS`] ?? 0) > 0, `rule ${id} passed something`);
});

test(`${PROD_FRAMES} fuzzed frames through the production object (seed ${SEED})`, async (t) => {
  const r = await new Fuzzer(prod, { frames: PROD_FRAMES, seed: SEED, kernelClock: true, command: 'npm run fuzz -- --production' }).run();
  t.diagnostic(`${r.frames} frames run, ${r.probes} probed alone; ${r.seconds.toFixed(1)} s, ${r.framesPerSecond} frames/s`);
  assert.equal(r.frames + r.refused, PROD_FRAMES);
});
