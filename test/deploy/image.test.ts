/**
 * Issue 15: the container image (deploy/Containerfile). docker and podman cannot pull images here,
 * so the file is checked against the repository and its entry command is run outside a container:
 *
 *  - consistency: every COPY source exists and is in the build context, what the run-time stage
 *    copies from the build stage is what that stage builds, it holds what `sluice` runs from
 *    (bin/, dist/src, bpf/sluice.bpf.o, the addon, package.json, the dependencies) and nothing of the
 *    tests or sources, the entry command is in exec form and is a file it copies; a typo in any of
 *    these fails the check (mutations below);
 *  - the DaemonSet runs that entry command (no `command:`, its `args` are the image's CMD) and the
 *    config path of the CMD is the ConfigMap's key where the DaemonSet mounts it;
 *  - the run-time stage laid out under a temporary root (its COPYs carried out against this
 *    checkout), its ENTRYPOINT + CMD run with every absolute path of the image under that root,
 *    the ConfigMap's config at /etc/sluice/sluice.yaml (interface, socket and listener set to this
 *    test's), pins and state under private roots: it protects a veth in namespaces this test
 *    creates (the pinned program is the one on the interface, a flood is limited at the receiver),
 *    /healthz answers 200 on the read-only listener, SIGHUP reloads a changed policy (the new limit
 *    holds at the receiver), and SIGTERM ends it with exit code 0, the program still attached and
 *    enforcing (what a rolling update relies on).
 */
import { removePrivateRoots, PIN_ROOT, STATE_DIR } from '../lib/private-root';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { after, test } from 'node:test';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { Protection } from '../../src/agent/protection';
import { loadSettings } from '../../src/agent/state';
import { Link } from '../../src/ebpf';
import { assertNoLeftovers, runId, Testbed } from '../lib/netns';
import { freePort, http, killDaemon, REPO, watchDaemon, writeConfig, type DaemonProcess } from '../daemon/helpers';
import { checkImage, ignoredBy, imageCommand, stageImage, type ImageCheck } from './containerfile';
import { floodCounted, makePair, unpair, type Pair } from './traffic';

const FILE = join(REPO, 'deploy', 'Containerfile');
const text = readFileSync(FILE, 'utf8');
const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8');
const check = (t: string, ig = ignore): ImageCheck => checkImage(t, REPO, ig);

test('deploy/Containerfile is consistent with the repository', () => {
  const c = check(text);
  assert.deepEqual(c.problems, []);
  assert.equal(c.home, '/opt/sluice');
  assert.deepEqual(c.copies.map((x) => x.rel).sort(), ['bin/sluice.js', 'bpf/sluice.bpf.o', 'build/Release/sluice_native.node', 'dist/src', 'node_modules', 'package.json']);
  // The context holds sources only: a checkout's own builds (possibly for another Node) stay out.
  for (const out of ['node_modules/yaml/package.json', 'build/Release/sluice_native.node', 'dist/src/cli/main.js', 'bpf/sluice.bpf.o', 'bpf/lab/count.bpf.o']) {
    assert.ok(ignoredBy(ignore, out), `.dockerignore leaves ${out} out of the build context`);
  }
  assert.ok(!ignoredBy(ignore, 'bpf/sluice.bpf.c') && !ignoredBy(ignore, 'src/cli/main.ts'));
});

test('the check is real: each typo or omission is caught', () => {
  const cases: [string, string, RegExp][] = [
    ['COPY --from=build /src/dist/src/ ./dist/src/', 'COPY --from=build /src/dsit/src/ ./dist/src/', /dsit\/src does not exist/],
    ['COPY --from=build /src/dist/src/ ./dist/src/', 'COPY --from=build /src/dist/ ./dist/', /copies what is not for running \(dist\/(test|bench)/],
    ['./bpf/sluice.bpf.o\n', './bpf/sluice.bfp.o\n', /does not copy \/opt\/sluice\/bpf\/sluice\.bpf\.o/],
    ['/src/bpf/sluice.bpf.o ', '/src/bpf/sluice_test.bpf.o ', /no RUN of stage build makes it/],
    ['make -C bpf sluice.bpf.o', 'make -C bpf bench.bpf.o', /no RUN of stage build makes it/],
    ['COPY --from=build /src/build/Release/sluice_native.node ./build/Release/sluice_native.node\n', '', /does not copy \/opt\/sluice\/build\/Release\/sluice_native\.node/],
    ['COPY --from=build /src/node_modules/ ./node_modules/\n', '', /does not copy \/opt\/sluice\/node_modules\/fastify\/package\.json/],
    ['COPY native/ native/', 'COPY natve/ native/', /COPY natve\/: no such file/],
    ['ENTRYPOINT ["/opt/sluice/bin/sluice.js"]', 'ENTRYPOINT ["/opt/sluice/bin/slice.js"]', /ENTRYPOINT must start with the package's bin\/sluice\.js/],
    ['ENTRYPOINT ["/opt/sluice/bin/sluice.js"]', 'ENTRYPOINT /opt/sluice/bin/sluice.js', /use the exec form/],
    ['COPY bin/sluice.js ./bin/sluice.js', 'COPY bin/sluice.js ./bin/sluice', /does not copy \/opt\/sluice\/bin\/sluice\.js/],
    ['node:${NODE_VERSION}-bookworm-slim', 'node:${NODE_VERSION}-bookworm', /must be FROM node:20-bookworm-slim/],
    ['FROM docker.io/library/node:${NODE_VERSION}-bookworm AS build', 'FROM docker.io/library/node:22-bookworm AS build', /the addon is built for the Node it runs on/],
    ['--from=build /src/package.json', '--from=biuld /src/package.json', /--from=biuld names no earlier stage/],
  ];
  for (const [from, to, re] of cases) {
    assert.ok(text.includes(from), `the file still has ${JSON.stringify(from)}`);
    const p = check(text.replace(from, to)).problems;
    assert.ok(p.some((x) => re.test(x)), `${JSON.stringify(from)} -> ${JSON.stringify(to)}: expected ${re}, got:\n${p.join('\n')}`);
  }
  // The context: a source that .dockerignore leaves out is as missing as a typo.
  assert.ok(check(text, `${ignore}\nnative\n`).problems.some((x) => /COPY native\/: left out of the build context/.test(x)));
});

test("the DaemonSet runs the image's entry command with its CMD, and the config is where the ConfigMap is mounted", () => {
  const c = check(text);
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy', 'kubernetes', 'daemonset.yaml'), 'utf8')).map((d) => d.toJS());
  const cm = parse(readFileSync(join(REPO, 'deploy', 'kubernetes', 'configmap.yaml'), 'utf8'));
  const pod = docs[0].spec.template.spec;
  const container = pod.containers[0];
  assert.equal(container.command, undefined, 'command: would replace the ENTRYPOINT');
  assert.deepEqual(container.args, c.cmd);
  const config = c.cmd[c.cmd.indexOf('--config') + 1]!;
  const mount = container.volumeMounts.find((m: { mountPath: string }) => posix.dirname(config) === m.mountPath);
  assert.ok(mount, `a volume is mounted at ${posix.dirname(config)}`);
  const vol = pod.volumes.find((v: { name: string }) => v.name === mount.name);
  assert.equal(vol.configMap?.name, cm.metadata.name);
  assert.ok(posix.basename(config) in cm.data, `the ConfigMap has the key ${posix.basename(config)}`);
});

// ---------------------------------------------------------------------------------------------
// The entry command, outside a container

const tb = new Testbed();
const root = mkdtempSync(join(tmpdir(), `sluice-image-${runId()}-`));
let pair: Pair | undefined;
let daemon: DaemonProcess | undefined;
let port: number;
let configFile: string;
let policy: Record<string, unknown>;

after(async () => {
  try {
    if (daemon) await killDaemon(daemon);
    if (pair) await Protection.down({ iface: pair.veth.b.ifname, netns: pair.srv }).catch(() => undefined);
    unpair(pair);
    await tb.cleanup();
  } finally {
    rmSync(root, { recursive: true, force: true });
    removePrivateRoots();
  }
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

/** The program on the server's veth (XDP, as the kernel says) and the one its pinned link runs. */
async function programs(p: Pair): Promise<{ onIface: number | undefined; pinned: number | undefined }> {
  const link = JSON.parse((await tb.exec(p.srv, 'ip', ['-j', 'link', 'show', 'dev', p.veth.b.ifname])).stdout)[0] as { xdp?: { prog?: { id: number } } };
  const pin = join(PIN_ROOT, p.srv, p.veth.b.ifname, 'link');
  let pinned: number | undefined;
  if (existsSync(pin)) {
    const l = Link.fromPin(pin);
    try { pinned = l.info().progId; } finally { l.close(); }
  }
  return { onIface: link.xdp?.prog?.id, pinned };
}

/** Passes of a 5,000/s flood for 1 s against a token bucket: at most burst + rate x t (+1% of the offered and 20). */
async function limited(p: Pair, rate: number, burst: number): Promise<number> {
  const { sent, received } = await floodCounted(p, 5000, 1);
  const bound = burst + rate * sent.seconds + 20 + 0.01 * sent.sent;
  assert.ok(sent.sent >= 4000, `the flood sent ${sent.sent} frames`);
  assert.ok(received <= bound, `received ${received} of ${sent.sent} in ${sent.seconds.toFixed(2)} s; rate ${rate}/s burst ${burst} allows ${bound.toFixed(0)}`);
  assert.ok(received >= 0.7 * rate * sent.seconds, `received ${received}: the limit passes about ${rate}/s, not nothing`);
  return received;
}

test("the image's entry command outside a container: protects a veth, /healthz, SIGHUP reloads, SIGTERM exits 0 with protection in force", { timeout: 90_000 }, async () => {
  const p = pair = await makePair(tb);
  port = await freePort();
  const c = check(text);
  assert.deepEqual(c.problems, []);
  stageImage(c, root);
  // The ConfigMap's files, as the kubelet mounts them at /etc/sluice; only what names this
  // machine's interface, socket and port differs, and the policy's mgmt list (the cluster's
  // 10.0.0.0/8 would hold the veth's 10.77.x.x addresses, which must be limited here).
  const cm = parse(readFileSync(join(REPO, 'deploy', 'kubernetes', 'configmap.yaml'), 'utf8'));
  const config = parse(cm.data['sluice.yaml']);
  policy = parse(cm.data['policy.yaml']);
  config.interfaces = [{ ...config.interfaces[0], iface: p.veth.b.ifname, netns: p.srv, max_entries: '4k' }];
  config.api = { socket: join(STATE_DIR, 'api.sock') };
  config.metrics = { listen: `127.0.0.1:${port}` };
  policy['mgmt'] = ['192.0.2.0/24'];
  const { argv, env } = imageCommand(c, root);
  configFile = argv[argv.indexOf('--config') + 1]!;
  assert.equal(configFile, join(root, 'etc', 'sluice', 'sluice.yaml'));
  mkdirSync(dirname(configFile), { recursive: true });
  writeConfig(join(dirname(configFile), config.interfaces[0].policy), stringify(policy));
  writeConfig(configFile, stringify(config));
  const defaults = policy['defaults'] as { rate: string; burst: number };
  const rate = Number.parseInt(defaults.rate, 10);

  // Started as the image starts it: the entry file itself (its #! line finds node on the PATH).
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env, PATH: `${dirname(process.execPath)}:${process.env['PATH']}` },
  });
  daemon = watchDaemon(child);
  const ready = await daemon.waitLog((l) => l.event === 'ready', 'ready', 30_000);
  assert.equal(ready['protected'], 1, JSON.stringify(ready));
  const start = daemon.logs.find((l) => l.event === 'start')!;
  assert.equal(start['config'], configFile);

  // Protected, by the kernel's account: the pinned link's program is the one on the interface,
  // and it is the image's object (its settings name the object under the staged root).
  const progs = await programs(p);
  assert.ok(progs.onIface && progs.onIface === progs.pinned, `XDP program ${progs.onIface} on the veth, ${progs.pinned} pinned`);
  const attached = daemon.logs.find((l) => l.event === 'attached')!;
  assert.equal(attached['program_id'], progs.onIface);
  assert.equal(loadSettings({ iface: p.veth.b.ifname, netns: p.srv })?.object, join(root, 'opt', 'sluice', 'bpf', 'sluice.bpf.o'), "the image's object is loaded, not the checkout's");
  await limited(p, rate, defaults.burst);

  const h = await http({ host: '127.0.0.1', port }, 'GET', '/healthz');
  assert.equal(h.status, 200, h.text);
  assert.deepEqual(h.json, { ok: true, interfaces: [{ iface: p.veth.b.ifname, netns: p.srv, protected: true }] });

  // SIGHUP: the policy the ConfigMap update would bring, applied in place (no new program).
  const n = daemon.logs.length;
  writeConfig(join(dirname(configFile), config.interfaces[0].policy), stringify({ ...policy, defaults: { ...defaults, rate: '200/s', burst: 20 } }));
  child.kill('SIGHUP');
  const reloaded = await daemon.waitLog((l) => daemon!.logs.indexOf(l) >= n && l.event === 'reloaded' && l['source'] === 'sighup', 'the SIGHUP reload');
  assert.ok((reloaded['changes'] as string[]).some((x) => /limits/.test(x)), JSON.stringify(reloaded['changes']));
  await limited(p, 200, 20);
  assert.equal((await programs(p)).onIface, progs.onIface, 'a reload keeps the program');

  // SIGTERM, as the kubelet stops the pod: exit code 0, the program stays attached and enforcing.
  child.kill('SIGTERM');
  const exit = await daemon.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, daemon.stderr.join(''));
  const stop = daemon.logs.find((l) => l.event === 'stop')!;
  assert.equal(stop['detached'], false);
  const left = await programs(p);
  assert.equal(left.onIface, progs.onIface, 'the program is still on the interface');
  assert.equal(left.pinned, progs.onIface, 'and pinned');
  await limited(p, 200, 20);
});
