/**
 * The daemon's HTTP API (docs/api.md): JSON routes over what the daemon protects, and /metrics.
 * Served on a Unix socket (root only) and, when configured, on TCP with a bearer token. The
 * handlers are built by buildApi() without listening, so that tests drive them with inject().
 *
 * What keeps a browser out (every listener; docs/api.md, "Security"): on TCP a Host outside the
 * allowed hosts is refused (DNS rebinding); a cross-site Origin or Sec-Fetch-Site is refused; and
 * every write needs Content-Type: application/json, which no cross-site "simple request" (a form,
 * a body-less fetch) can send without a CORS preflight that this API never grants.
 */
import { CONSOLE_CSS, CONSOLE_HTML } from './console-page';
import { CONSOLE_JS } from './console-script';
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { EventFilter, type EventBudget, type EventView } from '../limiter/events';
import { ifaceName, netnsName, parseHost } from '../limiter/names';
import { pathText, shown } from '../limiter/text';
import { parseDurationMs } from '../limiter/units';
import { ApiCode, ApiError, httpError, type Problem } from './errors';

export interface PlaceQuery {
  iface: string;
  netns: string | null;
}

/**
 * What the API serves; the agent's daemon implements it and src/cli hands it in (the API imports no
 * agent or config module). `L` is what a valid `limits` of PUT /v1/limits is: the backend checks it
 * with its own schema (`limitsSchema`, the config's), so that the API and the config file say the same
 * things about the same mistakes.
 */
export interface ApiBackend<L = unknown> {
  /** The schema of the `limits` of PUT /v1/limits (its messages are the config file's). */
  readonly limitsSchema: z.ZodType<L>;
  status(): Promise<unknown>;
  /** One interface's report, or every managed interface's ({ interfaces: [...] }) without a place. */
  stats(place?: PlaceQuery): Promise<unknown>;
  top(place: PlaceQuery, n: number): Promise<unknown>;
  /** Change the limits; the answer is { iface, netns, limits } as JSON (snake_case keys). */
  setLimits(place: PlaceQuery, limits: L): Promise<unknown>;
  reload(source: string): Promise<unknown>;
  metrics(): Promise<{ contentType: string; body: string }>;
  /** The last 15 minutes at one point a second, as columns (GET /v1/history). */
  history(place: PlaceQuery, sinceMs?: number): Promise<unknown>;
  /** The live policy, read-only (GET /v1/policy). */
  policy(place: PlaceQuery): Promise<unknown>;
  /** Add to or remove from the deny or allow list; a deny entry for a while (POST /v1/lists). */
  editList(place: PlaceQuery, e: { list: 'deny' | 'allow'; op: 'add' | 'del'; prefix: string; forMs?: number }): Promise<unknown>;
  /** A rule of the policy file to dry-run or back (POST /v1/rules/mode). */
  setRuleMode(place: PlaceQuery, rule: string, mode: 'dry-run' | 'enforce'): Promise<unknown>;
  /** Confirm, or roll back now, a change applied with --confirm-within (POST /v1/policy/confirm, /v1/policy/rollback). */
  confirmPending(place: PlaceQuery): Promise<unknown>;
  rollbackPending(place: PlaceQuery): Promise<unknown>;
  /** Events of a managed interface as they are decided (GET /v1/events); `end` when they stop. */
  subscribeEvents(place: PlaceQuery, filter: EventFilter, send: (e: EventView) => void, end: () => void): { budget: () => EventBudget | undefined; unsubscribe: () => void };
}

export interface ApiOptions {
  /**
   * Require `Authorization: Bearer <token>` on every request (the TCP listener): the token, or a
   * source read at each request (fileToken: the file re-read when it changes).
   */
  token?: string | null | TokenSource;
  logger: Logger;
  /** Name of the listener in logs: "unix" or "tcp". */
  listener?: string;
  /** Host header values accepted (port null: any); unset: any Host (the Unix socket). */
  allowedHosts?: readonly { host: string; port: number | null }[];
  /** Serve HTTPS with this PEM certificate and key. */
  https?: { cert: string; key: string } | null;
}

/** The token in force now; null: none is valid (every request is refused). */
export interface TokenSource {
  current(): string | null;
}

/**
 * The token of a file, re-read when the file changes (a rotation takes effect at the next request,
 * a Kubernetes Secret's symlink swap included: the file is stat'ed, following links, at each
 * request). A file that becomes unreadable or invalid refuses every request (fail closed) and says
 * so in the log, once; the content is never logged. `tokenProblem` says what is wrong with a token
 * read (the config's check, handed in), or null.
 */
export function fileToken(file: string, log: Logger, tokenProblem: (text: string, file: string) => string | null): TokenSource {
  let seen = '';
  let token: string | null = null;
  let problem: string | null = null;
  const read = (): void => {
    let id: string;
    try {
      const st = statSync(file, { bigint: true });
      id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch (e) {
      id = `error:${(e as NodeJS.ErrnoException).code}`;
    }
    if (id === seen) return;
    const first = seen === '';
    seen = id;
    let next: string | null = null;
    let why: string | null;
    try {
      const text = readFileSync(file, 'utf8');
      why = tokenProblem(text, file);
      if (!why) next = text.trim();
    } catch (e) {
      why = `cannot read the token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    }
    if (why) {
      if (why !== problem) log.error({ event: 'token_invalid', file }, `${why}: the TCP API refuses every request until the file holds a valid token`);
    } else if (!first && next !== token) {
      log.info({ event: 'token_reloaded', file }, `the bearer token was re-read from ${file}: the old one no longer works`);
    }
    problem = why;
    token = next;
  };
  read();
  return { current: () => { read(); return token; } };
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * The console (docs/console.md): its page and static assets, served without a token (they hold no
 * data and no secret; what the page shows it reads from /v1 with the token). The chart library is
 * uPlot from node_modules, served from here (no CDN).
 */
const ASSETS: Record<string, { type: string; body: () => string }> = {
  '/': { type: 'text/html; charset=utf-8', body: () => CONSOLE_HTML },
  '/assets/console.js': { type: 'text/javascript; charset=utf-8', body: () => CONSOLE_JS },
  '/assets/console.css': { type: 'text/css; charset=utf-8', body: () => CONSOLE_CSS },
  '/assets/uplot.min.js': { type: 'text/javascript; charset=utf-8', body: () => vendor('uplot/dist/uPlot.iife.min.js') },
  '/assets/uplot.min.css': { type: 'text/css; charset=utf-8', body: () => vendor('uplot/dist/uPlot.min.css') },
};
const vendored = new Map<string, string>();
function vendor(file: string): string {
  let text = vendored.get(file);
  if (text === undefined) {
    text = readFileSync(require.resolve(file), 'utf8');
    vendored.set(file, text);
  }
  return text;
}
/** What the console's page may load and where it may connect: its own origin only. */
const CONSOLE_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const isAsset = (req: FastifyRequest): boolean => (req.method === 'GET' || req.method === 'HEAD') && Object.hasOwn(ASSETS, req.url);

/** Default ports by scheme, to compare an Origin with a Host that leaves its port out. */
const portOr = (port: number | null, tls: boolean): number => port ?? (tls ? 443 : 80);

/** Whether a listen address stays on this machine. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h);
}

// Names go through the one validator of names (src/limiter/names.ts, which the config's schema uses too).

const placeQuery = z.strictObject({ iface: ifaceName, netns: netnsName.optional() });
const statsQuery = z.strictObject({ iface: ifaceName.optional(), netns: netnsName.optional() })
  .refine((q) => q.iface !== undefined || q.netns === undefined, { error: 'netns needs iface', path: ['netns'] });
const eventsQuery = placeQuery.extend({
  rule: z.string().min(1).max(64).optional(),
  reason: z.string().min(1).max(32).optional(),
  source: z.string().min(1).max(64).optional(),
});
const topQuery = placeQuery.extend({
  n: z.string().regex(/^\d{1,4}$/, { error: (i) => `n ${shown(i.input)} must be a whole number from 1 to 1000` })
    .transform(Number)
    .pipe(z.number().min(1, { error: 'n must be at least 1' }).max(1000, { error: 'n must be at most 1000' }))
    .optional(),
});
const limitsBodyOf = <L>(limits: z.ZodType<L>) => z.strictObject({
  iface: ifaceName,
  netns: netnsName.nullable().optional(),
  limits,
}, { error: (i) => `expected a JSON object { iface, netns?, limits: { … } }, got ${shown(i.input)}` });
const historyQuery = placeQuery.extend({
  since: z.string().regex(/^\d{1,15}$/, { error: (i) => `since ${shown(i.input)} must be a time in ms since the epoch (the last \`t\` seen)` }).transform(Number).optional(),
});
const placeBody = z.strictObject({ iface: ifaceName, netns: netnsName.nullable().optional() },
  { error: (i) => `expected a JSON object { iface, netns? }, got ${shown(i.input)}` });
const listBody = z.strictObject({
  iface: ifaceName,
  netns: netnsName.nullable().optional(),
  list: z.enum(['deny', 'allow'], { error: 'list must be "deny" or "allow" (the management list is changed in the config file only)' }),
  op: z.enum(['add', 'del'], { error: 'op must be "add" or "del"' }),
  prefix: z.string().min(1).max(64),
  for: z.string().max(32).optional(),
}, { error: (i) => `expected a JSON object { iface, netns?, list, op, prefix, for? }, got ${shown(i.input)}` });
const modeBody = z.strictObject({
  iface: ifaceName,
  netns: netnsName.nullable().optional(),
  rule: z.union([z.string().min(1).max(64), z.number().int().min(0).max(65535).transform(String)]),
  mode: z.enum(['dry-run', 'enforce'], { error: 'mode must be "dry-run" or "enforce" (the mode the policy file gives the rule)' }),
}, { error: (i) => `expected a JSON object { iface, netns?, rule, mode }, got ${shown(i.input)}` });
const emptyBody = z.union([z.undefined(), z.null(), z.strictObject({})], { error: 'this route takes no body' });

/** snake_case, as every key of the API's JSON is (and the config file's). */
export const SNAKE_KEY = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

/** The snake_case spelling of a camelCase key: bytesRate -> bytes_rate, keyV4 -> key_v4. */
export const snakeOf = (k: string): string => k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase();

/**
 * Keys of the answers (and of the CLI's --json) that a body spells differently: limits are written
 * as in the config file (a window with its unit, a rate with its period, key: { v4, v6 }).
 */
const WRITTEN_AS: Record<string, string> = {
  window_ms: '"window" with its unit (e.g. "window": "1000ms")',
  rate_period_ms: 'the period in "rate" itself (e.g. "rate": "30/min")',
  bytes_period_ms: 'the period in "bytes_rate" itself (e.g. "bytes_rate": "500MB/h")',
  key_v4: '"key": { "v4": N }',
  key_v6: '"key": { "v6": N }',
};

/** Every key of a JSON body that is not snake_case, with where it is (keys are names here, never data). */
function camelKeys(v: unknown, path: (string | number)[] = [], out: { path: string; key: string }[] = []): { path: string; key: string }[] {
  if (Array.isArray(v)) v.forEach((x, i) => camelKeys(x, [...path, i], out));
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (/[A-Z]/.test(k)) out.push({ path: pathText([...path, k]), key: k });
      camelKeys(x, [...path, k], out);
    }
  }
  return out;
}

/**
 * Validate input with a schema; every problem at once, as a 400. A body with a camelCase key is a
 * 422 that names the snake_case spelling (the API's JSON is snake_case in both directions; such a
 * key is never ignored), with every other problem of the body too.
 */
function valid<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const camel = where === 'body' ? camelKeys(input) : [];
  const r = schema.safeParse(input);
  if (r.success && !camel.length) return r.data;
  const problems: Problem[] = camel.map(({ path, key }) => {
    const snake = snakeOf(key);
    const as = WRITTEN_AS[snake];
    return { path, message: `keys are snake_case: ${key} is ${snake}${as ? `, which this body takes as ${as}` : ''}` };
  });
  const reported = new Set(camel.map((c) => c.path));
  for (const iss of r.success ? [] : r.error.issues) {
    const path = pathText(iss.path.filter((s): s is string | number => typeof s !== 'symbol'));
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) {
        const at = pathText([...(path ? [path] : []), k]);
        const as = WRITTEN_AS[k];
        if (!reported.has(at)) problems.push({ path: at, message: as ? `unknown key: write ${as}` : 'unknown key' });
      }
    } else {
      problems.push({ path, message: iss.message });
    }
  }
  const text = problems.map((p) => `${p.path ? `${p.path}: ` : ''}${p.message}`).join('; ');
  if (camel.length) throw new ApiError(ApiCode.BadRequest, 422, `invalid ${where}: ${text}`, problems);
  throw new ApiError(ApiCode.BadRequest, 400, `invalid ${where}: ${text}`, problems);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time comparison: the digests have one length whatever the inputs. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected)) && given.length === expected.length;
}

/**
 * The checks that keep a browser page of another site out (docs/api.md, "Security"): a Host
 * outside the allowed ones (DNS rebinding), a cross-site Origin or Sec-Fetch-Site. Shared by the
 * API and the read-only listener. `open`: a route any page may link to (the console).
 */
export function refuseForeign(req: FastifyRequest, allowed: readonly { host: string; port: number | null }[] | null, tls: boolean, o: { setting?: string; open?: boolean } = {}): { host: string; port: number | null } | null {
  // Host first: a DNS-rebound name is not this daemon's, whatever else the request carries.
  const hostHeader = req.headers.host;
  const host = typeof hostHeader === 'string' ? parseHost(hostHeader) : null;
  if (allowed) {
    const ok = host && allowed.some((a) => a.host === host.host && (a.port === null || a.port === portOr(host.port, tls)));
    if (!ok) throw new ApiError(ApiCode.HostNotAllowed, 403, `the Host header ${host ? `names ${host.host}, which is` : 'is missing or'} not one of this listener's allowed hosts: add the name to ${o.setting ?? 'api.tcp.allowed_hosts'} if it is this daemon's`);
  }
  // A browser says where a request comes from; only this origin's own pages may call.
  const origin = req.headers.origin;
  if (typeof origin === 'string') {
    let same = false;
    try {
      const u = new URL(origin);
      const ou = parseHost(u.host);
      same = !!host && !!ou && (u.protocol === 'https:') === tls && u.protocol.startsWith('http') &&
        ou.host === host.host && portOr(ou.port, tls) === portOr(host.port, tls);
    } catch { same = false; }
    if (!same) throw new ApiError(ApiCode.CrossSite, 403, 'a request from another origin (a web page elsewhere) is refused: call the API from a client, not a browser page of another site');
  }
  const site = req.headers['sec-fetch-site'];
  // Another port of localhost is "same-site": any local web page. Only same-origin or typed-in.
  if ((site === 'cross-site' || site === 'same-site') && !o.open) {
    throw new ApiError(ApiCode.CrossSite, 403, `a request a browser marks as ${site} is refused (Sec-Fetch-Site): call the API from a client, or from the console of this listener`);
  }
  return host;
}

export function buildApi<L>(backend: ApiBackend<L>, o: ApiOptions): FastifyInstance {
  const limitsBody = limitsBodyOf(backend.limitsSchema);
  const app = Fastify({
    loggerInstance: o.logger.child({ api: o.listener ?? 'inject' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 64 * 1024,
    return503OnClosing: true,
    ...(o.https ? { https: { cert: o.https.cert, key: o.https.key } } : {}),
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
  const source: TokenSource | null = o.token === undefined || o.token === null ? null : typeof o.token === 'string' ? { current: () => o.token as string } : o.token;
  const tls = !!o.https;
  const allowed = o.allowedHosts ?? null;

  // JSON only, and an empty body is no body (`POST /v1/reload` with the content type and nothing
  // else); every other content type is refused before a handler runs (below).
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') { done(null, undefined); return; }
    // Fastify's default parser answers through `done` and returns nothing (its type also allows a promise).
    void json(req, body as string, done);
  });

  app.addHook('onRequest', async (req) => {
    refuseForeign(req, allowed, tls, { open: req.method === 'GET' && req.url === '/' });
    // The console's page and assets hold neither data nor secrets; its requests to /v1 carry the token.
    if (source !== null && !isAsset(req)) {
      const h = req.headers.authorization;
      const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
      if (!m) throw new ApiError(ApiCode.Unauthorized, 401, 'this listener needs `Authorization: Bearer <token>` (the token in the file named by api.tcp.token_file)');
      const expected = source.current();
      if (expected === null) throw new ApiError(ApiCode.Unauthorized, 401, 'the daemon holds no valid token now (its token file is unreadable or invalid; see its log): every request is refused');
      if (!tokenMatches(m[1]!, expected)) throw new ApiError(ApiCode.Unauthorized, 401, 'the bearer token is not the one this daemon was given');
    }
    // Writes carry JSON, a body-less POST too: a cross-site form or "simple" fetch cannot.
    if (WRITE_METHODS.has(req.method)) {
      const ct = req.headers['content-type'];
      if (typeof ct !== 'string' || !/^application\/json\s*(;|$)/i.test(ct)) {
        throw new ApiError(ApiCode.BadRequest, 415, `${req.method} needs \`Content-Type: application/json\` (a body-less POST too), got ${ct === undefined ? 'none' : JSON.stringify(String(ct).slice(0, 60))}`);
      }
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    // Changes are worth a line at info; reads (and scrapes) only at debug.
    const level = req.method === 'GET' ? 'debug' : 'info';
    req.log[level]({ method: req.method, url: req.url, status: reply.statusCode, ms: +reply.elapsedTime.toFixed(1) }, 'request');
  });

  app.setErrorHandler(async (e, req, reply) => {
    const { status, body } = httpError(e);
    if (status === 401) reply.header('www-authenticate', 'Bearer realm="sluice"');
    if (status >= 500) req.log.error({ err: e, url: req.url }, 'request failed');
    return reply.code(status).send(body);
  });

  app.setNotFoundHandler(async (req, reply) => {
    return reply.code(404).send({ error: { code: ApiCode.NotFound, message: `no route ${req.method} ${req.url.split('?')[0]}: see docs/api.md (GET / (the console), /v1/status, /v1/stats, /v1/history, /v1/top, /v1/policy, /v1/events, /metrics; PUT /v1/limits; POST /v1/lists, /v1/rules/mode, /v1/policy/confirm, /v1/policy/rollback, /v1/reload)` } });
  });

  const place = (q: { iface: string; netns?: string | null | undefined }): PlaceQuery => ({ iface: q.iface, netns: q.netns ?? null });

  // Never framed by another page (a click on it could not be turned into a change); scripts and
  // connections of its own origin only.
  for (const [path, a] of Object.entries(ASSETS)) {
    app.get(path, async (_req, reply) => reply.type(a.type).header('cache-control', 'no-store').header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY').header('content-security-policy', CONSOLE_CSP).send(a.body()));
  }

  app.get('/v1/status', async (req) => {
    valid(z.strictObject({}), req.query, 'query');
    return backend.status();
  });

  app.get('/v1/stats', async (req) => {
    const q = valid(statsQuery, req.query, 'query');
    return backend.stats(q.iface !== undefined ? place({ iface: q.iface, netns: q.netns }) : undefined);
  });

  app.get('/v1/top', async (req) => {
    const q = valid(topQuery, req.query, 'query');
    return backend.top(place(q), q.n ?? 20);
  });

  app.put('/v1/limits', async (req) => {
    const b = valid(limitsBody, req.body, 'body');
    return backend.setLimits(place(b), b.limits);
  });

  app.get('/v1/history', async (req) => {
    const q = valid(historyQuery, req.query, 'query');
    return backend.history(place(q), q.since);
  });

  app.get('/v1/policy', async (req) => {
    const q = valid(placeQuery, req.query, 'query');
    return backend.policy(place(q));
  });

  app.post('/v1/lists', async (req) => {
    const b = valid(listBody, req.body, 'body');
    let forMs: number | undefined;
    if (b.for !== undefined) {
      if (b.list !== 'deny' || b.op !== 'add') throw new ApiError(ApiCode.BadRequest, 400, 'invalid body: for: a duration goes with list "deny" and op "add" (a block for a while)', [{ path: 'for', message: 'only with list "deny" and op "add"' }]);
      try {
        forMs = parseDurationMs(b.for, 'for', 1000, 7 * 24 * 3_600_000);
      } catch (e) {
        throw new ApiError(ApiCode.BadRequest, 400, `invalid body: for: ${(e as Error).message}`, [{ path: 'for', message: (e as Error).message }]);
      }
    }
    return backend.editList(place(b), { list: b.list, op: b.op, prefix: b.prefix, ...(forMs !== undefined ? { forMs } : {}) });
  });

  app.post('/v1/rules/mode', async (req) => {
    const b = valid(modeBody, req.body, 'body');
    return backend.setRuleMode(place(b), b.rule, b.mode);
  });

  app.post('/v1/policy/confirm', async (req) => {
    const b = valid(placeBody, req.body, 'body');
    return backend.confirmPending(place(b));
  });

  app.post('/v1/policy/rollback', async (req) => {
    const b = valid(placeBody, req.body, 'body');
    return backend.rollbackPending(place(b));
  });

  app.post('/v1/reload', async (req) => {
    valid(emptyBody, req.body, 'body');
    return backend.reload('api');
  });

  // Server-sent events: one `data:` line of JSON per event (docs/api.md, GET /v1/events), and an
  // `event: budget` every 2 s with what the kernel did not emit. Streams end when the daemon stops.
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => { for (const end of [...streams]) end(); });
  app.get('/v1/events', async (req, reply) => {
    const q = valid(eventsQuery, req.query, 'query');
    let filter: EventFilter;
    try {
      filter = new EventFilter({ rule: q.rule, reason: q.reason, source: q.source });
    } catch (e) {
      throw new ApiError(ApiCode.BadRequest, 400, `invalid query: ${(e as Error).message}`);
    }
    const res = reply.raw;
    let timer: NodeJS.Timeout | undefined;
    let open = true;
    const end = (): void => {
      if (!open) return;
      open = false;
      clearInterval(timer);
      streams.delete(end);
      sub?.unsubscribe();
      res.end();
    };
    const sub = backend.subscribeEvents(place(q), filter, (e) => { if (open) res.write(`data: ${JSON.stringify(e)}\n\n`); }, end);
    reply.hijack();
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    const budget = (): void => { if (open) res.write(`event: budget\ndata: ${JSON.stringify(sub.budget() ?? null)}\n\n`); };
    budget();
    timer = setInterval(budget, 2000);
    streams.add(end);
    req.raw.on('close', end);
  });

  app.get('/metrics', async (req, reply) => {
    valid(z.record(z.string(), z.unknown()), req.query ?? {}, 'query');
    const m = await backend.metrics();
    return reply.type(m.contentType).send(m.body);
  });

  return app;
}

/** What the read-only listener serves; the daemon implements it. */
export interface ReadOnlyBackend {
  metrics(): Promise<{ contentType: string; body: string }>;
  /** ok: every configured interface is protected (docs/api.md, "The read-only listener"). */
  health(): Promise<{ ok: boolean; interfaces: { iface: string; netns: string | null; protected: boolean; reason?: string }[] }>;
}

/**
 * The read-only listener (config `metrics.listen`): GET /metrics and GET /healthz, nothing else,
 * no token. For Prometheus and kubelet probes, which cannot hold the API's token. It has no write
 * route and no /v1 route: every other request is a 404, whatever its method or body (a body is
 * never parsed). Host and Origin are checked as on the API's TCP listener.
 */
export function buildReadOnly(backend: ReadOnlyBackend, o: { logger: Logger; allowedHosts?: readonly { host: string; port: number | null }[] }): FastifyInstance {
  const app = Fastify({
    loggerInstance: o.logger.child({ api: 'metrics' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024,
    return503OnClosing: true,
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
  // No body is ever read: nothing here takes one (a 404 must not turn into a 415 or a 400).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => { payload.resume(); done(null, undefined); });
  app.addHook('onRequest', async (req) => { refuseForeign(req, o.allowedHosts ?? null, false, { setting: 'metrics.allowed_hosts' }); });
  app.addHook('onResponse', async (req, reply) => {
    req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: +reply.elapsedTime.toFixed(1) }, 'request');
  });
  app.setErrorHandler(async (e, req, reply) => {
    const { status, body } = httpError(e);
    if (status >= 500) req.log.error({ err: e, url: req.url }, 'request failed');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler(async (req, reply) => reply.code(404).send({ error: { code: ApiCode.NotFound, message: `no route ${req.method} ${req.url.split('?')[0]}: this is the read-only listener (GET /metrics, GET /healthz); the API is on the daemon's Unix socket or api.tcp` } }));
  app.get('/metrics', async (_req, reply) => {
    const m = await backend.metrics();
    return reply.type(m.contentType).header('cache-control', 'no-store').send(m.body);
  });
  app.get('/healthz', async (_req, reply) => {
    const h = await backend.health();
    return reply.code(h.ok ? 200 : 503).header('cache-control', 'no-store').send(h);
  });
  return app;
}

/**
 * Listen on a Unix socket readable and writable by root alone. A socket file left by a process
 * that is gone is replaced; one that answers is someone else's: refused. The socket has mode 0600
 * from the moment it exists (bound under umask 0177: no moment in which another user could
 * connect), in a directory that only its owner may change: one created here is 0700; an existing
 * one owned by another user, or writable by group or others (who could replace the socket with
 * their own), is refused.
 */
export async function listenUnix(app: FastifyInstance, path: string): Promise<void> {
  const dir = dirname(path);
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  }
  const st = statSync(dir);
  const uid = process.geteuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || st.mode & 0o022) {
    throw new ApiError(ApiCode.SocketUnsafe, 500, `the directory of the API socket ${dir} is ${!st.isDirectory() ? 'not a directory' : st.uid !== uid ? `owned by uid ${st.uid}, not by this daemon (uid ${uid})` : `writable by ${st.mode & 0o020 ? 'its group' : ''}${(st.mode & 0o022) === 0o022 ? ' and ' : ''}${st.mode & 0o002 ? 'others' : ''} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`}: another user could replace the socket. Use a directory of its own (the default /run/sluice is made 0700), or \`chmod 0700 ${dir}\``);
  }
  if (existsSync(path)) {
    const live = await new Promise<boolean>((res) => {
      const s = connect(path);
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => res(false));
    });
    if (live) throw new ApiError(ApiCode.SocketBusy, 500, `another process (another sluice daemon?) serves on ${path}: stop it, or give this daemon another api.socket`);
    unlinkSync(path);
  }
  await app.ready();
  // The umask is the process's: restrictive only while the socket is bound (files made meanwhile
  // are made 0600 at most, never wider).
  const old = process.umask(0o177);
  try {
    await app.listen({ path });
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
}

/** Listen on TCP; beyond loopback without TLS, say loudly what that exposes. */
export async function listenTcp(app: FastifyInstance, host: string, port: number, o: { tls?: boolean; log?: Logger } = {}): Promise<void> {
  await app.listen({ host, port });
  if (!o.tls && !isLoopback(host)) {
    (o.log ?? app.log).warn({ event: 'insecure_listener', tcp: `${host}:${port}` },
      `THE API LISTENS ON ${host}:${port} BEYOND LOOPBACK WITHOUT TLS: the bearer token and every answer cross the network in clear text, and anyone on the path can take the token and change the limits. Configure api.tcp.tls (cert_file, key_file), or listen on 127.0.0.1 and reach it through an SSH tunnel or a TLS proxy`);
  }
}
