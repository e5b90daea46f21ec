/**
 * A sampled drop event as an operator reads it (the CLI's --json, the API's GET /v1/events), and the
 * filter over events: what the agent's reader and hub produce and the API streams.
 */
import { parsePrefix, covers, type Prefix } from './policy';
import { REASON_NAMES } from './stats';

/** One event, as the CLI prints it with --json and the API streams it. */
export interface EventView {
  /** Wall time the packet was decided, ISO 8601 with milliseconds. */
  time: string;
  /** The kernel's stamp (CLOCK_MONOTONIC, ns), as a decimal string (it exceeds 2^53). */
  ts_ns: string;
  source: string;
  rule_id: number | null;
  /** The rule's name, or "global" for list and malformed verdicts. */
  rule: string;
  reason: string;
  verdict: 'drop' | 'pass';
  proto: string;
  dport: number;
  bytes: number;
}

/** Events the kernel did not emit (per-CPU budget spent, ring buffer full), summed over CPUs since attach. */
export interface EventBudget { suppressed: number; lost: number }

export interface EventFilterSpec {
  /** A rule id, a rule name, or "global". */
  rule?: string;
  /** A reason name (limit, denylist, …). */
  reason?: string;
  /** An address or prefix the source must be inside. */
  source?: string;
}

/** A filter, checked when it is made: an unknown reason or a bad prefix is an error, not "no events". */
export class EventFilter {
  private readonly prefix: Prefix | undefined;
  constructor(readonly spec: EventFilterSpec) {
    if (spec.reason !== undefined && !REASON_NAMES.includes(spec.reason.toLowerCase())) {
      throw new RangeError(`unknown reason ${JSON.stringify(spec.reason)}: one of ${REASON_NAMES.filter(Boolean).join(', ')}`);
    }
    if (spec.source !== undefined) {
      try { this.prefix = parsePrefix(spec.source); } catch (e) { throw new RangeError(`source ${JSON.stringify(spec.source)}: ${(e as Error).message}`); }
    }
  }

  matches(e: EventView): boolean {
    const s = this.spec;
    if (s.reason !== undefined && e.reason !== s.reason.toLowerCase()) return false;
    if (s.rule !== undefined && s.rule !== e.rule && s.rule !== String(e.rule_id ?? 'global')) return false;
    if (this.prefix) {
      if (e.source === '-') return false;
      let a: Prefix;
      try { a = parsePrefix(e.source); } catch { return false; }
      if (!covers(this.prefix, a)) return false;
    }
    return true;
  }
}
