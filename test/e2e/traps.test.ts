/**
 * Issue 12, step 7: operator traps, one test each, through the real command on a veth pair in
 * namespaces this test creates. Each of these failed on 3d14d9d (the base of the issue).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { json, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), 'sluice-traps-'));
let srv: string;
let veth: Veth;
let on: string[];

before(async () => {
  const cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
  await ok('up', ...on, '--rate', '1000/s');
});

after(async () => {
  await sluice('down', ...on);
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers();
});

test('trap 7a: `deny del` removes what `deny add` stored, in any spelling; deleting an absent entry is an error', async () => {
  await ok('deny', 'add', ...on, '192.0.2.1', '2001:DB8:0:0::1');
  let l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, ['192.0.2.1/32', '2001:db8::1/128']);
  await ok('deny', 'del', ...on, '192.0.2.1', '2001:db8:0000::1/128');
  l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, [], 'both removed, whatever their spelling');
  await ok('deny', 'add', ...on, '198.51.100.0/24');
  const r = await sluice('deny', 'del', ...on, '198.51.100.0/24', '203.0.113.9');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /not in the deny list of .*: 203\.0\.113\.9\/32, so nothing was removed/);
  l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, ['198.51.100.0/24'], 'nothing removed when one entry is absent');
  await ok('deny', 'del', ...on, '198.51.100.0/24');
});
