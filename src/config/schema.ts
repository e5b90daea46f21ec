/**
 * The daemon's config file, as one schema: every key, its default, and what it accepts. Unknown
 * keys are refused (a misspelt key must not silently mean "the default"). Values that operators
 * write with units ("10k", "2MB", "1s") go through src/limiter/units.ts, so that the file, the
 * command line and the HTTP API say the same things about the same mistakes.
 *
 * To add a key: add it here (snake_case, with its default), carry it into the resolved type in
 * load.ts, and describe it in docs/config.md.
 */
import { z } from 'zod';
import { ifaceName, netnsName, parseHost } from '../limiter/names';
import { shown } from '../limiter/text';
import { formatPrefix, parsePrefix } from '../limiter/policy';
import { FORMS, MAX_RATE, parseBytes, parseBytesPer, parseCount, parseDurationMs, parseNewStates, parseRatePer } from '../limiter/units';
import { MAX_WINDOW_MS } from '../limiter/policy';

export { ifaceName, netnsName, parseHost } from '../limiter/names';
export { shown } from '../limiter/text';

export const DEFAULT_SOCKET = '/run/sluice/api.sock';
export const DEFAULT_MAX_ENTRIES = 100_000;
export const DEFAULT_MAX_RULES = 1024;
export const DEFAULT_RECONCILE_MS = 10_000;
/** 2^28 state entries is some 20 GiB of kernel memory: beyond that it is a typo. */
export const MAX_MAX_ENTRIES = 2 ** 28;
/** Rule ids are 16 bits in the data path. */
export const MAX_MAX_RULES = 65_535;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * What kind of value a whole document is, without its content: a file named by mistake (a
 * password file, a private key) parses as one long string, which must never be echoed.
 */
export function kindOf(v: unknown): string {
  if (typeof v === 'string') return `text (${v.length} characters, not shown)`;
  return shown(v);
}

/** A number or a string with a unit, through one of the parsers of units.ts. */
export function unitValue<T>(parse: (v: string | number) => T, expected: string) {
  return z.unknown().transform((v, ctx): T => {
    if (typeof v !== 'number' && typeof v !== 'string') {
      ctx.issues.push({ code: 'custom', message: `expected ${expected}, got ${shown(v)}`, input: v });
      return z.NEVER;
    }
    try {
      return parse(v);
    } catch (e) {
      ctx.issues.push({ code: 'custom', message: (e as Error).message, input: v });
      return z.NEVER;
    }
  });
}

/** Like unitValue, and null or "none" mean "no limit of this kind" (null). */
export function optionalLimit<T>(parse: (v: string | number) => T, expected: string) {
  return z.unknown().transform((v, ctx): T | null => {
    if (v === null || v === 'none') return null;
    if (typeof v !== 'number' && typeof v !== 'string') {
      ctx.issues.push({ code: 'custom', message: `expected ${expected}, or none; got ${shown(v)}`, input: v });
      return z.NEVER;
    }
    try {
      return parse(v);
    } catch (e) {
      ctx.issues.push({ code: 'custom', message: (e as Error).message, input: v });
      return z.NEVER;
    }
  });
}

export const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: (iss) => `expected one of ${values.join(', ')}, got ${shown(iss.input)}` });

export const wholeIn = (what: string, min: number, max: number) =>
  z.number({ error: (iss) => `expected ${what}: a whole number from ${min} to ${max}, got ${shown(iss.input)}` })
    .int({ error: (iss) => `${what} must be a whole number, got ${shown(iss.input)}` })
    .min(min, { error: `${what} must be at least ${min}` })
    .max(max, { error: `${what} must be at most ${max}` });

/** The default rule's limits; every key optional (the config fills in defaults, the API changes only what it names). */
export const limitsSchema = z.strictObject({
  algorithm: oneOf(['fixed', 'sliding', 'token', 'gcra']).optional(),
  rate: optionalLimit((v) => parseRatePer(v, 'rate'), `packets per second, minute or hour (${FORMS.rate})`).optional(),
  burst: unitValue((v) => parseCount(v, 'burst', 0), `a number of packets (${FORMS.count})`).optional(),
  bytes_rate: optionalLimit((v) => parseBytesPer(v, 'bytes rate'), `bytes per second, minute or hour (${FORMS.bytesRate})`).optional(),
  bytes_burst: unitValue((v) => parseBytes(v, 'bytes burst', 0), `a number of bytes (${FORMS.bytes})`).optional(),
  window: unitValue((v) => parseDurationMs(v, 'window', 1, MAX_WINDOW_MS), `a duration up to 1h (${FORMS.duration})`).optional(),
  /** global: the rate is one limit for the whole fleet (docs/fleet.md); node (default): for this node. */
  scope: oneOf(['node', 'global']).optional(),
  /** With scope global: each node's own limit while the fleet cannot be reached (default: the rate). */
  local: unitValue((v) => parseRatePer(v, 'local'), `packets per second, minute or hour (${FORMS.rate}), per node`).optional(),
  key: z.strictObject({
    v4: wholeIn('IPv4 key prefix length', 1, 32).optional(),
    v6: wholeIn('IPv6 key prefix length', 1, 128).optional(),
  }, { error: (iss) => `expected a mapping such as { v4: 32, v6: 64 }, got ${shown(iss.input)}` }).optional(),
}, { error: (iss) => `expected a mapping of limits (algorithm, rate, burst, bytes_rate, bytes_burst, window, scope, local, key), got ${shown(iss.input)}` });

export type LimitsInput = z.output<typeof limitsSchema>;

export const cidr = z.unknown().transform((v, ctx): string => {
  if (typeof v !== 'string') {
    ctx.issues.push({ code: 'custom', message: `expected an address or prefix such as 192.0.2.0/24 or 2001:db8::/32, got ${shown(v)}`, input: v });
    return z.NEVER;
  }
  try {
    return formatPrefix(parsePrefix(v));
  } catch (e) {
    ctx.issues.push({ code: 'custom', message: (e as Error).message, input: v });
    return z.NEVER;
  }
});

const cidrList = z.array(cidr, { error: (iss) => `expected a list of prefixes, got ${shown(iss.input)}` }).optional();

export const listsSchema = z.strictObject({ mgmt: cidrList, allow: cidrList, deny: cidrList }, {
  error: (iss) => `expected a mapping with mgmt, allow and deny lists, got ${shown(iss.input)}`,
});

export const interfaceSchema = z.strictObject({
  iface: ifaceName,
  netns: netnsName.nullable().optional(),
  mode: oneOf(['auto', 'native', 'generic']).default('auto'),
  max_entries: unitValue((v) => parseCount(v, 'max_entries', 16), `a number of entries (${FORMS.count})`)
    .pipe(z.number().max(MAX_MAX_ENTRIES, { error: `max_entries must be at most ${MAX_MAX_ENTRIES}` }))
    .default(DEFAULT_MAX_ENTRIES),
  max_rules: wholeIn('max_rules', 2, MAX_MAX_RULES).default(DEFAULT_MAX_RULES),
  /** Entries the compiled allow/deny/management lists may have; fixed at load. */
  max_list_entries: wholeIn('max_list_entries', 1, 1 << 24).default(65536),
  limits: limitsSchema.optional(),
  lists: listsSchema.optional(),
  malformed: oneOf(['pass', 'drop']).default('pass'),
  /** sl_config.new_states_per_sec (docs/datapath.md); 0: the data path's default. */
  new_states_per_sec: unitValue((v) => parseNewStates(v), 'new states a second per CPU (e.g. 50k/s; 0: the default)').default(0),
  /** A policy file (docs/policy.md), relative to this file: rules, lists, GeoIP tiers. */
  policy: z.string({ error: (iss) => `expected the path of a policy file, got ${shown(iss.input)}` }).min(1).optional(),
  egress: z.boolean({ error: (iss) => `expected true or false, got ${shown(iss.input)}` }).optional(),
}, { error: (iss) => `expected a mapping with at least iface, got ${shown(iss.input)}` });

const listen = z.unknown().transform((v, ctx): { host: string; port: number } => {
  const text = typeof v === 'number' ? `127.0.0.1:${v}` : v;
  const m = typeof text === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text) : null;
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) {
    ctx.issues.push({ code: 'custom', message: `expected HOST:PORT such as 127.0.0.1:9180 or [::1]:9180, got ${shown(v)}`, input: v });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2])!, port };
});

const hostEntry = z.string({ error: (iss) => `expected a host name or address, got ${shown(iss.input)}` })
  .superRefine((v, ctx) => { if (!parseHost(v)) ctx.addIssue({ code: 'custom', message: `${shown(v)} is not a host name or address (e.g. sluice.example.org, 10.0.0.5, [::1], with an optional :PORT)`, input: v }); });

export const apiSchema = z.strictObject({
  socket: z.string({ error: (iss) => `expected an absolute path for the Unix socket, or null for none; got ${shown(iss.input)}` })
    .regex(/^\//, { error: 'the socket path must be absolute' })
    .nullable()
    .default(DEFAULT_SOCKET),
  tcp: z.strictObject({
    listen,
    token_file: z.string({
      error: (iss) => (iss.input === undefined
        ? 'required: the TCP API is served only with a bearer token; put a secret in a file readable by root alone (`openssl rand -hex 32 > /etc/sluice/token && chmod 600 /etc/sluice/token`) and name it here'
        : `expected the path of the token file, got ${shown(iss.input)}`),
    }).min(1, { error: 'the token file path is empty' }),
    /** Host header values accepted (any port unless one is given); default: see load.ts. */
    allowed_hosts: z.array(hostEntry, { error: (iss) => `expected a list of host names or addresses (e.g. [sluice.example.org, 10.0.0.5]), got ${shown(iss.input)}` }).min(1, { error: 'an empty list would refuse every request: leave allowed_hosts out for the default' }).optional(),
    tls: z.strictObject({
      cert_file: z.string({ error: (iss) => `expected the path of a PEM certificate (chain), got ${shown(iss.input)}` }).min(1),
      key_file: z.string({ error: (iss) => `expected the path of the PEM private key, got ${shown(iss.input)}` }).min(1),
    }, { error: (iss) => `expected a mapping { cert_file: PATH, key_file: PATH }, got ${shown(iss.input)}` }).optional(),
  }, { error: (iss) => `expected a mapping { listen: HOST:PORT, token_file: PATH, allowed_hosts?: [HOST, …], tls?: { cert_file, key_file } }, got ${shown(iss.input)}` }).nullable().optional(),
}, { error: (iss) => `expected a mapping with socket and/or tcp, got ${shown(iss.input)}` });

/**
 * Why `interfaces` is refused. Never "none" by omission: a file cut short (`interfaces:` with
 * nothing under it) or without the key must not take every protection down; `[]` says so on purpose.
 */
export function interfacesMessage(v: unknown): string {
  if (v === undefined) return 'required: the list of interfaces to protect (a file without it may have been caught half-written); write `interfaces: []` to protect none on purpose';
  if (v === null) return '`interfaces:` has nothing under it (a file cut short?): list the interfaces to protect, or write `interfaces: []` to protect none on purpose';
  return `expected a list of interfaces, got ${shown(v)}`;
}

/** The read-only listener: /metrics and /healthz, no token (docs/api.md). */
export const metricsSchema = z.strictObject({
  listen,
  /** Host header values accepted (any port unless one is given); default as api.tcp's (load.ts). */
  allowed_hosts: z.array(hostEntry, { error: (iss) => `expected a list of host names or addresses (e.g. [10.0.0.5, sluice-metrics.kube-system.svc]), got ${shown(iss.input)}` }).min(1, { error: 'an empty list would refuse every request: leave allowed_hosts out for the default' }).optional(),
}, { error: (iss) => `expected a mapping { listen: HOST:PORT, allowed_hosts?: [HOST, …] }, or null for none; got ${shown(iss.input)}` });

/** A Redis node as HOST:PORT ("127.0.0.1:6379", "[::1]:6379", "redis.example:6379"). */
const redisNode = z.unknown().transform((v, ctx): { host: string; port: number } => {
  const m = typeof v === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/.exec(v.replace(/^rediss?:\/\//, '')) : null;
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) {
    ctx.issues.push({ code: 'custom', message: `expected a Redis node as HOST:PORT such as 127.0.0.1:6379, got ${shown(v)}`, input: v });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2])!, port };
});

export const DEFAULT_FLEET_INTERVAL_MS = 100;
export const DEFAULT_FLEET_MAX_KEYS = 16384;

/** Global rules across nodes (docs/fleet.md): the Redis they exchange through. */
export const fleetSchema = z.strictObject({
  /** Standalone Redis: one node. */
  redis: redisNode.optional(),
  /** Redis Cluster: seed nodes (any masters; the rest is discovered). */
  cluster: z.array(redisNode, { error: (iss) => `expected a list of HOST:PORT seed nodes of the cluster, got ${shown(iss.input)}` }).min(1, { error: 'a cluster needs at least one seed node' }).optional(),
  /** The fleet's name: the prefix of its keys, so that fleets can share a Redis. */
  name: z.string({ error: (iss) => `expected a fleet name, got ${shown(iss.input)}` })
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, { error: (iss) => `${shown(iss.input)} is not a fleet name (letters, digits, "_", "-", "."; at most 63)` }).default('sluice'),
  /** This node's name in the fleet; default the host name. */
  node: z.string({ error: (iss) => `expected a node name, got ${shown(iss.input)}` })
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, { error: (iss) => `${shown(iss.input)} is not a node name (letters, digits, "_", "-", "."; at most 63)` }).optional(),
  interval: unitValue((v) => parseDurationMs(v, 'interval', 10, 10_000), `a duration from 10ms to 10s (${FORMS.duration})`).default(DEFAULT_FLEET_INTERVAL_MS),
  /** How long one exchange may take before the round counts as failed; default the interval. */
  timeout: unitValue((v) => parseDurationMs(v, 'timeout', 5, 10_000), `a duration from 5ms to 10s (${FORMS.duration})`).optional(),
  /** Keys of global rules tracked per interface (sl_fleet_cand's size): the bound of one round. */
  max_keys: unitValue((v) => parseCount(v, 'max_keys', 16), `a number of keys (${FORMS.count})`)
    .pipe(z.number().max(DEFAULT_FLEET_MAX_KEYS, { error: `max_keys must be at most ${DEFAULT_FLEET_MAX_KEYS} (the size of sl_fleet_cand)` })).default(DEFAULT_FLEET_MAX_KEYS),
  username: z.string({ error: (iss) => `expected a Redis user name, got ${shown(iss.input)}` }).min(1).optional(),
  /** A file holding the Redis password (AUTH), readable by root alone. */
  password_file: z.string({ error: (iss) => `expected the path of a file holding the Redis password, got ${shown(iss.input)}` }).min(1).optional(),
  tls: z.strictObject({
    ca_file: z.string().min(1).optional(),
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    server_name: z.string().min(1).optional(),
  }, { error: (iss) => `expected a mapping { ca_file?, cert_file?, key_file?, server_name? } (an empty one: TLS with the system's CAs), got ${shown(iss.input)}` }).optional(),
}, { error: (iss) => `expected a mapping { redis: HOST:PORT | cluster: [HOST:PORT, …], name?, node?, interval?, timeout?, max_keys?, username?, password_file?, tls? }, or null for none; got ${shown(iss.input)}` });

export const configSchema = z.strictObject({
  interfaces: z.array(interfaceSchema, { error: (iss) => interfacesMessage(iss.input) }),
  api: apiSchema.prefault({}),
  metrics: metricsSchema.nullable().default(null),
  log: z.strictObject({ level: oneOf(LOG_LEVELS).default('info') }, {
    error: (iss) => `expected a mapping { level: info }, got ${shown(iss.input)}`,
  }).prefault({}),
  reconcile_interval: unitValue((v) => parseDurationMs(v, 'reconcile_interval', 1000, 3_600_000), `a duration (${FORMS.duration})`)
    .default(DEFAULT_RECONCILE_MS),
  fleet: fleetSchema.nullable().default(null),
}, { error: (iss) => `expected a mapping at the top of the file (interfaces, api, metrics, log, fleet), got ${kindOf(iss.input)}` });

export type ConfigInput = z.output<typeof configSchema>;

export { MAX_RATE };
