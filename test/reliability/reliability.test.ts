/**
 * Issue 11's fault-injection suite, CI-sized: a few seeded SIGKILLs of each command (`up`, `set`,
 * `policy apply`, `deny add`, the daemon) and the quicker faults, each in its own mount namespace
 * with a private bpffs and state tmpfs, while a paced flood runs and the lab's receiver counts.
 * Every case must hold what the design promises (suite.ts says what is measured). The full run,
 * with at least 100 kills per command and every fault, is `npm run reliability`; its table is
 * docs/reliability.md. Cases known to fail on main (suite.ts, KNOWN_FAILING) are left out here.
 *
 * SLUICE_RELIABILITY_SEED replays the kill points of a run (the seed is printed).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { labDown } from '../../src/lab';
import { runId } from '../lib/netns';
import { table } from './report';
import { COMMANDS, KNOWN_FAILING, runSuite, type FaultName } from './suite';

const RUN = runId();
const LAB = `${RUN.slice(0, 7)}${RUN.endsWith('q') ? 'w' : 'q'}`;
const KILLS = 2;
// The quick faults; an invalid reload is also in test/daemon (daemon.test.ts), so CI leaves it to
// the full run and keeps this file near 90 s.
const FAULTS: FaultName[] = ['prog pin removed', 'map pin removed', 'interface down and up'];

test(`fault injection (CI size): ${KILLS} seeded kills per command and ${FAULTS.length} faults, each in its own mount namespace`, { timeout: 240_000 }, async (t) => {
  const seed = process.env['SLUICE_RELIABILITY_SEED'] ? Number(process.env['SLUICE_RELIABILITY_SEED']) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`seed ${seed} (replay: SLUICE_RELIABILITY_SEED=${seed})`);
  try {
    const res = await runSuite({ seed, killsPerCommand: KILLS, labId: LAB, quick: true, commands: COMMANDS, faults: FAULTS.filter((f) => !KNOWN_FAILING[f]) });
    t.diagnostic(`\n${table(res)}`);
    for (const r of res.rows) {
      assert.ok(!KNOWN_FAILING[r.case], `${r.case} is known to fail and must stay out of CI`);
      assert.ok(r.ok, `${r.case} (seed ${seed}): ${r.failures.join('; ')}`);
      if (r.kills) assert.ok(r.kills.before + r.kills.during + r.kills.after >= KILLS, `${r.case}: ${KILLS} kills landed`);
    }
  } finally {
    await labDown({ id: LAB });
  }
});
