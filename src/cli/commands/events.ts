import ipaddr from 'ipaddr.js';
import type { Command } from 'commander';
import { Protection } from '../../agent/protection';
import { RingBuffer } from '../../ebpf';
import { decodeEvent, SL_EVENT_SIZE } from '../../generated/types';
import { REASON_NAMES } from '../../limiter/stats';
import { parseCount } from '../../limiter/units';
import { parsed, place, placeOptions, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('events')
    .description('sampled drop events as they happen: who was dropped, by which rule, and why')
    .addHelpText('after', `
The kernel emits at most a budget of events per CPU per second (100 by default), so a flood
cannot flood this output; what it leaves out is counted. Runs until Ctrl-C.

Examples:
  sluice events --iface eth1
  sluice events --iface eth1 --json | jq 'select(.reason == "limit")'`);
  placeOptions(cmd)
    .option('--json', 'one JSON object per line')
    .option('--count <n>', 'stop after this many events', parsed((v) => parseCount(v, 'count')))
    .action(async (o: PlaceOptions & { json?: boolean; count?: number }) => {
      const p = Protection.open(place(o));
      const rb = RingBuffer.open(p.maps.get('sl_events')!);
      const names = p.ruleNames();
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      let n = 0;
      try {
        for await (const rec of rb.records(ac.signal)) {
          const e = decodeEvent(rec.subarray(0, SL_EVENT_SIZE));
          const addr = e.family ? ipaddr.fromByteArray([...e.addr.subarray(0, e.family === 4 ? 4 : 16)]).toString() : '-';
          const rule = e.rule_id === p.limiter.maxRules ? 'global' : `${e.rule_id}${names.get(e.rule_id) ? ` ${names.get(e.rule_id)}` : ''}`;
          const ev = { ts_ns: Number(e.ts_ns), source: addr, rule, reason: REASON_NAMES[e.reason] ?? String(e.reason), verdict: e.verdict ? 'drop' : 'pass', proto: e.proto, dport: e.dport, bytes: e.len };
          if (o.json) console.log(JSON.stringify(ev));
          else console.log(`${new Date().toISOString()}  ${ev.source.padEnd(39)}  rule ${rule.padEnd(12)}  ${ev.reason.padEnd(9)} ${ev.verdict}  proto ${ev.proto} port ${ev.dport}  ${ev.bytes} B`);
          if (o.count && ++n >= o.count) break;
        }
      } finally {
        await rb.close();
        p.close();
      }
    });
}
