/**
 * The shape issue 18 gave the model, checked on the sources (unprivileged: reads files only):
 * the benchmarks import nothing from test/, the source finds its files through src/ebpf/paths.ts,
 * maps are named through the generated table, and the rule model's defaults and bounds are stated
 * once (src/limiter/bounds.ts) or taken from the generated types.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { REPO } from '../../src/ebpf/paths';
import { Defaults, Maps } from '../../src/generated/types';
import { DEFAULT_LIMITS, defaultRuleOf, FULL_FRAME_BYTES, MAX_RATE } from '../../src/limiter/rule';
import { LIMITER_MAP_NAMES } from '../../src/limiter/limiter';

/** Every .ts file under dir (a directory of the repository), with its text. */
function sources(dir: string): { file: string; text: string }[] {
  const out: { file: string; text: string }[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out.push({ file: relative(REPO, p), text: readFileSync(p, 'utf8') });
    }
  };
  walk(join(REPO, dir));
  return out;
}

/** file:line of every line of `files` that matches re. */
function hits(files: { file: string; text: string }[], re: RegExp): string[] {
  return files.flatMap(({ file, text }) => text.split('\n').flatMap((l, i) => (re.test(l) ? [`${file}:${i + 1}: ${l.trim()}`] : [])));
}

test('the benchmarks import nothing from test/ (what both use lives in src)', () => {
  assert.deepEqual(hits(sources('bench'), /(from|require\()\s*['"](\.\.\/)+test\//), []);
});

test('no source climbs __dirname to find the repository: src/ebpf/paths.ts says where things are', () => {
  const climbs = hits([...sources('src'), ...sources('bench'), ...sources('scripts'), ...sources('test/lib')], /__dirname, '\.\.', '\.\.'/);
  assert.deepEqual(climbs.filter((h) => !h.startsWith('src/ebpf/paths.ts:')), []);
});

test('maps are named through the generated table, not by strings built or typed at the call', () => {
  assert.deepEqual(hits(sources('src'), /maps\.get\(\s*[`'"]/), []);
  for (const name of LIMITER_MAP_NAMES) assert.ok(name in Maps, `${name} is a map of the object`);
});

test('no cast of maps through unknown', () => {
  assert.deepEqual(hits([...sources('src'), ...sources('bench'), ...sources('test/lib')], /as unknown as \w*Maps\b/), []);
});

test('the rule model states its bounds once and takes its defaults from the generated types', () => {
  const src = sources('src').filter((f) => !f.file.startsWith('src/generated/') && !f.file.startsWith('src/lab/') && !f.file.startsWith('src/cli/'));
  assert.deepEqual(hits(src, /\b1514\b/).filter((h) => !h.startsWith('src/limiter/bounds.ts:')), []);
  assert.deepEqual(hits(src, /2 \*\* 40|1n << 40n/).filter((h) => !h.startsWith('src/limiter/bounds.ts:')), []);
  assert.deepEqual(hits(src, /export const DEFAULT_LIMITS\b/).map((h) => h.split(':')[0]), ['src/limiter/rule.ts']);
  assert.equal(MAX_RATE, 2 ** 40);
  assert.equal(FULL_FRAME_BYTES, 1514);
  assert.deepEqual(
    [DEFAULT_LIMITS.rate, DEFAULT_LIMITS.windowMs, DEFAULT_LIMITS.keyV4, DEFAULT_LIMITS.keyV6],
    [Defaults.PPS, Defaults.WINDOW_MS, Defaults.KEY_V4, Defaults.KEY_V6],
  );
  // The one default rule: what the agent compiles and what the config checks are the same object.
  assert.deepEqual(defaultRuleOf(DEFAULT_LIMITS), { id: 0, name: 'default', alg: 'fixed', pps: 1000, ppsBurst: 0, windowMs: 1000, key: { v4: 32, v6: 64 } });
});
