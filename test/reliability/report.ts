/**
 * docs/reliability.md's generated part, from bench/results/reliability.json: the table sits between
 * `<!-- reliability:table -->` and `<!-- /reliability:table -->`; the rest of the page is by hand.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../lib/datapath';
import type { Results, Row } from './suite';

const DOC = join(REPO, 'docs', 'reliability.md');
const RESULTS = join(REPO, 'bench', 'results', 'reliability.json');
const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const tallies = (m: Record<string, number>): string => Object.entries(m).map(([k, v]) => `${k} ×${v}`).join(', ') || '–';

function line(r: Row): string {
  const k = r.kills;
  const kills = k ? `${k.before} / ${k.during} / ${k.after} / ${k.exited} (0–${k.rangeMs} ms; the command takes ${k.commandMs} ms)` : '–';
  const enforced = `worst 100 ms: ${r.enforced.worst100ms} (a policy passes ${r.enforced.limit100ms}, ${r.enforced.limit100ms + 50} around a flip); above that ${r.enforced.overMs} ms`;
  const end = `at the fault ${tallies(r.end.atFault)}; after the next start ${tallies(r.end.afterNextStart)}`;
  const lost = `counters ${r.lost.counters}, list entries ${r.lost.listEntries}`;
  const verdict = r.ok ? 'as promised' : `**${r.expectedFail ? `fails (expected until ${r.expectedFail})` : 'FAILS'}**: ${r.failures.join('; ')}`;
  return `| ${cell(r.case)} | ${r.runs} | ${cell(kills)} | ${cell(enforced)} | ${cell(end)} | ${cell(lost)} | ${cell(r.enforced.promise)} | ${cell(verdict)}${r.notes.length ? ` ${cell(r.notes.join('; '))}` : ''} |`;
}

export function table(res: Results): string {
  return [
    '| case | runs | kills before / during / after / exited first | enforced (receiver, packets of the flooding source) | end state (kernel/settings: old, new, mix) | lost | the design promises | result |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...res.rows.map(line),
    '',
    `${res.full ? 'A full run' : `A run of ${res.killsPerCommand} kills per command`} of ${res.date.slice(0, 16).replace('T', ' ')} UTC, seed ${res.seed} ` +
      `(\`npm run reliability -- --seed ${res.seed}\` replays its kill points), ${res.seconds} s; kernel ${res.machine.kernel}, ${res.machine.cpus} CPUs. ` +
      `Flood: ${res.flood.pps} packets/s from one source; the larger limit ${res.flood.limitPps}/s, burst ${res.flood.burst}.` +
      (res.notes?.length ? ` Re-run: ${res.notes.join('; ')}.` : ''),
  ].join('\n');
}

export function writeReport(): void {
  if (!existsSync(RESULTS)) throw new Error(`no ${RESULTS}: run \`npm run reliability\``);
  const res = JSON.parse(readFileSync(RESULTS, 'utf8')) as Results;
  const doc = readFileSync(DOC, 'utf8');
  const a = '<!-- reliability:table -->';
  const b = '<!-- /reliability:table -->';
  const i = doc.indexOf(a);
  const j = doc.indexOf(b);
  if (i < 0 || j < i) throw new Error(`${DOC} lacks the ${a} … ${b} markers`);
  writeFileSync(DOC, `${doc.slice(0, i + a.length)}\n${table(res)}\n${doc.slice(j)}`);
}

if (require.main === module) writeReport();
