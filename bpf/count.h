/* SPDX-License-Identifier: GPL-2.0 */
/*
 * count.h - counters (per-CPU, per rule and reason) and sampled drop events.
 *
 * Every counter here is per-CPU and a packet runs to its end on one CPU, so plain increments are
 * exact without atomics.
 */
#ifndef SLUICE_COUNT_H
#define SLUICE_COUNT_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"
#include "parse.h"
#include "maps.h"
#include "limiters.h"
/*
 * Count one packet in counters the caller looked up (a rule's, in its struct sl_rule_cpu).
 * stats_map is per-CPU: only this CPU writes its slot, and a packet runs to the end on one CPU,
 * so plain increments are exact without atomics.
 */
static __always_inline void sl_count_in(struct sl_counters *c, __u32 reason, __u32 verdict, __u32 len)
{
	c->packets[verdict & 1] += 1;
	c->bytes[verdict & 1] += len;
	c->reason_packets[reason & (SL_R_MAX - 1)] += 1;
	c->reason_bytes[reason & (SL_R_MAX - 1)] += len;
}

/* Count one packet in slot idx of stats_map (the global slot, or a rule's). */
static __always_inline void sl_count(__u32 idx, __u32 reason, __u32 verdict, __u32 len)
{
	struct sl_rule_cpu *rc = bpf_map_lookup_elem(&stats_map, &idx);

	if (rc)
		sl_count_in(&rc->c, reason, verdict, len);
}

/* Count an event that is not a verdict (a stale table entry seen, a packet charged by the strictest
 * rule), in the global slot's reason counters only: the verdict is counted where it was made. */
static __always_inline void sl_count_event(__u32 reason, __u32 len)
{
	__u32 idx = max_rules;
	struct sl_rule_cpu *rc = bpf_map_lookup_elem(&stats_map, &idx);

	if (rc) {
		rc->c.reason_packets[reason & (SL_R_MAX - 1)] += 1;
		rc->c.reason_bytes[reason & (SL_R_MAX - 1)] += len;
	}
}

/* Write one event into the ring (the budget allowed it: at most events_per_sec per CPU). */
__noinline int sl_event_emit(const struct sl_pkt *p, __u32 rule_id, __u32 reason, __u32 verdict,
			     __u64 now)
{
	__u32 zero = 0;
	struct sl_event_budget *b = bpf_map_lookup_elem(&sl_event_budget, &zero);
	struct sl_event *e;

	if (!p || !b)
		return 0;
	e = bpf_ringbuf_reserve(&sl_events, sizeof(*e), 0);
	if (!e) {
		b->lost++;
		return 0;
	}
	e->ts_ns = now;
	__builtin_memcpy(e->addr, p->src, 16);
	e->rule_id = rule_id;
	e->family = p->family;
	e->reason = reason;
	e->verdict = verdict;
	e->proto = p->proto;
	e->dport = p->dport;
	e->len = p->len;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * Emit a sampled event for a packet that was dropped (or would have been), within the CPU's
 * budget of events_per_sec (GCRA, burst of one second's worth; per-CPU state, no atomics). now is
 * the packet's clock. A flood drops millions of packets a second and emits a hundred events, so
 * the suppressed case is kept cheap: inline, and without a division.
 */
static __always_inline void sl_event(const struct sl_pkt *p, const struct sl_config *cfg,
				     __u32 rule_id, __u32 reason, __u32 verdict, __u64 now)
{
	__u32 zero = 0;
	struct sl_event_budget *b;
	__u64 rate, t, left;

	if (!cfg || cfg->events_off)
		return;
	b = bpf_map_lookup_elem(&sl_event_budget, &zero);
	if (!b)
		return;
	rate = cfg->events_per_sec ? cfg->events_per_sec : SL_DEFAULT_EVENTS;
	t = b->tat > now ? b->tat : now;
	/* Suppressed when what is left of the one-second burst, left = 1 s - (t - now), is less than
	 * one interval, floor(1 s / rate): in integers, (left + 1) x rate <= 1 s. */
	left = t - now <= SL_NSEC ? SL_NSEC - (t - now) : 0;
	if (t - now > SL_NSEC || (left + 1) * rate <= SL_NSEC) {
		b->suppressed++;
		return;
	}
	b->tat = t + SL_NSEC / rate;
	sl_event_emit(p, rule_id, reason, verdict, now);
}

#endif /* SLUICE_COUNT_H */
