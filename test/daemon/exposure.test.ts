/**
 * Issue 12, step 1: a control plane that is safe to expose. A daemon in this process with no
 * interfaces (nothing reaches the kernel) serves its Unix socket and a TCP listener on 127.0.0.1;
 * requests come as a browser under attack would send them: a DNS-rebound Host, a cross-site
 * Origin, a body-less cross-site POST. Also: the socket's mode as bound and a non-root client,
 * the token re-read when its file changes, TLS from files, and the warning of a TCP listener
 * beyond loopback without TLS (in a network namespace of this test).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { stringify } from 'yaml';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { ApiCode } from '../../src/api/errors';
import { buildApi, listenUnix, type ApiBackend } from '../../src/api/server';
import { type ConfigError, loadConfig } from '../../src/config';
import { assertNoLeftovers, runId, Testbed } from '../lib/netns';
import { freePort, http, REPO, SLUICE, sleep, type LogLine } from './helpers';

const dir = mkdtempSync(join(tmpdir(), `sluice-exposure-${runId()}-`));
const configFile = join(dir, 'sluice.yaml');
const socketPath = join(dir, 'run', 'api.sock'); // its directory does not exist yet: the daemon makes it
const TOKEN = 'T0k3nT0k3nT0k3nT0k3nT0k3nT0k3n01';
const TOKEN2 = 'Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp';
const logs: LogLine[] = [];
let port: number;
let daemon: Daemon | undefined;
const daemons: Daemon[] = [];
const tb = new Testbed();
/** Modes of Unix sockets right after bind(2), before anything could chmod them. */
const boundModes = new Map<string, number>();
const origListen = Server.prototype.listen;

const unix = { socketPath };
const tcp = (): { host: string; port: number } => ({ host: '127.0.0.1', port });
const auth = (token = TOKEN): Record<string, string> => ({ authorization: `Bearer ${token}` });
const JSON_CT = { 'content-type': 'application/json' };

function writeToken(token: string): void {
  // As a Secret volume or an editor would: a new file renamed over the old one.
  writeFileSync(join(dir, 'token.tmp'), `${token}\n`, { mode: 0o600 });
  renameSync(join(dir, 'token.tmp'), join(dir, 'token'));
}

const logger = (): pino.Logger => pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as LogLine); } });

before(async () => {
  // bind(2) of a Unix socket happens inside listen(): stat the file as soon as listen() returns.
  Server.prototype.listen = function (this: Server, ...args: unknown[]) {
    const r = (origListen as (...a: unknown[]) => Server).apply(this, args);
    const a = args[0] as { path?: string } | string;
    const path = typeof a === 'string' ? a : a?.path;
    if (typeof path === 'string') boundModes.set(path, statSync(path).mode & 0o777);
    return r;
  } as typeof Server.prototype.listen;
  port = await freePort();
  writeToken(TOKEN);
  // Paths relative to the config file's directory (the token file here).
  writeFileSync(configFile, stringify({
    interfaces: [],
    api: { socket: socketPath, tcp: { listen: `127.0.0.1:${port}`, token_file: 'token' } },
    reconcile_interval: '1h',
  }));
  daemon = await startDaemon({ configFile, watch: false, logger: logger() });
  daemons.push(daemon);
});

after(async () => {
  Server.prototype.listen = origListen;
  for (const d of daemons) await d.stop({ detach: false });
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 1000 });
});

test('the Unix socket is 0600 from bind on, in a 0700 directory; a non-root user cannot connect', async () => {
  assert.equal(boundModes.get(socketPath)?.toString(8), '600', 'the mode as bound (umask), not fixed afterwards');
  assert.equal((statSync(socketPath).mode & 0o777).toString(8), '600');
  assert.equal((statSync(join(dir, 'run')).mode & 0o777).toString(8), '700', 'the directory the daemon made');
  assert.equal((await http(unix, 'GET', '/v1/status')).status, 200, 'root connects');

  // A client as nobody, with the directories searchable so that only the socket's mode decides.
  chmodSync(dir, 0o711);
  chmodSync(join(dir, 'run'), 0o711);
  try {
    const client = `require('net').connect(${JSON.stringify(socketPath)}).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`;
    const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', client], { encoding: 'utf8', timeout: 10_000 }).trim();
    assert.equal(out, 'EACCES', 'nobody is refused by the socket itself');
  } finally {
    chmodSync(join(dir, 'run'), 0o700);
    chmodSync(dir, 0o700);
  }

  // A directory others may write to is refused: they could put their own socket in its place.
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  const backend = {} as ApiBackend;
  const app = buildApi(backend, { logger: logger(), listener: 'unix' });
  await assert.rejects(listenUnix(app, join(open, 'api.sock')), (e: { code?: string; message: string }) => e.code === ApiCode.SocketUnsafe && /writable by/.test(e.message));
  await app.close();
});

test('TCP: a Host that is not an allowed host is refused (DNS rebinding); localhost, 127.0.0.1, [::1] and the listen address pass at any port', async () => {
  for (const host of ['attacker.example', `attacker.example:${port}`, 'sluice.internal', '10.1.2.3:80']) {
    const r = await http(tcp(), 'GET', '/v1/status', { headers: { ...auth(), host } });
    assert.equal(r.status, 403, `${host}: ${r.text}`);
    assert.equal(r.json.error.code, 'SLUICE_E_API_HOST');
  }
  for (const host of [`127.0.0.1:${port}`, 'localhost', `localhost:${port + 1}`, `[::1]:${port}`, '127.0.0.1']) {
    const r = await http(tcp(), 'GET', '/v1/status', { headers: { ...auth(), host } });
    assert.equal(r.status, 200, `${host}: ${r.text}`);
  }
  // Refused before the token is looked at: no oracle for a rebinding page.
  assert.equal((await http(tcp(), 'GET', '/v1/status', { headers: { host: 'attacker.example' } })).status, 403);
});

test('nothing cross-site can write: a foreign Origin, Sec-Fetch-Site cross-site, a POST without the JSON content type', async () => {
  const reloads = (): number => logs.filter((l) => l.event === 'reloaded').length;
  const n0 = reloads();
  for (const [name, target, extra] of [['unix', unix, {}], ['tcp', tcp(), auth()]] as const) {
    // A page elsewhere: a "simple" cross-site POST (no content type, no body) must not reload.
    const simple = await http(target, 'POST', '/v1/reload', { headers: { ...extra } });
    assert.equal(simple.status, 415, `${name}: ${simple.text}`);
    assert.equal(simple.json.error.code, 'SLUICE_E_API_BAD_REQUEST');
    const form = await http(target, 'POST', '/v1/reload', { body: 'a=1', headers: { ...extra, 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(form.status, 415, `${name}: ${form.text}`);
    const plain = await http(target, 'PUT', '/v1/limits', { body: JSON.stringify({ iface: 'eth0', limits: { rate: 2 ** 40 } }), headers: { ...extra, 'content-type': 'text/plain' } });
    assert.equal(plain.status, 415, `${name}: ${plain.text}`);
    for (const headers of [{ origin: 'http://attacker.example' }, { origin: 'null' }, { origin: `http://localhost:${port + 1}` }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }] as Record<string, string>[]) {
      const r = await http(target, 'POST', '/v1/reload', { headers: { ...extra, ...JSON_CT, ...headers } });
      assert.equal(r.status, 403, `${name} ${JSON.stringify(headers)}: ${r.text}`);
      assert.equal(r.json.error.code, 'SLUICE_E_API_CROSS_SITE');
    }
  }
  assert.equal(reloads(), n0, 'none of them reloaded');
  // The API's own clients: JSON content type (an empty body is no body), same origin or none.
  const ok = await http(unix, 'POST', '/v1/reload', { headers: JSON_CT });
  assert.equal(ok.status, 200, ok.text);
  const same = await http(tcp(), 'POST', '/v1/reload', { headers: { ...auth(), ...JSON_CT, origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' } });
  assert.equal(same.status, 200, same.text);
  assert.equal(reloads(), n0 + 2);
  // The console is never framed by another page.
  const page = await http(unix, 'GET', '/');
  assert.equal(page.headers['x-frame-options'], 'DENY');
});

test('the bearer token is re-read when its file changes: the old one stops working at once', async () => {
  assert.equal((await http(tcp(), 'GET', '/v1/status', { headers: auth(TOKEN) })).status, 200);
  writeToken(TOKEN2);
  assert.equal((await http(tcp(), 'GET', '/v1/status', { headers: auth(TOKEN) })).status, 401, 'the rotated-out token');
  assert.equal((await http(tcp(), 'GET', '/v1/status', { headers: auth(TOKEN2) })).status, 200, 'the new token');
  // A file that no longer holds a valid token refuses everyone (fail closed), and says so once.
  writeToken('short');
  const r = await http(tcp(), 'GET', '/v1/status', { headers: auth(TOKEN2) });
  assert.equal(r.status, 401);
  assert.ok(!r.text.includes('short'), 'the file\'s content is not echoed');
  assert.ok(logs.some((l) => l.event === 'token_invalid' && !JSON.stringify(l).includes('"short')), 'logged without the content');
  writeToken(TOKEN);
  assert.equal((await http(tcp(), 'GET', '/v1/status', { headers: auth(TOKEN) })).status, 200);
});

test('TLS with a certificate and key from files; a key that is not the certificate\'s is refused with no PEM in the message', async () => {
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  chmodSync(key, 0o600);
  const tlsPort = await freePort();
  const tlsConfig = join(dir, 'tls.yaml');
  const write = (keyFile: string): void => writeFileSync(tlsConfig, stringify({
    interfaces: [], reconcile_interval: '1h',
    api: { socket: null, tcp: { listen: `127.0.0.1:${tlsPort}`, token_file: 'token', tls: { cert_file: 'tls.crt', key_file: keyFile } } },
  }));
  const other = join(dir, 'other.key');
  execFileSync('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', other], { stdio: 'ignore' });
  chmodSync(other, 0o600);
  write('other.key');
  assert.throws(() => loadConfig(tlsConfig), (e: ConfigError) => e.problems.length === 1 && e.problems[0]!.path === 'api.tcp.tls.key_file' && !/BEGIN|PRIVATE/.test(JSON.stringify(e.problems)) && !e.message.includes(readFileSync(other, 'utf8').split('\n')[1]!));

  write('tls.key');
  // One daemon per state directory (the daemon lock): the first one's tests are done.
  for (const x of daemons.splice(0)) await x.stop({ detach: false });
  const d = await startDaemon({ configFile: tlsConfig, watch: false, logger: logger() });
  daemons.push(d);
  const got = await new Promise<{ status: number; body: string }>((res, rej) => {
    const req = httpsRequest({ host: '127.0.0.1', port: tlsPort, path: '/v1/status', ca: readFileSync(cert), headers: auth() }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => { body += c.toString(); });
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('error', rej);
    req.end();
  });
  assert.equal(got.status, 200, got.body);
  await assert.rejects(http({ host: '127.0.0.1', port: tlsPort }, 'GET', '/v1/status', { headers: auth() }), 'plain HTTP gets no answer');
  assert.ok(!logs.some((l) => l.event === 'insecure_listener'), 'loopback: no warning');
});

test('a TCP listener beyond loopback without TLS is warned about loudly (in a namespace of this test)', async () => {
  for (const x of daemons.splice(0)) await x.stop({ detach: false }); // the state directory's lock
  const ns = await tb.addNs('wide');
  const cfg = join(dir, 'wide.yaml');
  writeFileSync(cfg, stringify({ interfaces: [], reconcile_interval: '1h', api: { socket: null, tcp: { listen: '0.0.0.0:9180', token_file: 'token' } } }));
  const child = tb.spawn(ns, process.execPath, [SLUICE, 'run', '--config', cfg]);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  const deadline = Date.now() + 15_000;
  while (!/"event":"ready"/.test(out) && child.exitCode === null && Date.now() < deadline) await sleep(50);
  child.kill('SIGTERM');
  const warn = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine).find((l) => l.event === 'insecure_listener');
  assert.ok(warn, `no insecure_listener warning; output:\n${out}`);
  assert.equal(warn.level, 40);
  assert.match(warn.msg, /WITHOUT TLS/);
});

test('every code of the API is documented in docs/errors.md', () => {
  const doc = readFileSync(join(REPO, 'docs', 'errors.md'), 'utf8');
  for (const code of Object.values(ApiCode)) assert.match(doc, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${code} has a row`);
});
