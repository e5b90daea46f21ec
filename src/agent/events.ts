/**
 * Sampled drop events (the sl_events ring buffer) as an operator reads them: when the packet was
 * decided (the kernel's CLOCK_MONOTONIC stamp turned into wall time), who, by which rule, why, and
 * nothing decided before the reader started shown as new.
 *
 * The ring buffer has one consumer position: two readers would each see part of the events. When a
 * daemon manages an interface it is that consumer (EventHub), and `sluice events` reads from its
 * API (GET /v1/events); otherwise `sluice events` reads the ring buffer itself (EventReader).
 */
import ipaddr from 'ipaddr.js';
import { RingBuffer } from '../ebpf';
import { decodeEvent, decodeEventBudget, SL_EVENT_BUDGET_SIZE, SL_EVENT_SIZE } from '../generated/types';
import { mapOf } from '../limiter/datapath';
import type { EventBudget, EventView } from '../limiter/events';
import { REASON_NAMES } from '../limiter/stats';
import type { Protection } from './protection';

export { EventFilter, type EventBudget, type EventFilterSpec, type EventView } from '../limiter/events';

const PROTO_NAMES: Record<number, string> = { 0: '-', 1: 'icmp', 2: 'igmp', 4: 'ipip', 6: 'tcp', 17: 'udp', 41: 'ipv6', 47: 'gre', 50: 'esp', 51: 'ah', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };
export const protoName = (p: number): string => PROTO_NAMES[p] ?? String(p);

/** Monotonic ns to wall ms: the offset is taken again for every batch (the wall clock may be set). */
function wallOffsetNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
}

/** Decodes and names events of one protection; skips those decided before `since` (monotonic ns). */
export class EventDecoder {
  stale = 0;
  private offset = wallOffsetNs();
  constructor(private readonly p: Protection, readonly since: bigint = process.hrtime.bigint()) {}

  /** Called once per batch of records. */
  tick(): void {
    this.offset = wallOffsetNs();
  }

  decode(rec: Buffer): EventView | undefined {
    const e = decodeEvent(rec.subarray(0, SL_EVENT_SIZE));
    if (e.ts_ns < this.since) {
      this.stale++;
      return undefined;
    }
    const addr = e.family === 4 || e.family === 6 ? ipaddr.fromByteArray([...e.addr.subarray(0, e.family === 4 ? 4 : 16)]).toString() : '-';
    const global = e.rule_id === this.p.limiter.maxRules;
    const name = global ? 'global' : this.p.ruleNames().get(e.rule_id) ?? String(e.rule_id);
    return {
      time: new Date(Number((e.ts_ns + this.offset) / 1_000_000n)).toISOString(),
      ts_ns: e.ts_ns.toString(),
      source: addr,
      rule_id: global ? null : e.rule_id,
      rule: name,
      reason: REASON_NAMES[e.reason] ?? String(e.reason),
      verdict: e.verdict ? 'drop' : 'pass',
      proto: protoName(e.proto),
      dport: e.dport,
      bytes: e.len,
    };
  }
}

export function eventBudget(p: Protection): EventBudget | undefined {
  const map = mapOf(p.maps, 'sl_event_budget');
  if (!map) return undefined;
  let suppressed = 0;
  let lost = 0;
  for (const b of map.lookupPerCpu(Buffer.alloc(4))) {
    const v = decodeEventBudget(b.subarray(0, SL_EVENT_BUDGET_SIZE));
    suppressed += Number(v.suppressed);
    lost += Number(v.lost);
  }
  return { suppressed, lost };
}

/** One line of text for an event. */
export function eventLine(e: EventView): string {
  const rule = e.rule_id === null ? 'global' : `${e.rule_id}${e.rule !== String(e.rule_id) ? ` ${e.rule}` : ''}`;
  const port = e.proto === 'tcp' || e.proto === 'udp' || e.proto === 'sctp' ? `/${e.dport}` : '';
  return `${e.time}  ${e.source.padEnd(39)}  rule ${rule.padEnd(14)}  ${e.reason.padEnd(9)} ${e.verdict}  ${(e.proto + port).padEnd(10)} ${e.bytes} B`;
}

/** Reads the ring buffer of a protection this process owns (no daemon manages it). */
export class EventReader {
  private readonly rb: RingBuffer;
  readonly decoder: EventDecoder;
  constructor(readonly p: Protection) {
    this.decoder = new EventDecoder(p);
    this.rb = RingBuffer.open(mapOf(p.maps, 'sl_events')!);
  }

  async *events(signal?: AbortSignal): AsyncGenerator<EventView> {
    while (!signal?.aborted) {
      const recs = await this.rb.poll(200);
      this.decoder.tick();
      for (const r of recs) {
        const e = this.decoder.decode(r);
        if (e) yield e;
      }
    }
  }

  close(): Promise<void> {
    return this.rb.close();
  }
}

interface Listener { send: (e: EventView) => void; end: () => void }

/**
 * The daemon's consumer of one interface's ring buffer: it drains it while the interface is
 * protected (so nothing stale piles up for a later reader) and hands each event to the
 * subscribers of GET /v1/events.
 */
export class EventHub {
  private readonly listeners = new Set<Listener>();
  private readonly ac = new AbortController();
  private readonly reader: EventReader;
  private readonly done: Promise<void>;
  delivered = 0;

  constructor(p: Protection, private readonly onError: (e: Error) => void) {
    this.reader = new EventReader(p);
    this.done = this.run();
  }

  private async run(): Promise<void> {
    try {
      for await (const e of this.reader.events(this.ac.signal)) {
        for (const l of this.listeners) {
          this.delivered++;
          l.send(e);
        }
      }
    } catch (e) {
      if (!this.ac.signal.aborted) this.onError(e as Error);
    }
  }

  /** `end` is called when the hub closes (the interface was taken down or protected afresh). */
  subscribe(send: (e: EventView) => void, end: () => void): () => void {
    const l = { send, end };
    this.listeners.add(l);
    return () => { this.listeners.delete(l); };
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  budget(): EventBudget | undefined {
    return eventBudget(this.reader.p);
  }

  async close(): Promise<void> {
    this.ac.abort();
    const ls = [...this.listeners];
    this.listeners.clear();
    for (const l of ls) l.end();
    await this.done;
    await this.reader.close();
  }
}
