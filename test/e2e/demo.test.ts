/**
 * `sluice demo` (the README's main job), short: the abusive client is held to its limit, the
 * well-behaved ones lose nothing, and everything is removed, also after Ctrl-C.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { BIN } from '../lib/cli';
import { checkKeys } from '../lib/json-keys';
import { run, runId } from '../lib/netns';

const ID = runId().slice(0, 8);

async function leftovers(id: string): Promise<string[]> {
  const ns = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`sluice-lab-${id}-`));
  const pins = existsSync(`/sys/fs/bpf/sluice/sluice-lab-${id}-srv`) ? ['pins'] : [];
  return [...ns, ...pins];
}

interface Demo { clients: { role: string; sent: number; passed: number; dropped: number }[]; interrupted: boolean; seconds: number; rate_before: number; rate_after: number }

test('the demo holds the abusive client to its limit, spares the others, and cleans up', async () => {
  const out = await new Promise<string>((res, rej) => execFile(process.execPath, [BIN, 'demo', '--duration', '6s', '--json', '--id', ID], { timeout: 120_000 }, (e, stdout, stderr) => (e ? rej(new Error(`${e.message}\n${stderr}`)) : res(stdout))));
  const r = JSON.parse(out) as Demo;
  assert.deepEqual(checkKeys(r).bad, [], 'snake_case keys at every depth');
  const abusive = r.clients.find((c) => c.role === 'abusive')!;
  const expected = r.rate_before * 3 + r.rate_after * 3;
  assert.ok(abusive.passed >= expected * 0.8 && abusive.passed <= expected * 1.2 + r.rate_before / 10, `abusive passed ${abusive.passed}, limit allows about ${expected}`);
  assert.ok(abusive.dropped > abusive.sent * 0.9, 'most of the abusive traffic was dropped');
  for (const c of r.clients.filter((x) => x.role === 'well-behaved')) {
    assert.equal(c.dropped, 0, 'a well-behaved client loses nothing');
    assert.equal(c.passed, c.sent, 'everything it sent reached the server');
  }
  assert.deepEqual(await leftovers(ID), []);
});

test('Ctrl-C stops the demo and still cleans up', async () => {
  const child = spawn(process.execPath, [BIN, 'demo', '--duration', '30s', '--plain', '--id', ID], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  while (!out.includes('Sluice demo: 2 s')) await once(child.stdout, 'data');
  child.kill('SIGINT');
  const [code] = await once(child, 'exit') as [number];
  assert.equal(code, 130);
  assert.match(out, /Tearing down/);
  assert.match(out, /Summary \(interrupted\)/);
  assert.deepEqual(await leftovers(ID), []);
});
