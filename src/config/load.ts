/**
 * Reading the daemon's config: YAML -> schema -> checks across fields -> one frozen object, or one
 * ConfigError listing every problem (file, path, line, what is expected). Nothing here touches the
 * kernel, so a reload can be validated in full before anything changes.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { createSecureContext } from 'node:tls';
import { resolve } from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { DEFAULT_LIMITS, type Limits } from '../limiter/rule';
import type { FleetConfig } from '../limiter/fleet-config';
import type { Lists } from '../limiter/lists';
import type { RuleSpec } from '../limiter/policy';
import { ConfigError, formatProblem, type ConfigProblem } from './errors';
import { parsePolicy, type PolicyFile } from './policy-file';
import type { GeoConfig } from '../limiter/geoip';
import { z as zod } from 'zod';
import { configSchema, interfaceSchema, interfacesMessage, parseHost, shown, type LOG_LEVELS } from './schema';
import { pathText } from '../limiter/text';
import { deepFreeze, lineOf, notThisKind, sortByLine, zodProblems, type Seg } from './document';
import { limitsProblems, mergeLimits } from './limits';

export { pathText } from '../limiter/text';
export { deepFreeze, keyShown, lineOf, notThisKind, sortByLine, zodProblems, type Seg } from './document';
export { defaultRuleOf, limitsProblems, mergeLimits, ruleScopeOf } from './limits';

/** The file's top level, interfaces still unchecked (each is checked on its own). */
const topSchema = configSchema.extend({
  interfaces: zod.array(zod.unknown(), { error: (iss) => interfacesMessage(iss.input) }),
});

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface InterfaceConfig {
  iface: string;
  netns: string | null;
  mode: 'auto' | 'native' | 'generic';
  maxEntries: number;
  maxRules: number;
  /** Entries the compiled lists may have (sl_lists holds two halves of it). */
  maxListEntries: number;
  limits: Limits;
  lists: Lists;
  malformedDrop: boolean;
  /** From the interface's policy file (empty without one). */
  rules: RuleSpec[];
  geoip: GeoConfig | null;
  ruleIds: Record<string, number>;
  egress: boolean;
  policyFile: string | null;
  /** sl_config.new_states_per_sec; 0: the default. */
  newStatesPerSec: number;
}

export interface TcpConfig {
  host: string;
  port: number;
  tokenFile: string;
  /** The secret itself (trimmed) as read at load; the API re-reads the file when it changes. Never log it. */
  token: string;
  /** Host header values accepted (lower case, IPv6 without brackets; port null: any). */
  allowedHosts: { host: string; port: number | null }[];
  /** TLS from files (PEM), or null for plain HTTP. The key is a secret: never log it. */
  tls: { certFile: string; keyFile: string; cert: string; key: string } | null;
}

/** The fleet (docs/fleet.md): where global rules exchange their counts (src/limiter/fleet-config.ts). */
export type { FleetConfig } from '../limiter/fleet-config';

export interface DaemonConfig {
  /** Absolute path of the file read. */
  file: string;
  interfaces: InterfaceConfig[];
  api: { socket: string | null; tcp: TcpConfig | null };
  /** The read-only listener (/metrics, /healthz), or null: off. */
  metrics: { host: string; port: number; allowedHosts: { host: string; port: number | null }[] } | null;
  log: { level: LogLevel };
  reconcileIntervalMs: number;
  /** Global rules' exchange, or null: every rule is this node's alone. */
  fleet: FleetConfig | null;
  /** Not problems, but worth a log line (e.g. a token file others can read). */
  warnings: string[];
  /**
   * Every file the config was made of (the config, its policy files, their GeoIP CSVs): absolute
   * path -> SHA-256 of the content read. A reload is due when one of them reads otherwise.
   */
  inputs: Record<string, string>;
}

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1'];

/**
 * The Host values a TCP listener accepts by default, any port: its listen address, localhost,
 * 127.0.0.1 and ::1 (SSH tunnels send localhost; kubelet probes and Prometheus send the pod's
 * address, which is the listen address, or one of the host's when it listens on a wildcard).
 */
export function defaultAllowedHosts(listen: string): { host: string; port: null }[] {
  const hosts = new Set([listen.toLowerCase(), ...LOOPBACK_HOSTS]);
  if (listen === '0.0.0.0' || listen === '::') {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) hosts.add(a.address.toLowerCase().replace(/%.*$/, ''));
  }
  return [...hosts].map((host) => ({ host, port: null }));
}

/** Shortest accepted bearer token. */
export const MIN_TOKEN_LENGTH = 16;

/** What is wrong with a token file's content, or null; never the content itself. */
export function tokenProblem(text: string, file: string): string | null {
  const token = text.trim();
  if (token.length === 0) return `the token file ${file} is empty`;
  if (token.length < MIN_TOKEN_LENGTH) return `the token in ${file} has ${token.length} characters; use at least ${MIN_TOKEN_LENGTH} (e.g. \`openssl rand -hex 32\`)`;
  if (/\s/.test(token)) return `the token in ${file} contains white space; it must be one word`;
  return null;
}

function readSecretFile(file: string, what: string, warnings: string[]): string {
  const text = readFileSync(file, 'utf8');
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) warnings.push(`the ${what} ${file} can be read by users other than its owner (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 ${file}`);
  return text;
}

function readToken(file: string, at: Seg[], doc: Document, lc: LineCounter, problems: ConfigProblem[], warnings: string[]): string {
  const bad = (message: string): string => {
    problems.push({ path: pathText(at), line: lineOf(doc, lc, at), message });
    return '';
  };
  let text: string;
  try {
    text = readSecretFile(file, 'token file', warnings);
  } catch (e) {
    return bad(`cannot read the token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const p = tokenProblem(text, file);
  return p ? bad(p) : text.trim();
}

/** The certificate and key of the TCP listener, checked as a pair (messages never show them). */
function readTls(certFile: string, keyFile: string, at: Seg[], doc: Document, lc: LineCounter, problems: ConfigProblem[], warnings: string[]): TcpConfig['tls'] {
  const bad = (k: string, message: string): null => {
    problems.push({ path: pathText([...at, k]), line: lineOf(doc, lc, [...at, k]), message });
    return null;
  };
  let cert: string;
  let key: string;
  try { cert = readFileSync(certFile, 'utf8'); } catch (e) { return bad('cert_file', `cannot read the certificate ${certFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
  try { key = readSecretFile(keyFile, 'TLS key file', warnings); } catch (e) { return bad('key_file', `cannot read the key ${keyFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(cert)) return bad('cert_file', `${certFile} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) return bad('key_file', `${keyFile} holds no PEM private key (expected -----BEGIN … PRIVATE KEY-----)`);
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    // OpenSSL's reason (e.g. "key values mismatch"), never the PEM text.
    const reason = String((e as { reason?: unknown }).reason ?? (e as { code?: unknown }).code ?? 'unusable');
    return bad('key_file', `the certificate ${certFile} and the key ${keyFile} do not make a TLS identity (${reason}): give the key of that certificate`);
  }
  return { certFile, keyFile, cert, key };
}

/** Validate a config given as text (`file` names it in messages and resolves relative paths). */
/**
 * What the caller knows beyond the files (the config reads no file but the ones it is given, and
 * those they name): the agent hands in the rule ids its settings keep for an interface, so that a
 * policy file's rules keep their ids (and their counters) across reloads and restarts.
 */
export interface ConfigContext {
  /** The rule ids (name -> id) the interface's saved settings hold; default none. */
  ruleIds?: (place: { iface: string; netns: string | null }) => Record<string, number>;
}

export function parseConfig(text: string, file: string, ctx: ConfigContext = {}): DaemonConfig {
  file = resolve(file);
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  for (const e of doc.errors) {
    // The message ends in " at line L, column C:" and a code frame; the line is given apart.
    problems.push({ path: '', ...(e.linePos ? { line: e.linePos[0].line } : {}), message: `YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:$/, '')}` });
  }
  if (problems.length) throw new ConfigError(file, problems);

  // The top level and each interface apart, so that one bad interface does not hide the checks
  // across fields of the others: every problem of the file is in the one error.
  const raw = doc.toJS({ maxAliasCount: 100 }) as unknown;
  if (raw === null || raw === undefined) {
    // Never "no interfaces": a file caught empty while an editor rewrites it must not take
    // every protection down. `interfaces: []` says so on purpose.
    throw new ConfigError(file, [{ path: '', message: 'the file is empty; expected at least `interfaces:` (write `interfaces: []` for none)' }]);
  }
  notThisKind(raw, Object.keys(configSchema.shape), file, 'sluice config file');
  const parsed = topSchema.safeParse(raw);
  if (!parsed.success) problems.push(...zodProblems(parsed.error, doc, lc));
  const items = parsed.success ? parsed.data.interfaces : Array.isArray((raw as { interfaces?: unknown })?.interfaces) ? (raw as { interfaces: unknown[] }).interfaces : [];
  const good: [number, zod.output<typeof interfaceSchema>][] = [];
  const seen = new Map<string, number>();
  items.forEach((item, n) => {
    const { iface, netns } = (item ?? {}) as { iface?: unknown; netns?: unknown };
    if (typeof iface === 'string') {
      const key = `${typeof netns === 'string' ? netns : ''}/${iface}`;
      const first = seen.get(key);
      if (first !== undefined) {
        problems.push({ path: `interfaces[${n}]`, line: lineOf(doc, lc, ['interfaces', n]), message: `${iface}${typeof netns === 'string' ? ` in ${netns}` : ''} is already configured in interfaces[${first}]` });
      }
      seen.set(key, n);
    }
    const r = interfaceSchema.safeParse(item);
    if (r.success) good.push([n, r.data]);
    else problems.push(...zodProblems(r.error, doc, lc, ['interfaces', n], interfaceSchema));
  });

  const warnings: string[] = [];
  const inputs: Record<string, string> = { [file]: sha256(text) };
  const interfaces: InterfaceConfig[] = good.map(([n, i]) => {
    // A policy file gives rules, lists and GeoIP tiers; the interface's own limits and lists add to it.
    let pol: PolicyFile | undefined;
    if (i.policy) {
      // Relative to the config file's directory, whatever the daemon's working directory.
      const pfile = resolve(file, '..', i.policy);
      const here = (message: string): void => { problems.push({ path: pathText(['interfaces', n, 'policy']), line: lineOf(doc, lc, ['interfaces', n, 'policy']), message }); };
      let ptext: string | undefined;
      try {
        ptext = readFileSync(pfile, 'utf8');
        inputs[pfile] = sha256(ptext);
      } catch (e) {
        inputs[pfile] = '';
        here(`${pfile}: cannot read the policy file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      if (ptext !== undefined) {
        try {
          pol = parsePolicy(ptext, pfile, ctx.ruleIds?.({ iface: i.iface, netns: i.netns ?? null }) ?? {}, i.max_rules);
          if (pol.geoip?.csv && pol.geoip.csvSha256) inputs[pol.geoip.csv] = pol.geoip.csvSha256;
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          Object.assign(inputs, e.inputs);
          for (const q of e.problems) here(formatProblem(pfile, q));
        }
      }
    }
    const limits = mergeLimits(pol?.limits ?? DEFAULT_LIMITS, i.limits);
    for (const [k, message] of limitsProblems(limits)) {
      const at: Seg[] = ['interfaces', n, 'limits', ...(k ? [k] : [])];
      problems.push({ path: pathText(at), line: lineOf(doc, lc, at), message });
    }
    const uniq = (xs: string[] | undefined): string[] => [...new Set(xs ?? [])];
    return {
      iface: i.iface,
      netns: i.netns ?? null,
      mode: i.mode,
      maxEntries: i.max_entries,
      maxRules: i.max_rules,
      maxListEntries: i.max_list_entries,
      newStatesPerSec: i.new_states_per_sec,
      limits,
      lists: {
        mgmt: uniq([...pol?.lists.mgmt ?? [], ...i.lists?.mgmt ?? []]),
        deny: uniq([...pol?.lists.deny ?? [], ...i.lists?.deny ?? []]),
        allow: uniq([...pol?.lists.allow ?? [], ...i.lists?.allow ?? []]),
      },
      malformedDrop: i.malformed === 'drop' || !!pol?.malformedDrop,
      rules: pol ? [...pol.rules] : [],
      geoip: pol?.geoip ?? null,
      ruleIds: pol ? { ...pol.ruleIds } : {},
      egress: i.egress ?? pol?.egress ?? false,
      policyFile: pol?.file ?? null,
    };
  });

  let tcp: TcpConfig | null = null;
  const c = parsed.data;
  if (c?.api.tcp) {
    const tokenFile = resolve(file, '..', c.api.tcp.token_file);
    const token = readToken(tokenFile, ['api', 'tcp', 'token_file'], doc, lc, problems, warnings);
    const t = c.api.tcp.tls;
    const tls = t ? readTls(resolve(file, '..', t.cert_file), resolve(file, '..', t.key_file), ['api', 'tcp', 'tls'], doc, lc, problems, warnings) : null;
    const host = c.api.tcp.listen.host;
    const allowedHosts = c.api.tcp.allowed_hosts ? c.api.tcp.allowed_hosts.map((h) => parseHost(h)!) : defaultAllowedHosts(host);
    tcp = { host, port: c.api.tcp.listen.port, tokenFile, token, allowedHosts, tls };
  }
  let fleet: FleetConfig | null = null;
  if (c?.fleet) {
    const f = c.fleet;
    const at = (k: Seg[], message: string): void => { problems.push({ path: pathText(['fleet', ...k]), line: lineOf(doc, lc, ['fleet', ...k]), message }); };
    if (!f.redis === !f.cluster) at([], f.redis ? 'redis and cluster both given: name a standalone Redis (redis: HOST:PORT) or the seed nodes of a cluster (cluster: [HOST:PORT, …]), not both' : 'required: redis (HOST:PORT of a standalone Redis) or cluster (its seed nodes)');
    let password: string | null = null;
    if (f.password_file) {
      const pf = resolve(file, '..', f.password_file);
      try { password = readSecretFile(pf, 'Redis password file', warnings).trim(); } catch (e) { at(['password_file'], `cannot read the password file ${pf}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
      if (password === '') at(['password_file'], `the password file ${pf} is empty`);
    }
    let tls: FleetConfig['tls'] = null;
    if (f.tls) {
      tls = {};
      const read = (k: 'ca_file' | 'cert_file' | 'key_file', to: 'ca' | 'cert' | 'key'): void => {
        const v = f.tls![k];
        if (!v) return;
        const path = resolve(file, '..', v);
        try { tls![to] = k === 'key_file' ? readSecretFile(path, 'Redis TLS key file', warnings) : readFileSync(path, 'utf8'); } catch (e) { at(['tls', k], `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
      };
      read('ca_file', 'ca');
      read('cert_file', 'cert');
      read('key_file', 'key');
      if (!!tls.cert !== !!tls.key && !problems.length) at(['tls'], 'a client certificate needs its key, and a key its certificate: give both cert_file and key_file, or neither');
      if (f.tls.server_name) tls.servername = f.tls.server_name;
    }
    const timeoutMs = f.timeout ?? f.interval;
    fleet = {
      mode: f.cluster ? 'cluster' : 'standalone',
      nodes: f.cluster ?? (f.redis ? [f.redis] : []),
      name: f.name,
      node: f.node ?? hostname().replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 63),
      intervalMs: f.interval,
      timeoutMs,
      maxKeys: f.max_keys,
      username: f.username ?? null,
      password,
      tls,
    };
  }
  if (problems.length || !c) throw Object.assign(new ConfigError(file, sortByLine(problems)), { inputs });

  return deepFreeze({
    file,
    interfaces,
    api: { socket: c.api.socket, tcp },
    metrics: c.metrics ? { host: c.metrics.listen.host, port: c.metrics.listen.port, allowedHosts: c.metrics.allowed_hosts ? c.metrics.allowed_hosts.map((h) => parseHost(h)!) : defaultAllowedHosts(c.metrics.listen.host) } : null,
    log: { level: c.log.level },
    reconcileIntervalMs: c.reconcile_interval,
    fleet,
    warnings,
    inputs,
  });
}

/** Read and validate a config file. */
export function loadConfig(file: string, ctx: ConfigContext = {}): DaemonConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(resolve(file), [{ path: '', message: `cannot read the file (${code ?? (e as Error).message})${code === 'ENOENT' ? ': check the path given to --config' : ''}` }]);
  }
  return parseConfig(text, file, ctx);
}

export { shown };
