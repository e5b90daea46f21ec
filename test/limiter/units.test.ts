/**
 * One grammar of units (issue 12, step 6): the same parser and the same messages for the command
 * line, the config file, policy files and the HTTP API. Durations need a unit; rates are N/s,
 * N/min, N/h with k and M; a lower-case m is refused in a rate (mega or minute?).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseConfig } from '../../src/config';
import { limitsSchema } from '../../src/config/schema';
import { parsePolicy } from '../../src/config/policy-file';
import { parseBytesPer, parseCount, parseDurationMs, parseRatePer } from '../../src/limiter/units';
import { sluice } from '../lib/cli';

const dir = mkdtempSync(join(tmpdir(), 'sluice-units-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('units: durations need a unit, rates are N/s, N/min, N/h with k and M, m is refused in a rate', () => {
  assert.equal(parseDurationMs('500ms'), 500);
  assert.equal(parseDurationMs('2s'), 2000);
  assert.equal(parseDurationMs('5m'), 300_000);
  assert.equal(parseDurationMs('5min'), 300_000);
  assert.equal(parseDurationMs('1h'), 3_600_000);
  assert.equal(parseDurationMs('0', 'sample', 0), 0, '0 needs no unit');
  assert.throws(() => parseDurationMs('500', 'sample', 0), /sample "500" needs a unit: 500ms, 500s, 500m or 500h/);
  assert.throws(() => parseDurationMs(2, 'window'), /window "2" needs a unit/, 'a YAML number too');
  assert.throws(() => parseDurationMs('5x'), /accepted: 500ms, 2s, 5m, 1h/);
  assert.deepEqual(parseRatePer('10k/s'), { units: 10_000, periodMs: 1000 });
  assert.deepEqual(parseRatePer('2.5M'), { units: 2_500_000, periodMs: 1000 });
  assert.deepEqual(parseRatePer('30/min'), { units: 30, periodMs: 60_000 });
  assert.deepEqual(parseRatePer('100/h'), { units: 100, periodMs: 3_600_000 });
  assert.throws(() => parseRatePer('2.5m'), /"2\.5m": "m" is ambiguous .* write 2\.5M for 2\.5 million a second, or a rate per minute as N\/min/);
  assert.throws(() => parseRatePer('fast'), /accepted: 1000\/s, 10k\/s, 30\/min, 100\/h/);
  assert.deepEqual(parseBytesPer('500MB/h'), { units: 500_000_000, periodMs: 3_600_000 });
  assert.equal(parseCount('1M'), 1_000_000);
  assert.throws(() => parseCount('1m', 'max entries'), /"m" is ambiguous/);
});

test('units: the config file, a policy file and the API schema refuse the same forms with the same message', () => {
  const cfg = (limits: string): string => {
    try {
      parseConfig(`interfaces:\n  - iface: eth1\n    limits: ${limits}\n`, join(dir, 'c.yaml'));
    } catch (e) {
      return (e as Error).message;
    }
    return 'accepted';
  };
  assert.match(cfg('{ rate: 2.5m }'), /"m" is ambiguous/);
  assert.match(cfg('{ window: 1 }'), /window "1" needs a unit/);
  assert.equal(cfg('{ rate: 30/min, window: 1m }'), 'accepted');
  assert.throws(() => parsePolicy('rules:\n  - name: r\n    limit: { rate: 2.5m }\n', join(dir, 'p.yaml')), /"m" is ambiguous/);
  assert.throws(() => parsePolicy('rules:\n  - name: r\n    on_exceed: { block: 30 }\n', join(dir, 'p.yaml')), /block "30" needs a unit/);
  const api = limitsSchema.safeParse({ rate: '2.5m', window: 500 });
  assert.ok(!api.success);
  const messages = api.error.issues.map((i) => i.message).join('\n');
  assert.match(messages, /"m" is ambiguous/);
  assert.match(messages, /window "500" needs a unit/);
});

test('units: `stats --sample 500` is refused at once (it used to wait 500 s), and help shows the grammar', async () => {
  const t0 = Date.now();
  const r = await sluice('stats', '--sample', '500');
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /sample "500" needs a unit: 500ms/);
  assert.ok(Date.now() - t0 < 10_000);
  const h = await sluice('set', '--help');
  assert.match(h.stdout, /durations +500ms, 2s, 5m \(minutes\), 1h/);
  assert.match(h.stdout, /"m" is refused in a rate/);
  writeFileSync(join(dir, 'x'), '');
});

test('units: the lab and the demo take durations with a unit (lab flood --duration, lab http --timeout, demo --duration); a bare number is refused', async () => {
  const NO_LAB = 'qunits9'; // a lab id that is not up: an accepted argument reaches "not up"
  const [flood, http, demo, old, floodOk, httpOk, zero, tooLong, help, demoHelp] = await Promise.all([
    sluice('lab', 'flood', '--pps', '100', '--duration', '5', '--id', NO_LAB),
    sluice('lab', 'http', '-n', '10', '-c', '1', '--timeout', '5', '--id', NO_LAB),
    sluice('demo', '--duration', '10'),
    sluice('demo', '--seconds', '10'),
    sluice('lab', 'flood', '--pps', '100', '--duration', '500ms', '--id', NO_LAB),
    sluice('lab', 'http', '-n', '10', '-c', '1', '--timeout', '2s', '--id', NO_LAB),
    sluice('lab', 'flood', '--pps', '100', '--duration', '0', '--id', NO_LAB),
    sluice('lab', 'flood', '--pps', '100', '--duration', '2d', '--id', NO_LAB),
    sluice('lab', 'flood', '--help'),
    sluice('demo', '--help'),
  ]);
  for (const [r, re] of [
    [flood, /duration "5" needs a unit: 5ms, 5s, 5m or 5h/],
    [http, /timeout "5" needs a unit: 5ms, 5s/],
    [demo, /duration "10" needs a unit: 10ms, 10s/],
    [old, /--seconds is now --duration, with its unit: --duration 10s/],
    [zero, /duration "0" must be at least 1ms/],
    [tooLong, /"d" is not a unit of time/],
  ] as const) {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 2, `one line and a hint: ${r.stderr}`);
  }
  for (const r of [floodOk, httpOk]) {
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`lab '${NO_LAB}' is not up`), 'the duration was taken; the lab is what is missing');
  }
  assert.match(help.stdout, /--duration <duration> +how long, at most 24h \(e\.g\. 500ms, 10s, 5m\)/);
  assert.match(help.stdout, /durations +500ms, 2s, 5m \(minutes\), 1h/);
  assert.match(demoHelp.stdout, /--duration <duration>[\s\S]*\(default: 20s\)/);
  assert.doesNotMatch(demoHelp.stdout, /--seconds/);
});
