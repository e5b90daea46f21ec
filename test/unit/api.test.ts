/**
 * The HTTP API over a fake backend (unit tier: no root, no kernel, no network; fastify's inject()
 * drives the handlers in process). The API imports no agent module (DESIGN.md's import edges), so
 * its routes, token handling, input checks and error shapes can be pinned down here alone: each
 * assertion names the status and the body, so a change of either fails.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { buildApi, type ApiBackend, type PlaceQuery, type ApiOptions } from '../../src/api/server';
import { limitsSchema, type LimitsInput } from '../../src/config';
import { ConfigError } from '../../src/config/errors';
import { AgentCode, AgentError } from '../../src/agent/errors';
import { PolicyError } from '../../src/limiter/policy';
import type { EventFilter, EventView } from '../../src/limiter/events';

const TOKEN = 'unit-test-token-0123456789';
const EVENT: EventView = {
  time: '2026-01-01T00:00:00.000Z', ts_ns: '1', source: '192.0.2.7', rule_id: 1, rule: 'web', reason: 'limit',
  verdict: 'drop', proto: 'udp', dport: 53, bytes: 60,
};

type Call = [string, ...unknown[]];

/** A backend that records every call and answers with what the test sets (or throws it). */
function fake(): { backend: ApiBackend<LimitsInput>; calls: Call[]; fail: (e: unknown) => void } {
  const calls: Call[] = [];
  let failure: unknown;
  const answer = async (name: string, ...args: unknown[]): Promise<unknown> => {
    calls.push([name, ...args]);
    if (failure !== undefined) { const e = failure; failure = undefined; throw e; }
    return { answer: name };
  };
  const backend: ApiBackend<LimitsInput> = {
    limitsSchema,
    status: () => answer('status'),
    stats: (p) => answer('stats', p),
    top: (p, n) => answer('top', p, n),
    setLimits: (p, l) => answer('setLimits', p, l),
    reload: (s) => answer('reload', s),
    metrics: async () => { calls.push(['metrics']); return { contentType: 'text/plain; version=0.0.4', body: 'sluice_up 1\n' }; },
    history: (p, since) => answer('history', p, since),
    policy: (p) => answer('policy', p),
    editList: (p, e) => answer('editList', p, e),
    setRuleMode: (p, r, m) => answer('setRuleMode', p, r, m),
    confirmPending: (p) => answer('confirmPending', p),
    rollbackPending: (p) => answer('rollbackPending', p),
    subscribeEvents: (p: PlaceQuery, f: EventFilter, send: (e: EventView) => void, end: () => void) => {
      calls.push(['subscribeEvents', p, f.spec]);
      // As the daemon's hub does: events come later, from the ring buffer's reader.
      setImmediate(() => { send(EVENT); setImmediate(end); });
      return { budget: () => ({ suppressed: 2, lost: 1 }), unsubscribe: () => undefined };
    },
  };
  return { backend, calls, fail: (e) => { failure = e; } };
}

const silent = pino({ level: 'silent' });
const api = (b: ApiBackend<LimitsInput>, o: Partial<ApiOptions> = {}) => buildApi(b, { logger: silent, ...o });
const JSON_CT = { 'content-type': 'application/json' };
const H = { iface: 'eth0', netns: null };

test('every route reaches the backend with the parsed place and input, and answers 200 with its answer', async () => {
  const { backend, calls } = fake();
  const app = api(backend);
  try {
    const cases: { method: 'GET' | 'PUT' | 'POST'; url: string; payload?: unknown; call: Call }[] = [
      { method: 'GET', url: '/v1/status', call: ['status'] },
      { method: 'GET', url: '/v1/stats', call: ['stats', undefined] },
      { method: 'GET', url: '/v1/stats?iface=eth0&netns=blue', call: ['stats', { iface: 'eth0', netns: 'blue' }] },
      { method: 'GET', url: '/v1/top?iface=eth0', call: ['top', H, 20] },
      { method: 'GET', url: '/v1/top?iface=eth0&n=5', call: ['top', H, 5] },
      { method: 'GET', url: '/v1/history?iface=eth0&since=1700000000000', call: ['history', H, 1700000000000] },
      { method: 'GET', url: '/v1/policy?iface=eth0', call: ['policy', H] },
      { method: 'PUT', url: '/v1/limits', payload: { iface: 'eth0', limits: { rate: '1k' } }, call: ['setLimits', H, { rate: 1000 }] },
      { method: 'POST', url: '/v1/lists', payload: { iface: 'eth0', list: 'deny', op: 'add', prefix: '192.0.2.0/24', for: '10m' },
        call: ['editList', H, { list: 'deny', op: 'add', prefix: '192.0.2.0/24', forMs: 600_000 }] },
      { method: 'POST', url: '/v1/lists', payload: { iface: 'eth0', netns: 'blue', list: 'allow', op: 'del', prefix: '2001:db8::/32' },
        call: ['editList', { iface: 'eth0', netns: 'blue' }, { list: 'allow', op: 'del', prefix: '2001:db8::/32' }] },
      { method: 'POST', url: '/v1/rules/mode', payload: { iface: 'eth0', rule: 3, mode: 'dry-run' },
        call: ['setRuleMode', H, '3', 'dry-run'] },
      { method: 'POST', url: '/v1/policy/confirm', payload: { iface: 'eth0' }, call: ['confirmPending', H] },
      { method: 'POST', url: '/v1/policy/rollback', payload: { iface: 'eth0' }, call: ['rollbackPending', H] },
      { method: 'POST', url: '/v1/reload', call: ['reload', 'api'] },
    ];
    for (const c of cases) {
      calls.length = 0;
      const payload = c.payload !== undefined ? { payload: JSON.stringify(c.payload) } : {};
      const r = await app.inject({ method: c.method, url: c.url, headers: JSON_CT, ...payload });
      assert.equal(r.statusCode, 200, `${c.method} ${c.url}: ${r.body}`);
      assert.deepEqual(r.json(), { answer: c.call[0] }, `${c.method} ${c.url}`);
      assert.equal(calls.length, 1, `${c.method} ${c.url}: one call`);
      const [name, ...args] = calls[0]!;
      assert.equal(name, c.call[0]);
      if (name === 'setLimits') {
        assert.deepEqual(args[0], H);
        const rate = (args[1] as { rate?: unknown }).rate;
        assert.deepEqual(rate, { units: 1000, periodMs: 1000 }, 'the limits as the config schema parses them');
      } else {
        assert.deepEqual(args, c.call.slice(1), `${c.method} ${c.url}: the arguments`);
      }
    }
    const m = await app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(m.statusCode, 200);
    assert.equal(m.headers['content-type'], 'text/plain; version=0.0.4');
    assert.equal(m.body, 'sluice_up 1\n');
  } finally {
    await app.close();
  }
});

test('GET /v1/events streams the budget and the backend\'s events as server-sent events, with the filter parsed', async () => {
  const { backend, calls } = fake();
  const app = api(backend);
  try {
    const r = await app.inject({ method: 'GET', url: '/v1/events?iface=eth0&reason=limit&source=192.0.2.0/24' });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream; charset=utf-8');
    // The budget at once (then every 2 s), each event as it comes, and the end when the backend ends.
    assert.equal(r.body, `event: budget\ndata: {"suppressed":2,"lost":1}\n\ndata: ${JSON.stringify(EVENT)}\n\n`);
    assert.deepEqual(calls, [['subscribeEvents', H, { rule: undefined, reason: 'limit', source: '192.0.2.0/24' }]]);
    const bad = await app.inject({ method: 'GET', url: '/v1/events?iface=eth0&reason=nope' });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().error.code, 'SLUICE_E_API_BAD_REQUEST');
    assert.match(bad.json().error.message, /^invalid query: unknown reason "nope": one of /);
  } finally {
    await app.close();
  }
});

test('with a token every route needs Authorization: Bearer <token> (401, WWW-Authenticate); the page does not', async () => {
  const { backend, calls } = fake();
  const app = api(backend, { token: TOKEN, listener: 'tcp' });
  try {
    const unauthorized = (message: string) => ({ error: { code: 'SLUICE_E_API_UNAUTHORIZED', message } });
    const none = await app.inject({ method: 'GET', url: '/v1/status' });
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="sluice"');
    assert.deepEqual(none.json(),
      unauthorized('this listener needs `Authorization: Bearer <token>` (the token in the file named by api.tcp.token_file)'));
    for (const authorization of [`Bearer ${TOKEN}x`, 'Bearer short', `Basic ${TOKEN}`]) {
      const r = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });
      assert.equal(r.statusCode, 401, authorization);
    }
    const headers = { ...JSON_CT, authorization: 'Bearer not-the-token-at-all' };
    const wrong = await app.inject({ method: 'PUT', url: '/v1/limits', headers, payload: '{}' });
    assert.deepEqual(wrong.json(), unauthorized('the bearer token is not the one this daemon was given'));
    assert.equal(calls.length, 0, 'nothing reached the backend');
    const ok = await app.inject({ method: 'GET', url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { answer: 'status' });
    const page = await app.inject({ method: 'GET', url: '/' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    const gone = api(backend, { token: { current: () => null } });
    try {
      const r = await gone.inject({ method: 'GET', url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}` } });
      const why = 'the daemon holds no valid token now (its token file is unreadable or invalid; see its log): every request is refused';
      assert.deepEqual(r.json(), unauthorized(why));
    } finally {
      await gone.close();
    }
  } finally {
    await app.close();
  }
});

test('input that does not fit a route: 400 with every problem, 422 for camelCase keys, 415 without JSON, 404 for no route', async () => {
  const { backend, calls } = fake();
  const app = api(backend);
  const bad = (message: string, problems?: { path: string; message: string }[]) =>
    ({ error: { code: 'SLUICE_E_API_BAD_REQUEST', message, ...(problems ? { problems } : {}) } });
  const put = (body: unknown) => app.inject({ method: 'PUT', url: '/v1/limits', headers: JSON_CT, payload: JSON.stringify(body) });
  try {
    const top = await app.inject({ method: 'GET', url: '/v1/top?iface=eth0&n=0' });
    assert.equal(top.statusCode, 400);
    assert.deepEqual(top.json(), bad('invalid query: n: n must be at least 1', [{ path: 'n', message: 'n must be at least 1' }]));

    const name = await app.inject({ method: 'GET', url: '/v1/policy?iface=..' });
    assert.equal(name.statusCode, 400);
    const msg = '".." is not an interface name: "." and ".." name directories, not interfaces';
    assert.deepEqual(name.json(), bad(`invalid query: iface: ${msg}`, [{ path: 'iface', message: msg }]));

    const extra = await app.inject({ method: 'GET', url: '/v1/status?x=1' });
    assert.deepEqual([extra.statusCode, extra.json()],
      [400, bad('invalid query: x: unknown key', [{ path: 'x', message: 'unknown key' }])]);

    const camel = await put({ iface: 'eth0', limits: { rate: 5, bytesRate: '1MB' } });
    assert.equal(camel.statusCode, 422);
    assert.equal(camel.json().error.code, 'SLUICE_E_API_BAD_REQUEST');
    assert.deepEqual(camel.json().error.problems[0], { path: 'limits.bytesRate', message: 'keys are snake_case: bytesRate is bytes_rate' });

    const limits = await put({ iface: 'eth0', limits: { rate: 0 } });
    assert.equal(limits.statusCode, 400);
    assert.equal(limits.json().error.problems[0].path, 'limits.rate', limits.body);

    const list = { iface: 'eth0', list: 'allow', op: 'add', prefix: '192.0.2.1', for: '1m' };
    const forWithAllow = await app.inject({ method: 'POST', url: '/v1/lists', headers: JSON_CT, payload: JSON.stringify(list) });
    assert.deepEqual([forWithAllow.statusCode, forWithAllow.json()], [400, bad(
      'invalid body: for: a duration goes with list "deny" and op "add" (a block for a while)',
      [{ path: 'for', message: 'only with list "deny" and op "add"' }],
    )]);

    const noCt = await app.inject({ method: 'POST', url: '/v1/reload' });
    assert.deepEqual([noCt.statusCode, noCt.json()],
      [415, bad('POST needs `Content-Type: application/json` (a body-less POST too), got none')]);

    const malformed = await app.inject({ method: 'PUT', url: '/v1/limits', headers: JSON_CT, payload: '{"iface":' });
    assert.equal(malformed.statusCode, 400);
    assert.equal(malformed.json().error.code, 'SLUICE_E_API_BAD_REQUEST');

    const body = await app.inject({ method: 'POST', url: '/v1/reload', headers: JSON_CT, payload: JSON.stringify({ now: true }) });
    assert.equal(body.statusCode, 400);
    assert.equal(body.json().error.code, 'SLUICE_E_API_BAD_REQUEST');

    const none = await app.inject({ method: 'GET', url: '/v1/nope?x=1' });
    assert.equal(none.statusCode, 404);
    assert.equal(none.json().error.code, 'SLUICE_E_API_NOT_FOUND');
    assert.match(none.json().error.message, /^no route GET \/v1\/nope: see docs\/api\.md/);

    const cross = await app.inject({ method: 'GET', url: '/v1/status', headers: { origin: 'http://evil.example' } });
    assert.equal(cross.statusCode, 403);
    assert.equal(cross.json().error.code, 'SLUICE_E_API_CROSS_SITE');

    assert.equal(calls.length, 0, 'nothing reached the backend');
  } finally {
    await app.close();
  }
});

test("the backend's errors: each code with its status and one body shape", async () => {
  const { backend, fail } = fake();
  const app = api(backend);
  try {
    const get = async (e: unknown) => {
      fail(e);
      const r = await app.inject({ method: 'GET', url: '/v1/status' });
      return [r.statusCode, r.json()];
    };
    const err = (code: string, message: string, problems?: unknown[]) => ({ error: { code, message, ...(problems ? { problems } : {}) } });
    assert.deepEqual(await get(new AgentError(AgentCode.NotProtected, 'gone')), [503, err('SLUICE_E_NOT_PROTECTED', 'gone')]);
    assert.deepEqual(await get(new AgentError(AgentCode.NoIface, 'no eth9')), [503, err('SLUICE_E_NO_IFACE', 'no eth9')]);
    assert.deepEqual(await get(new AgentError(AgentCode.Busy, 'locked')), [409, err('SLUICE_E_LOCKED', 'locked')]);
    assert.deepEqual(await get(new AgentError(AgentCode.Pending, 'pending')), [409, err('SLUICE_E_PENDING', 'pending')]);
    assert.deepEqual(await get(new AgentError(AgentCode.NotInList, 'not there')), [404, err('SLUICE_E_NOT_IN_LIST', 'not there')]);
    assert.deepEqual(await get(new AgentError(AgentCode.InvalidArgument, 'bad')), [400, err('SLUICE_E_INVALID_ARGUMENT', 'bad')]);
    assert.deepEqual(await get(new AgentError(AgentCode.XdpBusy, 'busy')), [500, err('SLUICE_E_XDP_BUSY', 'busy')]);
    const coded = (message: string, code: string) => Object.assign(new Error(message), { code });
    assert.deepEqual(await get(coded('too many', 'SLUICE_E_LISTS_TOO_LARGE')), [400, err('SLUICE_E_LISTS_TOO_LARGE', 'too many')]);
    assert.deepEqual(await get(new PolicyError(['rate must be positive'])),
      [400, err('SLUICE_E_POLICY', 'invalid limits', [{ path: 'limits', message: 'rate must be positive' }])]);
    assert.deepEqual(await get(new ConfigError('/etc/sluice.yaml', [{ path: 'interfaces', line: 3, message: 'bad' }])),
      [422, err('SLUICE_E_CONFIG', 'invalid config /etc/sluice.yaml: 1 problem; the running policy stays',
        [{ path: 'interfaces', line: 3, message: 'bad' }])]);
    assert.deepEqual(await get(coded('EPERM', 'SLUICE_E_PERMISSION')), [500, err('SLUICE_E_PERMISSION', 'EPERM')]);
    assert.deepEqual(await get(new Error('boom')), [500, err('SLUICE_E_INTERNAL', 'boom')]);
  } finally {
    await app.close();
  }
});
