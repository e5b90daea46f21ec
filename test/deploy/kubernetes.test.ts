/**
 * Issue 15, step 2: the manifests of deploy/kubernetes, validated offline. Each YAML document is
 * parsed (the `yaml` package) and validated against the Kubernetes schemas (kubernetes-models 4.x,
 * `new DaemonSet(obj).validate()` …); the ConfigMap's config passes Sluice's own config loader and
 * its policy the policy loader; and the DaemonSet says what docs/deploy.md says it does (probes on
 * the read-only listener's port, the capabilities, the bpffs and /run mounts, the rolling update).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config';
import { loadPolicy } from '../../src/config/policy-file';
import { REPO } from '../daemon/helpers';

const DIR = join(REPO, 'deploy', 'kubernetes');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

function documents(): { file: string; obj: Obj }[] {
  const out: { file: string; obj: Obj }[] = [];
  for (const file of readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(DIR, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      const obj = doc.toJS() as Obj;
      if (obj !== null) out.push({ file, obj });
    }
  }
  return out;
}

const MODELS: Record<string, new (o: Obj) => { validate(): void }> = {
  'apps/v1/DaemonSet': DaemonSet, 'v1/ConfigMap': ConfigMap, 'v1/Service': Service,
};

test('every manifest validates against the Kubernetes schema of its kind', () => {
  const docs = documents();
  const kinds = docs.map((d) => d.obj.kind).sort();
  assert.deepEqual(kinds, ['ConfigMap', 'DaemonSet', 'Kustomization', 'Service']);
  for (const { file, obj } of docs) {
    if (obj.kind === 'Kustomization') {
      // Not a cluster object: it must list every manifest of the directory.
      assert.deepEqual([...obj.resources].sort(), docs.filter((d) => d.obj.kind !== 'Kustomization').map((d) => d.file).sort(), `${file}: resources`);
      continue;
    }
    const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
    assert.ok(Model, `${file}: no model for ${obj.apiVersion} ${obj.kind}`);
    assert.doesNotThrow(() => new Model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata?.name}`);
  }
});

test('the validation is real: a DaemonSet with a misspelt or mistyped field is refused', () => {
  const ds = documents().find((d) => d.obj.kind === 'DaemonSet')!.obj;
  const broken = structuredClone(ds);
  broken.spec.template.spec.containers[0].ports[0].containerPort = 'metrics';
  assert.throws(() => new DaemonSet(broken).validate());
  const noSelector = structuredClone(ds);
  delete noSelector.spec.selector;
  assert.throws(() => new DaemonSet(noSelector).validate());
});

test("the ConfigMap's config passes Sluice's config loader, its policy the policy loader", () => {
  const cm = documents().find((d) => d.obj.kind === 'ConfigMap')!.obj;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-k8s-'));
  try {
    // As the kubelet mounts it: each key a file in one directory (names resolve as siblings).
    for (const [k, v] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(dir, k), v);
    const cfg = loadConfig(join(dir, 'sluice.yaml'));
    assert.equal(cfg.interfaces.length, 1);
    assert.equal(cfg.interfaces[0]!.policyFile, join(dir, 'policy.yaml'));
    assert.ok(cfg.interfaces[0]!.rules.length >= 1, 'the policy\'s rules are in the config');
    assert.deepEqual({ host: cfg.metrics?.host, port: cfg.metrics?.port }, { host: '0.0.0.0', port: 9181 });
    const pol = loadPolicy(join(dir, 'policy.yaml'));
    assert.deepEqual(pol.rules.map((r) => r.name), ['dns', 'syn']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the DaemonSet: host network, probes on the read-only listener, the capabilities it needs and no others, pins and /run from the host', () => {
  const docs = documents();
  const ds = docs.find((d) => d.obj.kind === 'DaemonSet')!.obj;
  const svc = docs.find((d) => d.obj.kind === 'Service')!.obj;
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  assert.equal(pod.hostNetwork, true);
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  assert.deepEqual(c.ports, [{ name: 'metrics', containerPort: 9181, protocol: 'TCP' }]);
  assert.equal(c.readinessProbe.httpGet.path, '/healthz');
  assert.equal(c.livenessProbe.httpGet.port, 'metrics');
  assert.equal(c.securityContext.privileged, false);
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_ADMIN'] });
  const text = readFileSync(join(DIR, 'daemonset.yaml'), 'utf8');
  for (const cap of ['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN', 'CAP_SYS_ADMIN']) assert.match(text, new RegExp(`# ${cap}:`), `${cap} is justified in a comment`);
  assert.ok(c.resources.requests && c.resources.limits, 'requests and limits');
  const host = Object.fromEntries(pod.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]));
  assert.deepEqual(host, { bpffs: '/sys/fs/bpf', run: '/run' });
  assert.equal(c.command, undefined, "the image's ENTRYPOINT runs (test/deploy/image.test.ts checks args against the image's CMD)");
  assert.deepEqual(c.args, ['run', '--config', '/etc/sluice/sluice.yaml']);
  assert.equal(svc.spec.ports[0].targetPort, 'metrics');
  assert.equal(ds.spec.template.metadata.annotations['prometheus.io/port'], '9181');
});

test('the fleet quick start (deploy/kubernetes/fleet): one Redis, and the config of the base with fleet: and a global default rule', () => {
  const dir = join(DIR, 'fleet');
  const docs: { file: string; obj: Obj }[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      docs.push({ file, obj: doc.toJS() as Obj });
    }
  }
  const kust = docs.find((d) => d.obj.kind === 'Kustomization')!.obj;
  assert.deepEqual(kust.resources, ['../', 'redis.yaml']);
  assert.deepEqual(kust.patches, [{ path: 'configmap-fleet.yaml' }]);
  const models: Record<string, new (o: Obj) => { validate(): void }> = { Deployment, Service, ConfigMap };
  for (const { file, obj } of docs.filter((d) => d.obj.kind !== 'Kustomization')) {
    assert.doesNotThrow(() => new models[obj.kind]!(obj).validate(), `${file}: ${obj.kind} ${obj.metadata?.name}`);
  }
  const svc = docs.find((d) => d.obj.kind === 'Service')!.obj;
  const cm = docs.find((d) => d.obj.kind === 'ConfigMap')!.obj;
  const tmp = mkdtempSync(join(tmpdir(), 'sluice-k8s-fleet-'));
  try {
    for (const [k, v] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(tmp, k), v);
    const cfg = loadConfig(join(tmp, 'sluice.yaml'));
    assert.equal(cfg.fleet?.mode, 'standalone');
    assert.deepEqual(cfg.fleet?.nodes, [{ host: `${svc.metadata.name}.${svc.metadata.namespace}.svc.cluster.local`, port: svc.spec.ports[0].port }]);
    assert.equal(cfg.interfaces[0]!.limits.scope, 'global');
    assert.deepEqual(cfg.interfaces[0]!.rules.map((r) => r.scope ?? 'node'), ['node', 'node']);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // The daemons resolve the Service's name from the host network.
  assert.equal(documents().find((d) => d.obj.kind === 'DaemonSet')!.obj.spec.template.spec.dnsPolicy, 'ClusterFirstWithHostNet');
});
