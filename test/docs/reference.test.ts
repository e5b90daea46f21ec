/**
 * The reference docs against the code they describe (issue 18: lists kept by hand drift apart):
 *  - docs/errors.md lists exactly the SLUICE_E_* codes of the error registry (src/limiter/errors.ts),
 *    with the exit code and HTTP status the registry gives, and no source names a code outside it;
 *  - every reason the data path counts (the generated Reason) is in docs/datapath.md's counters
 *    table, in the reason metric's help text and in docs/api.md's row for it, and they name no
 *    reason that does not exist;
 *  - every command of `sluice` (from its own --help, at every depth) has a row in docs/cli.md, every
 *    option of it is documented there, and no row names an option its commands do not have.
 * Needs no root: it reads files and runs `sluice … --help`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { REPO } from '../../src/ebpf/paths';
import { Reason } from '../../src/generated/types';
import { ERRORS } from '../../src/limiter/errors';
import { BIN } from '../lib/cli';

const ROOT = REPO;
const doc = (name: string): string => readFileSync(join(ROOT, 'docs', name), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const codesIn = (text: string): Set<string> => new Set(text.match(/SLUICE_E_[A-Z0-9_]+/g) ?? []);

test('docs/errors.md lists exactly the error codes of the registry, and the sources give no other', () => {
  const inRegistry = new Set(Object.keys(ERRORS));
  const inSrc = new Set(sources(join(ROOT, 'src')).flatMap((f) => [...codesIn(readFileSync(f, 'utf8'))]));
  const inDoc = codesIn(doc('errors.md'));
  assert.ok(inRegistry.size > 30, `codes in the registry: ${inRegistry.size}`);
  const outside = [...inSrc].filter((c) => !inRegistry.has(c)).sort();
  assert.deepEqual(outside, [], 'codes in src/ that the registry (src/limiter/errors.ts) does not list');
  assert.deepEqual([...inRegistry].filter((c) => !inDoc.has(c)).sort(), [], 'codes in the registry that docs/errors.md does not list');
  assert.deepEqual([...inDoc].filter((c) => !inRegistry.has(c)).sort(), [], 'codes docs/errors.md lists that the registry does not');
});

test("docs/errors.md's exit codes and HTTP statuses are the registry's", () => {
  // A row: | `SLUICE_E_…` | [class |] what | what to do |; "Exit code N" and the first "HTTP NNN" it names.
  const rows = doc('errors.md').split('\n').filter((l) => /^\| `SLUICE_E_[A-Z0-9_]+` \|/.test(l));
  let checked = 0;
  for (const row of rows) {
    const code = /`(SLUICE_E_[A-Z0-9_]+)`/.exec(row)![1]!;
    const entry = ERRORS[code]!;
    const exit = /[Ee]xit code (\d)/.exec(row);
    if (exit) { assert.equal(entry.exit, Number(exit[1]), `${code}: docs/errors.md says exit code ${exit[1]}`); checked++; }
    const http = /HTTP (\d{3})/.exec(row);
    if (http) { assert.equal(entry.http, Number(http[1]), `${code}: docs/errors.md says HTTP ${http[1]}`); checked++; }
  }
  assert.ok(checked > 20, `exit codes and statuses compared: ${checked}`);
});

const REASONS = Object.keys(Reason).filter((k) => k !== 'MAX');

test('every reason the data path counts is in docs/datapath.md, the metric help and docs/api.md, and only those', async () => {
  // docs/datapath.md, "Counters": | REASON[, REASON…] | verdict | counted in |
  const table = doc('datapath.md').split('\n').filter((l) => /^\| [A-Z][A-Z0-9_]*(, [A-Z][A-Z0-9_]*)* \|/.test(l));
  const inTable = new Set(table.flatMap((l) => l.split('|')[1]!.split(',').map((s) => s.trim())));
  assert.deepEqual(REASONS.filter((r) => !inTable.has(r)), [], 'reasons missing from docs/datapath.md\'s counters table');
  assert.deepEqual([...inTable].filter((r) => !REASONS.includes(r)), [], 'docs/datapath.md names reasons that do not exist');

  const names = REASONS.map((r) => r.toLowerCase());
  const listed = (text: string): string[] => [...text.matchAll(/`([a-z][a-z0-9_]*)`/g)].map((m) => m[1]!);
  const apiRow = doc('api.md').split('\n').find((l) => l.startsWith('| `sluice_reason_packets_total`'));
  assert.ok(apiRow, 'docs/api.md has a row for sluice_reason_packets_total');
  const inApi = listed(apiRow.split('|')[4]!);
  assert.deepEqual(names.filter((n) => !inApi.includes(n)), [], 'reasons missing from docs/api.md\'s sluice_reason_packets_total');
  assert.deepEqual(inApi.filter((n) => !names.includes(n)), [], 'docs/api.md names reasons that do not exist');

  const { reasonHelp } = await import('../../src/api/metrics');
  for (const n of names) assert.match(reasonHelp(), new RegExp(`\\b${n}\\b`), `the reason metric's help names ${n}`);
});

const run = promisify(execFile);

/** Each command path of `sluice` ('' for the program) and its long options, from its own --help. */
async function commands(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const walk = async (path: string[]): Promise<void> => {
    const { stdout } = await run(process.execPath, [BIN, ...path, '--help']);
    let section = '';
    const subs: string[] = [];
    const opts = new Set<string>();
    for (const line of stdout.split('\n')) {
      if (/^[A-Z][a-z]+:/.test(line)) section = line.slice(0, line.indexOf(':'));
      else if (!line.startsWith(' ')) section = line.trim() ? '' : section;
      else if (section === 'Commands' && /^ {2}\S/.test(line)) subs.push(line.trim().split(/\s/)[0]!);
      else if (section === 'Options' && /^ {2}-/.test(line)) for (const m of line.slice(0, line.search(/\S\s{2,}|$/) + 1).matchAll(/--[a-z][a-z0-9-]*/g)) opts.add(m[0]);
    }
    opts.delete('--help');
    opts.delete('--version');
    out.set(path.join(' '), [...opts]);
    await Promise.all(subs.filter((s) => s !== 'help').map((s) => walk([...path, s])));
  };
  await walk([]);
  return out;
}

test('docs/cli.md has a row for every command of sluice, documents every option, and names none a command lacks', async () => {
  const text = doc('cli.md');
  const rows = text.split('\n').filter((l) => l.startsWith('| `sluice'));
  // A row's commands: its leading words, with a|b alternatives (`sluice allow\|deny\|mgmt add\|del\|list …`).
  const rowPaths = rows.map((r) => {
    const span = r.split('`')[1]!;
    let paths: string[][] = [[]];
    for (const w of span.split(/\s+/).slice(1)) {
      if (!/^[a-z][a-z\\|-]*$/.test(w)) break;
      paths = paths.flatMap((p) => w.split('\\|').map((x) => [...p, x]));
    }
    return { row: r, span, paths: paths.map((p) => p.join(' ')) };
  });
  // Options that several commands share are documented once, below the table.
  const shared = text.split('\n').filter((l) => !l.startsWith('|')).join('\n');
  const cmds = await commands();
  assert.ok(cmds.size > 20, `commands found: ${cmds.size}`);
  const noRow: string[] = [];
  const undocumented: string[] = [];
  for (const [path, opts] of cmds) {
    if (!path) continue;
    const mine = rowPaths.filter((r) => r.paths.includes(path));
    const parent = [...cmds.keys()].some((k) => k.startsWith(`${path} `));
    if (!mine.length) {
      if (!parent) noRow.push(path);
      continue;
    }
    // Whole options only: `--rate-after` in a row does not document `--rate`.
    const named = (text: string, o: string): boolean => new RegExp(`${o}(?![a-z0-9-])`).test(text);
    for (const o of opts) if (!mine.some((r) => named(r.row, o)) && !named(shared, o)) undocumented.push(`${path} ${o}`);
  }
  assert.deepEqual(noRow, [], 'commands without a row in docs/cli.md');
  assert.deepEqual(undocumented, [], 'options docs/cli.md does not document (in the command\'s row or the text below the table)');
  const stale: string[] = [];
  for (const r of rowPaths) {
    const known = r.paths.filter((p) => cmds.has(p));
    if (known.length < r.paths.length) stale.push(`${r.paths.filter((p) => !cmds.has(p)).join(', ')}: no such command`);
    for (const m of r.span.matchAll(/--[a-z][a-z0-9-]*/g)) if (!known.some((p) => cmds.get(p)!.includes(m[0]))) stale.push(`${r.paths.join('|')} ${m[0]}`);
  }
  assert.deepEqual(stale, [], 'rows of docs/cli.md naming commands or options that do not exist');
});
