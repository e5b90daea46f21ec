/**
 * `sluice status` while another process takes an interface down: a place listed but no longer
 * protected when it is opened is left out, instead of failing the whole listing with
 * SLUICE_E_NOT_PROTECTED (seen when two test runs shared the machine's bpffs). The moment is made
 * deterministic with a pin directory that holds nothing, under a pin root of this test's own.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BIN } from '../lib/cli';
import { runId } from '../lib/netns';

const root = mkdtempSync(join(tmpdir(), 'sluice-pins-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('status leaves out an interface taken down between its listing and its opening', async () => {
  mkdirSync(join(root, 'host', `gh${runId().slice(0, 8)}`), { recursive: true });
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((res) => {
    execFile(process.execPath, [BIN, 'status', '--json'], { env: { ...process.env, SLUICE_PIN_ROOT: root } }, (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { interfaces: [] });
});
