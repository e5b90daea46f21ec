// SPDX-License-Identifier: GPL-2.0
/*
 * sluice.bpf.c - the entry points: parse -> lists -> classify -> key -> limit -> act -> count.
 *
 * Each stage that carries real logic is a global (__noinline) function, so the verifier checks it
 * once on its own instead of once per path through its callers.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"
#include "parse.h"
#include "maps.h"
#include "limiters.h"

#ifndef READ_ONCE
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))
#endif

char _license[] SEC("license") = "GPL";

/* The clock a rule reads: coarse (one jiffy of resolution, a few ns to read) or fine. */
static __always_inline __u64 sl_now(__u32 coarse)
{
#ifdef SLUICE_TEST
	__u32 zero = 0;
	struct sl_test_ctl *t = bpf_map_lookup_elem(&sl_test, &zero);

	/* 0: the kernel clock, so that benchmarks of the test build measure the real thing */
	if (t && t->now_ns)
		return t->now_ns;
#endif
	if (coarse)
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * Count one packet. stats_map is per-CPU: only this CPU writes its slot, and a packet runs to the
 * end on one CPU, so plain increments are exact without atomics.
 */
static __always_inline void sl_count(__u32 idx, __u32 reason, __u32 verdict, __u32 len,
				     __u32 new_state)
{
	struct sl_counters *c = bpf_map_lookup_elem(&stats_map, &idx);

	if (!c)
		return;
	c->packets[verdict & 1] += 1;
	c->bytes[verdict & 1] += len;
	c->reason_packets[reason & (SL_R_MAX - 1)] += 1;
	c->reason_bytes[reason & (SL_R_MAX - 1)] += len;
	c->new_states += new_state;
}

/* Count an event that is not a verdict (a stale table entry seen). */
static __always_inline void sl_count_event(__u32 reason)
{
	__u32 idx = max_rules;
	struct sl_counters *c = bpf_map_lookup_elem(&stats_map, &idx);

	if (c)
		c->reason_packets[reason & (SL_R_MAX - 1)] += 1;
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
static __always_inline void sl_event(const struct sl_pkt *p, __u32 rule_id, __u32 reason,
				     __u32 verdict, __u64 now)
{
	__u32 zero = 0;
	struct sl_config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	struct sl_event_budget *b = bpf_map_lookup_elem(&sl_event_budget, &zero);
	__u64 rate, t, left;

	if (!cfg || !b || cfg->events_off)
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

/* One algorithm step, verified once instead of at each of its call sites. */
__noinline int sl_step(__u64 word, __u64 cost, const struct sl_tick *t,
		       const struct sl_params *pr, struct sl_words *out)
{
	if (!t || !pr || !out)
		return 0;
	switch (pr->alg) {
	case SL_ALG_SLIDING:
		return sl_sliding(word, t->now, t->last_seen, cost, pr, out);
	case SL_ALG_TOKEN:
		return sl_token(word, t->now, cost, pr, out);
	case SL_ALG_GCRA:
		return sl_gcra(word, t->now, cost, pr, out);
	default:
		return sl_fixed(word, t->now, cost, pr, out);
	}
}

/*
 * Take back the packet charge that this CPU committed to *w (pw->charged, computed from old),
 * after the byte dimension refused the packet. Exact whatever other CPUs did in between: the TAT forms
 * are moved back by the charge's length with one atomic add; the window forms lose cost from the
 * window it was counted in, if that window is still held (a window that has rolled past needs no
 * refund).
 */
__noinline int sl_refund(__u64 *w, const struct sl_params *pr, const struct sl_tick *tick,
			 __u64 old, const struct sl_words *pw)
{
	__u64 cost;
	int i;

	if (!w || !pr || !tick || !pw)
		return 0;
	if (pr->alg == SL_ALG_TOKEN || pr->alg == SL_ALG_GCRA) {
		__u64 t = old > tick->now ? old : tick->now;

		__sync_fetch_and_add(w, -(pw->charged - t));
		return 0;
	}
	/* The window forms charged cost to the count field of the rolled word. */
	cost = pw->charged - pw->rolled;
	for (i = 0; i < SL_CAS_TRIES; i++) {
		__u64 cur = READ_ONCE(*w), next;

		if (pr->alg == SL_ALG_SLIDING) {
			__u64 d = ((cur >> 60) - (pw->charged >> 60)) & 15;

			if (d == 0 && (cur & SL_MASK30) >= cost)
				next = cur - cost;
			else if (d == 1 && ((cur >> 30) & SL_MASK30) >= cost)
				next = cur - (cost << 30);
			else
				return 0;
		} else {
			if ((cur >> 32) != (pw->charged >> 32) || (cur & SL_MASK32) < cost)
				return 0;
			next = cur - cost;
		}
		if (__sync_val_compare_and_swap(w, cur, next) == cur)
			return 0;
	}
	return 0;
}

/*
 * Decide and commit both dimensions. Each dimension's word changes only by a compare-and-exchange
 * from the exact value the decision was computed on, so neither limit is ever exceeded, however
 * many CPUs race on the key. When the byte word loses a race after the packet word was charged,
 * the packet charge is refunded (exactly, see sl_refund) and the decision retried.
 * Returns 1 to pass, 0 to drop, -1 when still contended after SL_CAS_TRIES attempts.
 */
static __always_inline int sl_charge(struct sl_state *st, const struct sl_tick *t, __u64 pkts,
				     __u64 cost, const struct sl_params *pp,
				     const struct sl_params *bp, __u32 has_p, __u32 has_b)
{
	int i;

	for (i = 0; i < SL_CAS_TRIES; i++) {
		struct sl_words pw, bw;
		__u64 po = READ_ONCE(st->pkt), bo = READ_ONCE(st->byt);
		__u64 pn = po, bn = bo;
		int allow = 1;

		pw.charged = pw.rolled = po;
		bw.charged = bw.rolled = bo;
		if (has_p && !sl_step(po, pkts, t, pp, &pw))
			allow = 0;
		if (has_b && !sl_step(bo, cost, t, bp, &bw))
			allow = 0;
		if (has_p)
			pn = allow ? pw.charged : pw.rolled;
		if (has_b)
			bn = allow ? bw.charged : bw.rolled;

		if (pn != po && __sync_val_compare_and_swap(&st->pkt, po, pn) != po)
			continue;
		if (bn != bo && __sync_val_compare_and_swap(&st->byt, bo, bn) != bo) {
			if (allow && has_p)
				sl_refund(&st->pkt, pp, t, po, &pw);
			continue;
		}
		return allow;
	}
	return -1;
}

/* Resolve a dimension's zero fields to their documented defaults, and derive the rest. */
static __always_inline void sl_params_of(const struct sl_limit *l, __u64 rate, __u32 alg,
					 __u64 window_ms, struct sl_params *out)
{
	out->alg = alg;
	out->pad = 0;
	out->rate = rate;
	out->burst = l->burst;
	if (!out->burst && (alg == SL_ALG_TOKEN || alg == SL_ALG_GCRA))
		out->burst = rate;  /* one second's worth */
	out->window_ms = window_ms;
	out->window_ns = window_ms * 1000000ULL;
	sl_params_derive(out);
}

/*
 * The time scale of one dimension: the window, or the depth of the bucket (burst / rate). The
 * coarse clock moves in steps of one jiffy, so a rule reads it only when every dimension it uses
 * spans at least SL_COARSE_MIN_MS: its error (one step against the time scale) stays at a few
 * percent at the worst and well under one percent at the defaults (docs/datapath.md, Time).
 */
static __always_inline int sl_long_enough(const struct sl_params *pr)
{
	if (pr->alg == SL_ALG_TOKEN || pr->alg == SL_ALG_GCRA)
		return pr->burst * 1000 >= pr->rate * SL_COARSE_MIN_MS;
	return pr->window_ms >= SL_COARSE_MIN_MS;
}

/*
 * Fill this CPU's derived values for rule r (a miss in sl_derived: a new policy, or another rule
 * in the slot). Verified once on its own; the divisions it holds are off the per-packet path.
 * Only this CPU writes its slot, and XDP and tc programs of one CPU do not nest (both run with
 * bottom halves off), so no packet sees a slot half written.
 */
__noinline int sl_derive(const struct sl_rule *r, struct sl_derived *d)
{
	__u32 alg;
	__u64 wms, pps, rate, burst, cpus = nr_cpus ? nr_cpus : 1;

	if (!r || !d)
		return 0;
	alg = r->alg;
	if (alg == SL_ALG_DEFAULT || alg >= SL_ALG_MAX)
		alg = SL_ALG_FIXED;
	wms = r->window_ms ? r->window_ms : SL_DEFAULT_WINDOW_MS;
	pps = r->pkt.rate ? r->pkt.rate : SL_DEFAULT_PPS;
	d->has_pkt = !(r->flags & SL_RF_NO_PKT_LIMIT);
	d->has_byt = r->byt.rate != 0;
	d->has_agg = d->has_pkt && !(r->flags & SL_RF_NO_AGG);
	sl_params_of(&r->pkt, pps, alg, wms, &d->pkt);
	sl_params_of(&r->byt, r->byt.rate, alg, wms, &d->byt);

	/* The aggregate: each CPU enforces its share, as GCRA. Default: SL_DEFAULT_AGG_KEYS keys at
	 * the rule's packet rate, so that it never holds back a crowd of well-behaved sources and
	 * only bites on floods of (spoofed) new ones. */
	rate = r->agg.rate ? r->agg.rate : pps * SL_DEFAULT_AGG_KEYS;
	burst = r->agg.burst ? r->agg.burst : rate;
	rate = rate / cpus ? rate / cpus : 1;
	burst = burst / cpus ? burst / cpus : 1;
	d->agg_interval = SL_NSEC / rate;
	d->agg_tau = (burst - 1) * d->agg_interval;

	d->coarse = (coarse_clock & (1U << alg)) && (!d->has_pkt || sl_long_enough(&d->pkt)) &&
		    (!d->has_byt || sl_long_enough(&d->byt));
	d->id = r->id;
	d->version = r->version;
	d->valid = 1;
	return 0;
}

/* Mask an address to the rule's key prefix (or to nothing for a per-rule bucket). */
static __always_inline void sl_make_key(const struct sl_pkt *p, const struct sl_rule *r,
					struct sl_key *k)
{
	const __u8 *addr = (r->flags & SL_RF_KEY_DST) ? p->dst : p->src;

	k->rule_id = r->id;
	if (r->flags & SL_RF_PER_RULE)
		return;
	k->family = p->family;
	if (p->family == 4) {
		__u32 plen = r->key_v4 ? r->key_v4 : SL_DEFAULT_KEY_V4;
		__u32 a;

		if (plen > 32)
			plen = 32;
		__builtin_memcpy(&a, addr, 4);
		a &= bpf_htonl(~0U << (32 - plen));
		__builtin_memcpy(k->addr, &a, 4);
		k->plen = plen;
	} else {
		__u32 plen = r->key_v6 ? r->key_v6 : SL_DEFAULT_KEY_V6;
		__u64 hi, lo;

		if (plen > 128)
			plen = 128;
		__builtin_memcpy(&hi, addr, 8);
		__builtin_memcpy(&lo, addr + 8, 8);
		if (plen <= 64) {
			hi &= bpf_cpu_to_be64(~0ULL << (64 - plen));
			lo = 0;
		} else {
			lo &= bpf_cpu_to_be64(~0ULL << (128 - plen));
		}
		__builtin_memcpy(k->addr, &hi, 8);
		__builtin_memcpy(k->addr + 8, &lo, 8);
		k->plen = plen;
	}
#ifdef SLUICE_TEST
	{
		__u32 zero = 0;
		struct sl_test_ctl *t = bpf_map_lookup_elem(&sl_test, &zero);
		__u64 *seq = bpf_map_lookup_elem(&sl_salt, &zero);

		if (t && seq && t->salt_keys) {
			__u64 n = (*seq)++;
			__u32 s, a;

			if (t->salt_mod)
				n %= t->salt_mod;
			s = (__u32)n ^ (bpf_get_smp_processor_id() << 28);

			__builtin_memcpy(&a, k->addr + 12 * (p->family == 6), 4);
			a ^= s;
			__builtin_memcpy(k->addr + 12 * (p->family == 6), &a, 4);
		}
	}
#endif
}

/* Whether addr (16 bytes, network order) lies in the prefix (family, plen, pfx). */
static __always_inline int sl_in_prefix(const __u8 *addr, const __u8 *pfx, __u32 plen)
{
	__u64 a, b, m;

	__builtin_memcpy(&a, addr, 8);
	__builtin_memcpy(&b, pfx, 8);
	m = plen >= 64 ? ~0ULL : plen ? bpf_cpu_to_be64(~0ULL << (64 - plen)) : 0;
	if ((a & m) != b)
		return 0;
	if (plen <= 64)
		return 1;
	__builtin_memcpy(&a, addr + 8, 8);
	__builtin_memcpy(&b, pfx + 8, 8);
	m = plen >= 128 ? ~0ULL : bpf_cpu_to_be64(~0ULL << (128 - plen));
	return (a & m) == b;
}

/* Verified once on its own: the candidate loop calls it up to SL_MAX_CANDS times. */
__noinline int sl_rule_matches(const struct sl_rule *r, const struct sl_pkt *p)
{
	if (!r || !p)
		return 0;
	if (!((r->dir ? r->dir : SL_DIR_INGRESS) & p->dir))
		return 0;
	if (r->proto && r->proto != p->proto)
		return 0;
	if (r->tier && r->tier != p->tier)
		return 0;
	if (r->dst_family && (r->dst_family != p->family || !sl_in_prefix(p->dst, r->dst_addr, r->dst_plen)))
		return 0;
	if ((r->dport_lo || r->dport_hi) && (p->dport < r->dport_lo || p->dport > r->dport_hi))
		return 0;
	if ((r->flags & SL_RF_MATCH_SYN) &&
	    (p->proto != IPPROTO_TCP || (p->tcp_flags & 0x12) != 0x02))
		return 0;
	return 1;
}

/*
 * Classify: the LPM trie on the source gives the ordered candidates for its prefix (compiled in
 * user space: the prefix's own rules and those inherited from shorter ones); without a hit, or
 * with no CIDR rules at all, the half's "any" list. The first candidate whose other match
 * fields fit decides; none means slot 0, the default rule. Returns the slot.
 */
__noinline int sl_classify(struct sl_pkt *p, __u32 version)
{
	__u32 half = version & 1, i, n;
	struct sl_half *h = bpf_map_lookup_elem(&sl_policy, &half);
	struct sl_cands *c;

	if (!p || !h)
		return 0;
	p->tier = SL_TIER_DEFAULT;
	if (h->n_geo) {
		struct sl_lpm_key gk = {
			.prefixlen = 32 + (p->family == 4 ? 32 : 128),
			.half = half,
			.family = p->family,
		};
		struct sl_geo_val *g;

		__builtin_memcpy(gk.addr, p->src, 16);
		g = bpf_map_lookup_elem(&sl_geo, &gk);
		if (g && g->version == h->geo_version)
			p->tier = g->tier;
		else if (g)
			sl_count_event(SL_R_STALE);
	}
	c = &h->any;
	if (h->n_cidr) {
		struct sl_lpm_key lk = {
			.prefixlen = 32 + (p->family == 4 ? 32 : 128),
			.half = half,
			.family = p->family,
		};
		struct sl_cands *hit;

		__builtin_memcpy(lk.addr, p->src, 16);
		hit = bpf_map_lookup_elem(&sl_cidr, &lk);
		if (hit)
			c = hit;
	}
	if (c->version != version) {
		sl_count_event(SL_R_STALE);
		return 0;
	}
	n = c->n;
	for (i = 0; i < SL_MAX_CANDS; i++) {
		__u32 slot, idx;
		struct sl_rule *r;

		if (i >= n)
			break;
		slot = c->slot[i];
		idx = half * max_rules + slot;
		r = bpf_map_lookup_elem(&sl_rules, &idx);
		if (r && slot < max_rules && sl_rule_matches(r, p))
			return slot;
	}
	return 0;
}

/*
 * The rule's aggregate limit over all its keys, on this CPU's share (GCRA, per-CPU state: only this
 * CPU touches its slot, so no atomics). Returns 1 when within; *next is the state to store if the
 * packet then passes. Its rate and tolerance are derived once per rule (sl_derive).
 */
static __always_inline int sl_aggregate(const struct sl_rule *r, const struct sl_derived *d,
					struct sl_agg_state *ag, __u64 now, __u64 pkts, __u64 *next)
{
	__u64 interval = d->agg_interval, tau = d->agg_tau, t;

	if (ag->epoch != r->epoch) {
		ag->tat = 0;
		ag->epoch = r->epoch;
	}
	t = ag->tat > now ? ag->tat : now;
	/* A debt beyond one packet past the tolerance (a lowered limit) is forgiven. */
	if (t - now > tau + interval)
		t = now + tau + interval;
	*next = t + interval * pkts;
	return t - now <= tau;
}

/*
 * Whether this CPU may insert one more key into rate_limit_map now: GCRA over new_per_sec
 * (sl_config.new_states_per_sec), burst one second's worth, per CPU (only this CPU touches its
 * slot, so no atomics). An LRU insertion that evicts costs ten times a lookup; under a flood of
 * spoofed sources this caps that work, and it caps how fast the flood can evict the keys of real
 * sources. Called on a miss only.
 */
static __always_inline int sl_may_insert(__u32 new_per_sec, __u64 now)
{
	__u32 zero = 0;
	__u64 *tat = bpf_map_lookup_elem(&sl_newstate, &zero);
	__u64 t, interval;

	if (!tat)
		return 1;
	/* Above 10^9 a second the interval is 0: the budget never runs out. */
	interval = SL_NSEC / (new_per_sec ? new_per_sec : SL_DEFAULT_NEW_STATES);
	t = *tat > now ? *tat : now;
	if (t - now > SL_NSEC - interval)
		return 0;
	*tat = t + interval;
	return 1;
}

/*
 * Limit, act and count one classified packet. new_per_sec is sl_config.new_states_per_sec.
 * Returns an sl_verdict. Inline: sl_decide calls it once, at its end, so it is still verified
 * about once, and a call less is 2 ns a packet.
 */
static __always_inline int sl_enforce(const struct sl_pkt *p, const struct sl_rule *r,
				      __u32 new_per_sec)
{
	struct sl_tick tick;
	struct sl_key key = {};
	struct sl_state *st;
	struct sl_derived *d;
	struct sl_agg_state *ag = NULL;
	__u32 alg, new_state = 0, id, slot;
	__u64 now, pkts, ag_next = 0;
	int allow;

	if (!p || !r)
		return SL_V_PASS;
	id = r->id;
	slot = id & (SL_DERIVED_SLOTS - 1);
	d = bpf_map_lookup_elem(&sl_derived, &slot);
	if (!d)
		return SL_V_PASS;
	if (!d->valid || d->id != id || d->version != r->version)
		sl_derive(r, d);
	alg = d->pkt.alg;
	now = sl_now(d->coarse);
	pkts = p->segs ? p->segs : 1;

	/* A flood of new sources passes every per-key check; the aggregate holds it. */
	if (d->has_agg)
		ag = bpf_map_lookup_elem(&sl_agg, &id);
	if (ag && !sl_aggregate(r, d, ag, now, pkts, &ag_next)) {
		sl_count(id, SL_R_AGGREGATE, SL_V_DROP, p->len, 0);
		sl_event(p, id, SL_R_AGGREGATE, SL_V_DROP, now);
		return SL_V_DROP;
	}

	sl_make_key(p, r, &key);
	st = bpf_map_lookup_elem(&rate_limit_map, &key);
	if (!st) {
		struct sl_state fresh = { .epoch = r->epoch, .alg = alg };
		long err;

		/* Over this CPU's rate of new states, a new key is not tracked: the packet is held by
		 * the aggregate alone (never for a rule without one). */
		if (ag && !sl_may_insert(new_per_sec, now)) {
			ag->tat = ag_next;
			sl_count(id, SL_R_UNTRACKED, SL_V_PASS, p->len, 0);
			return SL_V_PASS;
		}
		err = bpf_map_update_elem(&rate_limit_map, &key, &fresh, BPF_NOEXIST);
		if (err == 0)
			new_state = 1;
		st = bpf_map_lookup_elem(&rate_limit_map, &key);
		if (!st) {
			sl_count(id, SL_R_NOSTATE, SL_V_PASS, p->len, new_state);
			return SL_V_PASS;
		}
	}
	if (st->epoch != r->epoch || st->alg != alg) {
		/* Written under another algorithm or window: start this key afresh. */
		st->pkt = 0;
		st->byt = 0;
		st->epoch = r->epoch;
		st->alg = alg;
	}
	tick.now = now;
	tick.last_seen = READ_ONCE(st->last_seen);
	/* Written only when it moves: a store on every packet would pull the state's cache line
	 * away from the other CPUs (with the coarse clock it moves once per jiffy). */
	if (tick.last_seen != now)
		WRITE_ONCE(st->last_seen, now);

	if (READ_ONCE(st->blocked_until) > now) {
		sl_count(id, SL_R_BLOCKED, SL_V_DROP, p->len, new_state);
		sl_event(p, id, SL_R_BLOCKED, SL_V_DROP, now);
		return SL_V_DROP;
	}

	allow = sl_charge(st, &tick, pkts, p->len, &d->pkt, &d->byt, d->has_pkt, d->has_byt);
	if (allow > 0) {
		if (ag)
			ag->tat = ag_next;
		sl_count(id, SL_R_PASS, SL_V_PASS, p->len, new_state);
		return SL_V_PASS;
	}
	if (allow < 0) {
		sl_count(id, SL_R_CONTENDED, SL_V_DROP, p->len, new_state);
		sl_event(p, id, SL_R_CONTENDED, SL_V_DROP, now);
		return SL_V_DROP;
	}
	if (r->action == SL_ACT_DRYRUN) {
		sl_count(id, SL_R_DRYRUN, SL_V_PASS, p->len, new_state);
		sl_event(p, id, SL_R_DRYRUN, SL_V_PASS, now);
		return SL_V_PASS;
	}
	__sync_fetch_and_add(&st->dropped, 1);
	if (r->action == SL_ACT_BLOCK)
		WRITE_ONCE(st->blocked_until, now + (__u64)r->block_ms * 1000000ULL);
	sl_count(id, SL_R_LIMIT, SL_V_DROP, p->len, new_state);
	sl_event(p, id, SL_R_LIMIT, SL_V_DROP, now);
	return SL_V_DROP;
}

/* sl_decide's answer for a rule whose packets go to a plugged program: this | slot | rule id << 16. */
#define SL_PLUGIN_CALL 0x100

/*
 * Everything after parsing, independent of the hook. Returns an sl_verdict, or SL_PLUGIN_CALL |
 * slot when plugins is set and the rule hands its packets to a plugged program (the caller then
 * tail-calls it, and decides again with plugins clear if the slot is empty).
 */
__noinline int sl_decide(struct sl_pkt *p, int plugins)
{
	__u32 zero = 0, slot = 0, idx, version, half;
	struct sl_config *cfg;
	struct sl_half *h;
	struct sl_rule *rp;

	if (!p)
		return SL_V_PASS;
	cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg)
		return SL_V_PASS;
	if (p->reason) {
		__u32 v = cfg->malformed_drop ? SL_V_DROP : SL_V_PASS;

		sl_count(max_rules, p->reason, v, p->len, 0);
		if (v == SL_V_DROP)
			sl_event(p, max_rules, p->reason, v, bpf_ktime_get_coarse_ns());
		return v;
	}
	if (!p->family) {
		sl_count(max_rules, SL_R_NON_IP, SL_V_PASS, p->len, 0);
		return SL_V_PASS;
	}
	if (cfg->has_lists) {
		struct sl_lpm_key lk = {
			.prefixlen = 32 + (p->family == 4 ? 32 : 128),
			.family = p->family,
		};
		struct sl_list_val *lv;

		__builtin_memcpy(lk.addr, p->src, 16);
		lv = bpf_map_lookup_elem(&sl_lists, &lk);
		if (lv && (lv->flags & SL_LIST_MGMT)) {
			sl_count(max_rules, SL_R_MGMT, SL_V_PASS, p->len, 0);
			return SL_V_PASS;
		}
		if (lv && (lv->flags & SL_LIST_DENY)) {
			sl_count(max_rules, SL_R_DENYLIST, SL_V_DROP, p->len, 0);
			sl_event(p, max_rules, SL_R_DENYLIST, SL_V_DROP, bpf_ktime_get_coarse_ns());
			return SL_V_DROP;
		}
		if (lv && (lv->flags & SL_LIST_ALLOW)) {
			sl_count(max_rules, SL_R_ALLOWLIST, SL_V_PASS, p->len, 0);
			return SL_V_PASS;
		}
	}

	version = cfg->version;
	half = version & 1;
	h = bpf_map_lookup_elem(&sl_policy, &half);
	if (!h)
		return SL_V_PASS;
	if (h->n_geo || h->n_cidr || h->any.n) {
		slot = sl_classify(p, version);
	} else {
		/* Only the default rule: what sl_classify would find, without the call. */
		p->tier = SL_TIER_DEFAULT;
		if (h->any.version != version)
			sl_count_event(SL_R_STALE);
	}
	idx = half * max_rules + slot;
	rp = bpf_map_lookup_elem(&sl_rules, &idx);
	if (!rp)
		return SL_V_PASS;
	/* Read in place: the live half is never written (a policy is written into the idle half,
	 * after every packet that could still read it has finished). */
	if (rp->version != version)
		sl_count_event(SL_R_STALE);
	if (!((rp->dir ? rp->dir : SL_DIR_INGRESS) & p->dir)) {
		/* Only the default rule gets here unmatched (candidates are matched on direction). */
		sl_count(max_rules, SL_R_UNMATCHED, SL_V_PASS, p->len, 0);
		return SL_V_PASS;
	}
	if (rp->plugin && plugins) {
		sl_count(rp->id, SL_R_PLUGIN, SL_V_PASS, p->len, 0);
		return SL_PLUGIN_CALL | ((rp->plugin - 1) & (SL_PLUGIN_SLOTS - 1)) | (rp->id & 0x7fff) << 16;
	}
	return sl_enforce(p, rp, cfg->new_states_per_sec);
}

/* Take back the PLUGIN count of a packet whose plugin slot was empty (same CPU, so exact). */
static __always_inline void sl_plugin_missed(__u32 slot_of_rule, __u32 len)
{
	struct sl_counters *c = bpf_map_lookup_elem(&stats_map, &slot_of_rule);

	if (!c)
		return;
	c->packets[SL_V_PASS] -= 1;
	c->bytes[SL_V_PASS] -= len;
	c->reason_packets[SL_R_PLUGIN] -= 1;
	c->reason_bytes[SL_R_PLUGIN] -= len;
}

/* Parse in a function of its own: the walk is verified once, not in every caller's context. */
__noinline int sl_parse_xdp(struct xdp_md *ctx, struct sl_pkt *p)
{
	if (!p)
		return 0;
	sl_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, p);
	return 0;
}

SEC("xdp")
int sluice_xdp(struct xdp_md *ctx)
{
	struct sl_pkt p = { .segs = 1, .dir = SL_DIR_INGRESS };
	int v;

	sl_parse_xdp(ctx, &p);
	v = sl_decide(&p, 1);
	if (v & SL_PLUGIN_CALL) {
		bpf_tail_call(ctx, &sl_plugins_xdp, v & (SL_PLUGIN_SLOTS - 1));
		/* The slot is empty: the built-in limiter decides. */
		sl_plugin_missed((v >> 16) & 0x7fff, p.len);
		v = sl_decide(&p, 0);
	}
	return v == SL_V_DROP ? XDP_DROP : XDP_PASS;
}

/*
 * tc: parse what the skb holds linearly (pulled first, at most 512 bytes: headers, not payload).
 * A GSO packet stands for gso_segs packets on the wire; it is charged as that many.
 */
__noinline int sl_parse_skb(struct __sk_buff *skb, struct sl_pkt *p)
{
	__u32 len = skb->len < 512 ? skb->len : 512;

	if (!p)
		return 0;
	bpf_skb_pull_data(skb, len);
	sl_parse((void *)(long)skb->data, (void *)(long)skb->data_end, p);
	p->len = skb->len;
	p->segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	return 0;
}

/* Egress at tc clsact. Passing returns TC_ACT_UNSPEC so that other tools' filters still run. */
SEC("tc")
int sluice_egress(struct __sk_buff *skb)
{
	struct sl_pkt p = { .segs = 1, .dir = SL_DIR_EGRESS };
	int v;

	sl_parse_skb(skb, &p);
	v = sl_decide(&p, 1);
	if (v & SL_PLUGIN_CALL) {
		bpf_tail_call(skb, &sl_plugins_tc, v & (SL_PLUGIN_SLOTS - 1));
		sl_plugin_missed((v >> 16) & 0x7fff, p.len);
		v = sl_decide(&p, 0);
	}
	return v == SL_V_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
