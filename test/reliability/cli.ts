/**
 * `npm run reliability`: issue 11's fault-injection suite, full size (≥ 100 seeded kills per
 * command), its results in bench/results/reliability.json and its table in docs/reliability.md.
 *
 *   npm run reliability                       # full run, a fresh seed (printed)
 *   npm run reliability -- --seed 12345       # replay the kill points of a run
 *   npm run reliability -- --kills 5 --only "deny add,two CLIs at once" --no-write
 *   npm run reliability -- --only up --merge  # re-run one case into the results of a full run
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
  // --merge: this run's rows replace the same cases of the results file (e.g. one case re-run).
  const file = join(REPO, 'bench', 'results', 'reliability.json');
  if (argv.includes('--merge') && existsSync(file)) {
    const prev = JSON.parse(readFileSync(file, 'utf8')) as typeof r;
    const mine = new Set(r.rows.map((x) => x.case));
    const rows = prev.rows.map((x) => (mine.has(x.case) ? r.rows.find((y) => y.case === x.case)! : x));
    for (const x of r.rows) if (!prev.rows.some((y) => y.case === x.case)) rows.push(x);
    r.rows = rows;
    r.notes = [...(prev.notes ?? []), `rows ${[...mine].join(', ')} from a run of ${r.date.slice(0, 16).replace('T', ' ')} UTC, seed ${seed}`];
    r.seed = prev.seed;
    r.date = prev.date;
    r.seconds = prev.seconds + r.seconds;
  }
  const out = JSON.stringify(r, null, 2) + '\n';
  writeFileSync(join(REPO, 'bench', 'results', write ? 'reliability.json' : 'reliability-last.json'), out);
  if (write) writeReport();
  const failed = r.rows.filter((x) => !x.ok);
  console.log(`done in ${r.seconds} s: ${r.rows.length - failed.length} of ${r.rows.length} cases as the design promises` +
    (failed.length ? `; failing: ${failed.map((x) => `${x.case}${x.expectedFail ? ` (expected until ${x.expectedFail})` : ''}`).join(', ')}` : ''));
  process.exitCode = failed.some((x) => !x.expectedFail) ? 1 : 0;
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
