/**
 * `npm run reliability`: issue 11's fault-injection suite, full size (≥ 100 seeded kills per
 * command), its results in bench/results/reliability.json and its table in docs/reliability.md.
 *
 *   npm run reliability                       # full run, a fresh seed (printed)
 *   npm run reliability -- --seed 12345       # replay the kill points of a run
 *   npm run reliability -- --kills 5 --only "deny add,two CLIs at once" --no-write
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../lib/datapath';
import { runId } from '../lib/netns';
import { writeReport } from './report';
import { COMMANDS, FAULTS, runSuite } from './suite';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string): string | undefined => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const seed = opt('--seed') !== undefined ? Number(opt('--seed')) : Math.floor(Math.random() * 2 ** 31);
  const kills = Number(opt('--kills') ?? 100);
  const only = opt('--only')?.split(',').map((s) => s.trim());
  const write = !argv.includes('--no-write');
  console.log(`reliability: seed ${seed} (replay with --seed ${seed}), ${kills} kills per command`);
  const r = await runSuite({
    seed, killsPerCommand: kills, full: kills >= 100,
    labId: `${runId().slice(0, 7)}r`,
    commands: only ? COMMANDS.filter((c) => only.includes(c)) : COMMANDS,
    faults: only ? FAULTS.filter((f) => only.includes(f)) : FAULTS,
    log: (l) => console.log(l),
    // Each case's row as it ends, so that an interrupted run keeps what it measured.
    onRow: (partial) => writeFileSync(join(REPO, 'bench', 'results', 'reliability-partial.json'), JSON.stringify(partial, null, 2) + '\n'),
  });
  const out = JSON.stringify(r, null, 2) + '\n';
  writeFileSync(join(REPO, 'bench', 'results', write ? 'reliability.json' : 'reliability-last.json'), out);
  if (write) writeReport();
  const failed = r.rows.filter((x) => !x.ok);
  console.log(`done in ${r.seconds} s: ${r.rows.length - failed.length} of ${r.rows.length} cases as the design promises` +
    (failed.length ? `; failing: ${failed.map((x) => `${x.case}${x.expectedFail ? ` (expected until ${x.expectedFail})` : ''}`).join(', ')}` : ''));
  process.exitCode = failed.some((x) => !x.expectedFail) ? 1 : 0;
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
