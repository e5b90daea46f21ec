/**
 * Errors of the daemon's HTTP API and how every error becomes an HTTP answer. One shape for all
 * (docs/api.md):
 *
 *   { "error": { "code": "SLUICE_E_…", "message": "…", "problems"?: [{ "path", "line"?, "message" }] } }
 */
import { ApiCode, ApiError, ConfigError, CONFIG_ERROR, errorEntry, type Problem } from '../limiter/errors';
import { PolicyError } from '../limiter/policy';

export { ApiCode, ApiError, type ApiCodeValue, type Problem } from '../limiter/errors';

export interface ErrorBody {
  error: { code: string; message: string; problems?: Problem[] };
}

/** The HTTP status and body for any error a handler may meet. */
export function httpError(e: unknown): { status: number; body: ErrorBody } {
  const body = (code: string, message: string, problems?: Problem[]): ErrorBody => ({ error: { code, message, ...(problems ? { problems } : {}) } });
  if (e instanceof ApiError) return { status: e.status, body: body(e.code, e.message, e.problems) };
  if (e instanceof ConfigError) {
    return { status: 422, body: body(CONFIG_ERROR, `invalid config ${e.file}: ${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}; the running policy stays`, e.problems) };
  }
  if (e instanceof PolicyError) return { status: 400, body: body(e.code, 'invalid limits', e.problems.map((message) => ({ path: 'limits', message }))) };
  const err = e as { code?: unknown; message?: unknown; statusCode?: unknown };
  const code = typeof err.code === 'string' ? err.code : '';
  const message = typeof err.message === 'string' ? err.message : String(e);
  // A code of the registry answered with a status of its own (4xx, 503); the rest below.
  const known = errorEntry(code);
  if (known && known.http !== 500) return { status: known.http, body: body(code, message) };
  // fastify's own: malformed JSON, wrong content type, body too large.
  if (code.startsWith('FST_') && typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { status: err.statusCode, body: body(ApiCode.BadRequest, message) };
  }
  if (code.startsWith('SLUICE_E_')) return { status: 500, body: body(code, message) };
  return { status: 500, body: body(ApiCode.Internal, message) };
}
