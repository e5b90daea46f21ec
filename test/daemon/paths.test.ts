/**
 * Issue 12, step 2: the files a config names are found relative to the config file's directory
 * (a policy file's own files relative to the policy file), whatever the working directory; and a
 * path that names the wrong file never puts its content into an error, the log or an API answer.
 * No kernel: the daemon of the last test protects no interface.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { startDaemon } from '../../src/cli/daemon';
import { ConfigError, loadConfig } from '../../src/config';

const dir = mkdtempSync(join(tmpdir(), 'sluice-paths-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What a password file's first line looks like; it must never be shown. */
const SECRET = 'root:$y$j9T$Q8vS3cretHashN0tToB3Sh0wn$Kx1:19700:0:99999:7:::';
const TOKEN = 'P4thsT0kenP4thsT0kenP4thsT0ken99';

function layout(): { config: string } {
  // conf/sluice.yaml names ../policies/edge.yaml, which names data/geo.csv (under policies/).
  mkdirSync(join(dir, 'conf', 'secrets'), { recursive: true });
  mkdirSync(join(dir, 'policies', 'data'), { recursive: true });
  writeFileSync(join(dir, 'conf', 'secrets', 'token'), `${TOKEN}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'policies', 'data', 'geo.csv'), '# first,last,CC\n192.0.2.0,192.0.2.255,DE\n2001:db8::,2001:db8::ffff,FR\n');
  writeFileSync(join(dir, 'policies', 'edge.yaml'), [
    'geoip: { tiers: { near: [DE, FR] }, default_tier: far, csv: data/geo.csv }',
    'rules:',
    '  - { name: far, match: { tier: far }, limit: { rate: 10 } }',
    '',
  ].join('\n'));
  writeFileSync(join(dir, 'shadow'), `${SECRET}\nbin:*:19700:0:99999:7:::\n`, { mode: 0o600 });
  const config = join(dir, 'conf', 'sluice.yaml');
  writeFileSync(config, [
    'interfaces:',
    '  - { iface: eth1, policy: ../policies/edge.yaml }',
    'api: { socket: null, tcp: { listen: "127.0.0.1:9", token_file: secrets/token } }',
    '',
  ].join('\n'));
  return { config };
}

test('policy, token_file and a policy\'s geoip.csv are found relative to the file that names them, from any working directory', () => {
  const { config } = layout();
  const cwd = process.cwd();
  process.chdir('/');
  try {
    const c = loadConfig(join(dir, 'conf', 'sluice.yaml'));
    const i = c.interfaces[0]!;
    assert.equal(i.policyFile, join(dir, 'policies', 'edge.yaml'));
    assert.equal(i.geoip?.csv, join(dir, 'policies', 'data', 'geo.csv'), 'relative to the policy file, not to the config');
    assert.equal(c.api.tcp?.tokenFile, join(dir, 'conf', 'secrets', 'token'));
    assert.equal(c.api.tcp?.token, TOKEN);
    assert.equal(config, join(dir, 'conf', 'sluice.yaml'));
  } finally {
    process.chdir(cwd);
  }
});

/** Every text an error can reach an operator through. */
const texts = (e: ConfigError): string => `${e.message}\n${JSON.stringify(e.problems)}`;

test('a policy path that names the wrong file (a password file) is refused without showing a line of it', () => {
  layout();
  const config = join(dir, 'conf', 'wrong.yaml');
  writeFileSync(config, 'interfaces:\n  - { iface: eth1, policy: ../shadow }\n');
  const e = (() => { try { loadConfig(config); } catch (x) { return x as ConfigError; } assert.fail('accepted'); })();
  assert.ok(e instanceof ConfigError);
  assert.equal(e.problems.length, 1, e.message);
  assert.equal(e.problems[0]!.path, 'interfaces[0].policy');
  assert.match(e.problems[0]!.message, /shadow: not a policy file: .*not shown/);
  assert.ok(!texts(e).includes('j9T') && !texts(e).includes('root:'), texts(e));

  // A key (one long YAML string): said to be text, of its length.
  writeFileSync(join(dir, 'key.pem'), '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgS3cr3tK3yM4t3r1al\n-----END PRIVATE KEY-----\n');
  writeFileSync(config, 'interfaces:\n  - { iface: eth1, policy: ../key.pem }\n');
  const k = (() => { try { loadConfig(config); } catch (x) { return x as ConfigError; } assert.fail('accepted'); })();
  assert.match(k.problems[0]!.message, /got text \(\d+ characters, not shown\)/);
  assert.ok(!texts(k).includes('S3cr3t') && !texts(k).includes('BEGIN'), texts(k));

  // The config file itself named by mistake (or a secret put in its place): the same.
  writeFileSync(join(dir, 'conf', 'itself.yaml'), `${SECRET}\n`);
  const e2 = (() => { try { loadConfig(join(dir, 'conf', 'itself.yaml')); } catch (x) { return x as ConfigError; } assert.fail('accepted'); })();
  assert.ok(!texts(e2).includes('j9T'), texts(e2));
});

test('a GeoIP CSV that is not one (a secret named by mistake) is refused by line number, without its content', () => {
  layout();
  writeFileSync(join(dir, 'policies', 'data', 'geo.csv'), `192.0.2.0,192.0.2.255,DE\n${SECRET}\nhunter2,hunter3,XX\n`);
  const e = (() => { try { loadConfig(join(dir, 'conf', 'sluice.yaml')); } catch (x) { return x as ConfigError; } assert.fail('accepted: the CSV was not read'); })();
  assert.ok(e instanceof ConfigError);
  assert.match(e.message, /geo\.csv:2: /);
  assert.match(e.message, /geo\.csv:3: /);
  for (const s of ['j9T', 'hunter', 'root:']) assert.ok(!texts(e).includes(s), `${s} in ${texts(e)}`);
});

test('through the daemon: neither the log nor the 422 of POST /v1/reload shows the misdirected file', async () => {
  layout();
  const config = join(dir, 'conf', 'daemon.yaml');
  writeFileSync(config, 'interfaces: []\napi: { socket: null }\nreconcile_interval: 1h\n');
  const lines: string[] = [];
  const d = await startDaemon({ configFile: config, listen: false, watch: false, logger: pino({ level: 'debug' }, { write: (l: string) => { lines.push(l); } }) });
  const app = d.api();
  try {
    writeFileSync(config, 'interfaces:\n  - { iface: eth1, policy: ../shadow }\napi: { socket: null }\nreconcile_interval: 1h\n');
    const r = await app.inject({ method: 'POST', url: '/v1/reload', payload: {} });
    assert.equal(r.statusCode, 422, r.body);
    assert.equal(r.json().error.code, 'SLUICE_E_CONFIG');
    assert.ok(!r.body.includes('j9T'), r.body);
    assert.ok(lines.some((l) => l.includes('reload_refused')));
    assert.ok(!lines.join('\n').includes('j9T'), 'nothing of it in the log');
  } finally {
    await app.close();
    await d.stop({ detach: false });
  }
});
