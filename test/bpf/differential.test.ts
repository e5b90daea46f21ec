/**
 * Differential test: random traces (several sources, random gaps, random sizes, limit changes
 * mid-trace, rates per second, minute and hour) through the kernel with the test clock and through
 * the reference model (of the rule as the control plane wrote it); verdicts
 * must be equal packet by packet. SLUICE_DIFF_PACKETS sets the packets per algorithm (default
 * 100,000); SLUICE_DIFF_SEED replays a trace.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Rule } from '../../src/generated/types';
import { RuleModel, type AlgName, type RuleLimits } from '../../src/limiter/models';
import { compilePolicy, maskInPlace, parsePrefix, PolicyError, type RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';
import { rng } from '../lib/rng';

const PACKETS = Number(process.env.SLUICE_DIFF_PACKETS ?? 100_000);
const SEED = Number(process.env.SLUICE_DIFF_SEED ?? Date.now() % 1_000_000_007);


let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const SOURCES = ['192.0.2.1', '192.0.2.2', '192.0.2.77', '198.51.100.9', '2001:db8::1', '2001:db8::2', '2001:db8:0:1::5', '2001:db8:7::1'];

/** A random rule the control plane accepts: rates per second, and some per minute or hour. */
function randomRule(r: () => number, alg: AlgName): RuleSpec {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  for (;;) {
    const period = r() < 0.7 ? 1000 : pick([60_000, 3_600_000]);
    const scale = period / 1000;
    const pps = Math.round((pick([1, 3, 10, 30, 100, 300, 2000]) + Math.floor(r() * 7)) * (period === 1000 ? 1 : pick([1, scale / 10, scale])));
    const withBytes = r() < 0.5;
    const noPkt = withBytes && r() < 0.2;
    const rule: RuleSpec = {
      id: 0,
      alg,
      pps: noPkt ? null : pps,
      ...(period !== 1000 && !noPkt ? { ppsPeriodMs: period } : {}),
      ppsBurst: r() < 0.5 ? 0 : Math.floor(r() * 2 * pps),
      ...(withBytes ? { bps: pick([20_000, 100_000, 1_500_000]), bpsBurst: r() < 0.5 ? 0 : 1514 + Math.floor(r() * 50_000) } : {}),
      windowMs: period === 1000 ? pick([100, 250, 1000, 1500]) : pick([period / 4, period]),
      key: r() < 0.7 ? { v4: 32, v6: 64 } : { v4: 24, v6: 48 },
    };
    try {
      compilePolicy({ rules: [rule] }, 2);
      return rule;
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
    }
  }
}

/** Nanoseconds between packets of one key at the rule's limit (frames average about 300 bytes here). */
function atLimitNs(rule: RuleSpec): number {
  const byPkt = rule.pps ? (1e6 * (rule.ppsPeriodMs ?? 1000)) / Number(rule.pps) : Infinity;
  const byByt = rule.bps ? (1e9 * 300) / Number(rule.bps) : Infinity;
  return Math.min(byPkt, byByt);
}

function keyOf(src: string, rule: RuleSpec): string {
  const p = parsePrefix(src);
  const k = rule.key === 'rule' || rule.key === undefined ? { v4: 32, v6: 64 } : rule.key;
  const a = Buffer.from(p.addr);
  maskInPlace(a, p.family === 4 ? k.v4 ?? 32 : k.v6 ?? 64);
  return `${p.family}/${a.toString('hex')}`;
}

/** The model of the live rule, from what the control plane wrote (flags carry the periods). */
function toModel(live: Rule): RuleLimits {
  return {
    alg: live.alg,
    action: live.action,
    flags: live.flags,
    epoch: live.epoch,
    windowMs: live.window_ms,
    blockMs: live.block_ms,
    pktRate: live.pkt.rate,
    pktBurst: live.pkt.burst,
    bytRate: live.byt.rate,
    bytBurst: live.byt.burst,
  };
}

for (const alg of ['fixed', 'sliding', 'token', 'gcra'] as AlgName[]) {
  test(`${alg}: kernel and model agree on ${PACKETS} packets (seed ${SEED})`, async () => {
    const r = rng(SEED ^ alg.length * 7919 ^ alg.charCodeAt(0));
    dp.clearState();
    let rule = randomRule(r, alg);
    const live = (): Rule => dp.limiter.rulesOf(dp.limiter.version() & 1)[0]!;
    dp.limiter.applyPolicy({ rules: [rule] });
    const model = new RuleModel(toModel(live()));

    // Packets are built once per (source, size class) and reused.
    const cache = new Map<string, Buffer>();
    const frame = (src: string, size: number): Buffer => {
      const k = `${src}|${size}`;
      let b = cache.get(k);
      if (!b) {
        const base = src.includes(':') ? pkt().eth().ipv6({ src, dst: '2001:db8:ff::1' }) : pkt().eth().ipv4({ src, dst: '198.51.100.200' });
        b = base.udp({ sport: 4000, dport: 53 }).payload(size).build();
        cache.set(k, b);
      }
      return b;
    };

    let now = BigInt(1_000_000_000 + Math.floor(r() * 1e12));
    let load = 1;
    let passed = 0;
    let changes = 0;
    for (let i = 0; i < PACKETS; i++) {
      // Gaps: mostly back to back or sub-millisecond, sometimes long enough to roll windows.
      // Gaps scaled to the rule's own rate, so that every trace goes over and under its limits: the
      // offered load changes every 1,000 packets between a twentieth and four times the limit;
      // some gaps are zero (bursts), a few are long (idle keys, rolled windows).
      if (i % 1000 === 0) load = [0.05, 0.3, 0.8, 1.5, 4][Math.floor(r() * 5)]!;
      const g = r();
      const mean = atLimitNs(rule) / SOURCES.length / load;
      now += g < 0.2 ? 0n : g < 0.98 ? BigInt(Math.floor(r() * 2 * mean)) : BigInt(Math.floor(r() * 4_000_000_000));
      if (i > 0 && i % 9973 === 0) {
        // A live change: new limits; sometimes a new window (a new epoch: state re-initialised).
        let next = randomRule(r, alg);
        next.key = rule.key;
        if (r() < 0.7) {
          // The same window (the same epoch for the windows), if the new rates fit it.
          const same = { ...next, windowMs: rule.windowMs };
          try { compilePolicy({ rules: [same] }, 2); next = same; } catch (e) { if (!(e instanceof PolicyError)) throw e; }
        }
        rule = next;
        dp.limiter.applyPolicy({ rules: [rule] });
        model.rule = toModel(live());
        changes++;
      }
      const src = SOURCES[Math.floor(r() * SOURCES.length)]!;
      const size = [0, 10, 100, 500, 1400][Math.floor(r() * 5)]! + Math.floor(r() * 20);
      const packet = frame(src, size);
      dp.setNow(now);
      const got = await dp.run(packet);
      const want = model.packet(keyOf(src, rule), now, packet.length);
      const wantVerdict = want === 'pass' ? 'pass' : 'drop';
      if (got !== wantVerdict) {
        assert.fail(`packet ${i}: kernel ${got}, model ${want} (src ${src}, len ${packet.length}, now ${now}, rule ${JSON.stringify(rule)}, seed ${SEED})`);
      }
      if (got === 'pass') passed++;
    }
    // A trace that passes everything or nothing would not test much.
    assert.ok(passed >= 100 && PACKETS - passed >= 100, `passed ${passed} of ${PACKETS}: the trace should exercise both verdicts (last rule ${JSON.stringify(rule)})`);
    assert.ok(changes >= Math.floor(PACKETS / 9973) - 1);
  });
}
