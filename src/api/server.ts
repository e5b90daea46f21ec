/**
 * The daemon's HTTP API (docs/api.md): JSON routes over what the daemon protects, and /metrics.
 * Served on a Unix socket (root only) and, when configured, on TCP with a bearer token. The
 * handlers are built by buildApi() without listening, so that tests drive them with inject().
 */
import { DASHBOARD_HTML } from './dashboard';
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Settings } from '../agent/state';
import { limitsSchema, pathText, type LimitsInput } from '../config';
import { ifaceName, netnsName, shown } from '../config/schema';
import { ApiCode, ApiError, httpError, type Problem } from './errors';

export interface PlaceQuery {
  iface: string;
  netns: string | null;
}

/** What the API serves; the daemon implements it. */
export interface ApiBackend {
  status(): Promise<unknown>;
  /** One interface's report, or every managed interface's ({ interfaces: [...] }) without a place. */
  stats(place?: PlaceQuery): Promise<unknown>;
  top(place: PlaceQuery, n: number): Promise<unknown>;
  setLimits(place: PlaceQuery, limits: LimitsInput): Promise<Settings>;
  reload(source: string): Promise<unknown>;
  metrics(): Promise<{ contentType: string; body: string }>;
}

export interface ApiOptions {
  /** Require `Authorization: Bearer <token>` on every request (the TCP listener). */
  token?: string | null;
  logger: Logger;
  /** Name of the listener in logs: "unix" or "tcp". */
  listener?: string;
}

// Names go through the one validator of names (src/agent/names.ts, via the config's schema).

const placeQuery = z.strictObject({ iface: ifaceName, netns: netnsName.optional() });
const statsQuery = z.strictObject({ iface: ifaceName.optional(), netns: netnsName.optional() })
  .refine((q) => q.iface !== undefined || q.netns === undefined, { error: 'netns needs iface', path: ['netns'] });
const topQuery = placeQuery.extend({
  n: z.string().regex(/^\d{1,4}$/, { error: (i) => `n ${shown(i.input)} must be a whole number from 1 to 1000` })
    .transform(Number)
    .pipe(z.number().min(1, { error: 'n must be at least 1' }).max(1000, { error: 'n must be at most 1000' }))
    .optional(),
});
const limitsBody = z.strictObject({
  iface: ifaceName,
  netns: netnsName.nullable().optional(),
  limits: limitsSchema,
}, { error: (i) => `expected a JSON object { iface, netns?, limits: { … } }, got ${shown(i.input)}` });
const emptyBody = z.union([z.undefined(), z.null(), z.strictObject({})], { error: 'this route takes no body' });

/** Validate input with a schema; every problem at once, as a 400. */
function valid<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const problems: Problem[] = [];
  for (const iss of r.error.issues) {
    const path = pathText(iss.path.filter((s): s is string | number => typeof s !== 'symbol'));
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) problems.push({ path: pathText([...(path ? [path] : []), k]), message: 'unknown key' });
    } else {
      problems.push({ path, message: iss.message });
    }
  }
  throw new ApiError(ApiCode.BadRequest, 400, `invalid ${where}: ${problems.map((p) => `${p.path ? `${p.path}: ` : ''}${p.message}`).join('; ')}`, problems);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time comparison: the digests have one length whatever the inputs. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected)) && given.length === expected.length;
}

export function buildApi(backend: ApiBackend, o: ApiOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: o.logger.child({ api: o.listener ?? 'inject' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 64 * 1024,
    return503OnClosing: true,
  });
  const expected = o.token ?? null;

  app.addHook('onRequest', async (req) => {
    // The dashboard page holds neither data nor secrets; its requests to /v1 carry the token.
    if (expected === null || (req.method === 'GET' && req.url === '/')) return;
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
    if (!m) throw new ApiError(ApiCode.Unauthorized, 401, 'this listener needs `Authorization: Bearer <token>` (the token in the file named by api.tcp.token_file)');
    if (!tokenMatches(m[1]!, expected)) throw new ApiError(ApiCode.Unauthorized, 401, 'the bearer token is not the one this daemon was given');
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
    return reply.code(404).send({ error: { code: ApiCode.NotFound, message: `no route ${req.method} ${req.url.split('?')[0]}: see docs/api.md (GET / (the dashboard), /v1/status, /v1/stats, /v1/top, /metrics; PUT /v1/limits; POST /v1/reload)` } });
  });

  const place = (q: { iface: string; netns?: string | null | undefined }): PlaceQuery => ({ iface: q.iface, netns: q.netns ?? null });

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(DASHBOARD_HTML));

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
    const s = await backend.setLimits(place(b), b.limits);
    return { iface: s.iface, netns: s.netns, limits: s.limits };
  });

  app.post('/v1/reload', async (req) => {
    valid(emptyBody, req.body, 'body');
    return backend.reload('api');
  });

  app.get('/metrics', async (req, reply) => {
    valid(z.record(z.string(), z.unknown()), req.query ?? {}, 'query');
    const m = await backend.metrics();
    return reply.type(m.contentType).send(m.body);
  });

  return app;
}

/**
 * Listen on a Unix socket readable and writable by root alone. A socket file left by a process
 * that is gone is replaced; one that answers is someone else's: refused.
 */
export async function listenUnix(app: FastifyInstance, path: string): Promise<void> {
  if (!existsSync(dirname(path))) mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (existsSync(path)) {
    const live = await new Promise<boolean>((res) => {
      const s = connect(path);
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => res(false));
    });
    if (live) throw new ApiError(ApiCode.SocketBusy, 500, `another process (another sluice daemon?) serves on ${path}: stop it, or give this daemon another api.socket`);
    unlinkSync(path);
  }
  await app.listen({ path });
  chmodSync(path, 0o600);
}

export async function listenTcp(app: FastifyInstance, host: string, port: number): Promise<void> {
  await app.listen({ host, port });
}
