/**
 * Issue 15, step 4: the package as an operator installs it. `npm pack` of this checkout, then
 * `npm install -g --prefix <tmp>` of the tarball (dependencies from the npm cache, else the
 * registry; the addon built at install by node-gyp against the system's libbpf and Node's headers
 * in /usr), then the installed `sluice`: --version says package.json's version, and `sluice up` /
 * `sluice down` protect and unprotect a veth in a namespace this test creates (pins and settings
 * under private roots). About 15 s here; SLUICE_SKIP_PACKAGE_TEST=1 skips it.
 */
import { PIN_ROOT, removePrivateRoots } from '../lib/private-root';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { assertNoLeftovers, Testbed } from '../lib/netns';
import { REPO } from '../daemon/helpers';

const skip = process.env['SLUICE_SKIP_PACKAGE_TEST'] === '1' ? 'SLUICE_SKIP_PACKAGE_TEST=1' : false;
const tmp = mkdtempSync(join(tmpdir(), 'sluice-pkg-'));
const tb = new Testbed();
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string; files: string[] };

after(async () => {
  try {
    await tb.cleanup();
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

const npm = (args: string[]): string => execFileSync('npm', args, {
  cwd: tmp, encoding: 'utf8', timeout: 120_000,
  // Node's headers from the system (/usr/include/node): node-gyp must not try to download them.
  env: { ...process.env, npm_config_nodedir: process.env['npm_config_nodedir'] ?? '/usr', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' },
});

test('npm pack, npm install -g --prefix of the tarball, then the installed sluice: --version, up and down on a veth', { skip, timeout: 120_000 }, async () => {
  const packed = JSON.parse(npm(['pack', REPO, '--json', '--pack-destination', tmp])) as { filename: string; files: { path: string }[] }[];
  const files = new Set(packed[0]!.files.map((f) => f.path));
  // What the installed command needs, and what it must be able to build from.
  for (const f of ['bin/sluice.js', 'dist/src/cli/main.js', 'bpf/sluice.bpf.o', 'bpf/sluice.h', 'binding.gyp', 'native/addon.c', 'package.json']) {
    if (f === 'native/addon.c' && !existsSync(join(REPO, f))) continue;
    assert.ok(files.has(f), `the tarball has ${f}`);
  }
  assert.ok([...files].some((f) => f.startsWith('native/') && f.endsWith('.c')), 'native sources');
  assert.ok(![...files].some((f) => f.startsWith('build/') || f.startsWith('dist/test/') || f.startsWith('node_modules/')), 'no local build, tests or node_modules');

  const prefix = join(tmp, 'prefix');
  npm(['install', '-g', '--prefix', prefix, '--prefer-offline', '--allow-scripts=sluice', join(tmp, packed[0]!.filename)]);
  const root = join(prefix, 'lib', 'node_modules', 'sluice');
  assert.ok(existsSync(join(root, 'build', 'Release', 'sluice_native.node')), 'the addon was built at install');
  const sluice = join(prefix, 'bin', 'sluice');
  assert.equal(execFileSync(sluice, ['--version'], { encoding: 'utf8' }).trim(), pkg.version);

  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const v = await tb.addVeth(cli, srv);
  const place = ['--iface', v.b.ifname, '--netns', srv];
  const up = execFileSync(sluice, ['up', ...place, '--rate', '100'], { encoding: 'utf8' });
  assert.match(up, /attached/);
  assert.ok(existsSync(join(PIN_ROOT, srv, v.b.ifname, 'link')), 'pinned under the private root');
  const link = JSON.parse((await tb.exec(srv, 'ip', ['-j', 'link', 'show', 'dev', v.b.ifname])).stdout)[0] as { xdp?: unknown };
  assert.ok(link.xdp, 'an XDP program runs on the veth');
  assert.match(execFileSync(sluice, ['down', ...place], { encoding: 'utf8' }), /protection removed/);
  const after2 = JSON.parse((await tb.exec(srv, 'ip', ['-j', 'link', 'show', 'dev', v.b.ifname])).stdout)[0] as { xdp?: unknown };
  assert.equal(after2.xdp, undefined, 'nothing runs after down');
});
