/* SPDX-License-Identifier: GPL-2.0 */
/*
 * state.h - a key's state: one algorithm step, charge and refund by compare-and-exchange, the rule's
 * derived values, its aggregate limit and each CPU's cap on new states.
 */
#ifndef SLUICE_STATE_H
#define SLUICE_STATE_H

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

/* One algorithm step (inline: the per-packet path of a rule with a packet limit alone). */
static __always_inline int sl_step(__u64 word, __u64 cost, __u64 now, const struct sl_params *pr,
				   struct sl_words *out)
{
	switch (pr->alg) {
	case SL_ALG_SLIDING:
		return sl_sliding(word, now, cost, pr, out);
	case SL_ALG_TOKEN:
		return sl_token(word, now, cost, pr, out);
	case SL_ALG_GCRA:
		return sl_gcra(word, now, cost, pr, out);
	default:
		return sl_fixed(word, now, cost, pr, out);
	}
}

/* sl_step as a function of its own, for the paths that charge two words (verified once). */
__noinline int sl_step_g(__u64 word, __u64 cost, __u64 now, const struct sl_params *pr,
			 struct sl_words *out)
{
	if (!pr || !out)
		return 0;
	return sl_step(word, cost, now, pr, out);
}

/*
 * Take back the charge that this CPU committed to *w (pw->charged, computed from old), after the
 * other dimension refused the packet. Exact whatever other CPUs did in between: the TAT forms are
 * moved back by the charge's length with one atomic add; the window forms lose cost from the window
 * it was counted in, if that window is still held (a window that has rolled past needs no refund).
 */
__noinline int sl_refund(__u64 *w, const struct sl_params *pr, __u64 now, __u64 old,
			 const struct sl_words *pw)
{
	__u64 cost;
	int i;

	if (!w || !pr || !pw)
		return 0;
	if (pr->alg == SL_ALG_TOKEN || pr->alg == SL_ALG_GCRA) {
		__u64 nq = now << pr->shift;
		__u64 t = nq + sl_backlog(old, nq, pr);

		__sync_fetch_and_add(w, -(pw->charged - t));
		return 0;
	}
	/* The window forms charged cost to the count field of the rolled word. */
	cost = pw->charged - pw->rolled;
	for (i = 0; i < SL_CAS_TRIES; i++) {
		__u64 cur = READ_ONCE(*w), next;

		if (pr->alg == SL_ALG_SLIDING) {
			__u64 d = ((cur >> 48) - (pw->charged >> 48)) & 0xffff;

			if (d == 0 && (cur & SL_MASK24) >= cost)
				next = cur - cost;
			else if (d == 1 && ((cur >> 24) & SL_MASK24) >= cost)
				next = cur - (cost << 24);
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

#ifdef SLUICE_TEST
/* Test build: sl_test.cas_fail makes every compare-and-exchange of a charge lose its race. */
static __always_inline int sl_test_cas_fail(void)
{
	__u32 zero = 0;
	struct sl_test_ctl *t = bpf_map_lookup_elem(&sl_test, &zero);

	return t && t->cas_fail;
}
#endif

/*
 * Decide and commit one word: it changes only by a compare-and-exchange from the exact value the
 * decision was computed on, so the limit is never exceeded, however many CPUs race on the key.
 * Returns 1 to pass, 0 to drop, -1 when still contended after SL_CAS_TRIES attempts.
 */
static __always_inline int sl_charge1(__u64 *w, __u64 now, __u64 cost, const struct sl_params *pr)
{
	int i;

	for (i = 0; i < SL_CAS_TRIES; i++) {
		struct sl_words o;
		__u64 old = READ_ONCE(*w), next;
		int allow = sl_step(old, cost, now, pr, &o);

		next = allow ? o.charged : o.rolled;
#ifdef SLUICE_TEST
		if (sl_test_cas_fail())
			continue;
#endif
		if (next == old || __sync_val_compare_and_swap(w, old, next) == old)
			return allow;
	}
	return -1;
}

/*
 * Decide and commit two words (a packet and a byte limit; wb NULL: one word): a packet passes only
 * if both allow it, and is charged to both only when it passes. When the second word loses a race
 * after the first was charged, the first charge is refunded (exactly, see sl_refund) and the
 * decision retried. Returns what sl_charge1 returns.
 */
static __always_inline int sl_charge2(__u64 *wa, __u64 *wb, __u64 now, __u64 ca, __u64 cb,
				      const struct sl_params *pa, const struct sl_params *pb)
{
	int i;

	for (i = 0; i < SL_CAS_TRIES; i++) {
		struct sl_words aw, bw;
		__u64 ao = READ_ONCE(*wa), bo = wb ? READ_ONCE(*wb) : 0;
		__u64 an, bn = bo;
		int allow = 1;

		bw.charged = bw.rolled = bo;
		if (!sl_step_g(ao, ca, now, pa, &aw))
			allow = 0;
		if (wb && !sl_step_g(bo, cb, now, pb, &bw))
			allow = 0;
		an = allow ? aw.charged : aw.rolled;
		if (wb)
			bn = allow ? bw.charged : bw.rolled;
#ifdef SLUICE_TEST
		if (sl_test_cas_fail())
			continue;
#endif
		if (an != ao && __sync_val_compare_and_swap(wa, ao, an) != ao)
			continue;
		if (wb && bn != bo && __sync_val_compare_and_swap(wb, bo, bn) != bo) {
			if (allow && an != ao)
				sl_refund(wa, pa, now, ao, &aw);
			continue;
		}
		return allow;
	}
	return -1;
}

/*
 * The words a rule charges: the packet entry's (packets, or bytes for a rule without a packet
 * limit), and the byte entry's for a rule with both (sb).
 */
static __always_inline int sl_charge_d(struct sl_state *sa, struct sl_state *sb,
				       const struct sl_derived *d, __u64 now, __u64 pkts, __u64 len)
{
	if (!d->has_pkt)
		return sl_charge2(&sa->word, NULL, now, len, 0, &d->byt, &d->byt);
	return sl_charge2(&sa->word, sb ? &sb->word : NULL, now, pkts, len, &d->pkt, &d->byt);
}

/*
 * A packet of a per-rule bucket (d->lease_pkt set): spent from this CPU's lease when it holds
 * enough, else charged to the bucket together with a new lease (one compare-and-exchange), else,
 * near the bucket's end, charged alone (so one CPU can still use all of it). What a lease leaves
 * unspent when another is taken is lost to the bucket. Returns what sl_charge1 returns.
 */
static __always_inline int sl_lease_charge(struct sl_state *sa, struct sl_state *sb,
					   struct sl_rule_cpu *rc, const struct sl_rule *r, __u64 now,
					   __u64 pkts, __u64 len)
{
	struct sl_derived *d = &rc->d;
	struct sl_lease *ls;
	__u64 lb;
	int allow;

	ls = &rc->lease;
	lb = d->has_byt ? d->lease_byt : 0;
	if (ls->version != r->version || ls->epoch != sa->epoch || now >= ls->expires) {
		ls->pkts = 0;
		ls->byts = 0;
	}
	if (ls->pkts >= pkts && (!d->has_byt || ls->byts >= len)) {
		ls->pkts -= pkts;
		if (d->has_byt)
			ls->byts -= len;
		return 1;
	}
	allow = sl_charge_d(sa, sb, d, now, pkts + d->lease_pkt, len + lb);
	if (allow > 0) {
		ls->pkts = d->lease_pkt;
		ls->byts = lb;
		ls->version = r->version;
		ls->epoch = sa->epoch;
		/* The window forms: a lease ends with its window, so no window admits more than its
		 * budget. The bucket forms: it lasts until spent. */
		ls->expires = (d->pkt.alg == SL_ALG_FIXED || d->pkt.alg == SL_ALG_SLIDING) ?
			(now / d->pkt.window_ns + 1) * d->pkt.window_ns : ~0ULL;
		return 1;
	}
	return sl_charge_d(sa, sb, d, now, pkts, len);
}

/*
 * One dimension's derivation, verified once on its own: its shift search is a loop whose every exit
 * would otherwise multiply the paths of the rest of sl_derive, and it is run for both dimensions.
 */
__noinline int sl_derive_dim(struct sl_params *pr, __u64 period_ms, __u64 window_ms)
{
	if (!pr)
		return 0;
	sl_params_derive(pr, period_ms, window_ms);
	return 0;
}

/* Resolve a dimension's zero fields to their documented defaults, and derive the rest. */
static __always_inline void sl_params_of(const struct sl_limit *l, __u64 rate, __u32 alg,
					 __u64 window_ms, __u64 period_ms, struct sl_params *out)
{
	out->alg = alg;
	out->rate = rate;
	out->burst = l->burst;
	if (!out->burst && (alg == SL_ALG_TOKEN || alg == SL_ALG_GCRA))
		out->burst = rate;  /* one period's worth */
	sl_derive_dim(out, period_ms, window_ms);
}

/*
 * The time scale of one dimension: the window, or the depth of the bucket (burst / rate x period).
 * The coarse clock moves in steps of one jiffy, so a rule reads it only when every dimension it
 * uses spans at least SL_COARSE_MIN_MS: its error (one step against the time scale) stays at a few
 * percent at the worst and well under one percent at the defaults (docs/datapath.md, Time).
 */
static __always_inline int sl_long_enough(const struct sl_params *pr, __u64 period_ms)
{
	if (pr->alg == SL_ALG_TOKEN || pr->alg == SL_ALG_GCRA)
		return pr->burst * period_ms >= pr->rate * SL_COARSE_MIN_MS;
	return pr->window_ns >= SL_COARSE_MIN_MS * 1000000ULL;
}

/*
 * Fill this CPU's derived values for rule r (a new policy version, or the first packet). Verified
 * once on its own; the divisions it holds are off the per-packet path. Only this CPU writes its
 * slot, and XDP and tc programs of one CPU do not nest (both run with bottom halves off), so no
 * packet sees a slot half written.
 */
__noinline int sl_derive(const struct sl_rule *r, struct sl_derived *d)
{
	__u32 alg;
	__u64 wms, pps, rate, burst, pk, cpus = nr_cpus ? nr_cpus : 1;
	__u64 pper, bper;

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
	pper = sl_period_ms(r->flags, SL_RF_PKT_PER_MIN, SL_RF_PKT_PER_HOUR);
	bper = sl_period_ms(r->flags, SL_RF_BYT_PER_MIN, SL_RF_BYT_PER_HOUR);
	sl_params_of(&r->pkt, pps, alg, wms, pper, &d->pkt);
	sl_params_of(&r->byt, r->byt.rate, alg, wms, bper, &d->byt);

	/* The aggregate: each CPU enforces its share, as GCRA, per second. Default:
	 * SL_DEFAULT_AGG_KEYS keys at the rule's packet rate (per second, rounded up) with their
	 * period's worth as the burst, so that it never holds back a crowd of well-behaved sources
	 * (also not a key's burst under a rate per minute or hour) and only bites on floods of
	 * (spoofed) new ones. */
	pk = pps * SL_DEFAULT_AGG_KEYS;
	rate = r->agg.rate ? r->agg.rate : pk / pper * 1000 + (pk % pper * 1000 + pper - 1) / pper;
	burst = r->agg.burst ? r->agg.burst : r->agg.rate ? rate : pk;
	rate = rate / cpus ? rate / cpus : 1;
	burst = burst / cpus ? burst / cpus : 1;
	d->agg_interval = SL_NSEC / rate;
	d->agg_tau = (burst - 1) * d->agg_interval;

	/* The budget of keys this CPU does not track (over its rate of new states): one key's limit,
	 * shared by all of them, so what never-seen sources get past the cap is bounded by it. */
	rate = d->pkt.rate;
	burst = (alg == SL_ALG_TOKEN || alg == SL_ALG_GCRA) ? d->pkt.burst : d->pkt.limit;
	d->unt_interval = pper * 1000000ULL / (rate ? rate : 1);
	d->unt_tau = burst > 1 ? (burst - 1) * d->unt_interval : 0;

	/* A per-rule bucket is shared by every CPU: each takes a lease of 1/(SL_LEASE_DIV x CPUs) of
	 * its burst at once (one compare-and-exchange per lease instead of per packet). Too small a
	 * burst to split (a lease under 2 packets, or under two full frames of bytes): no lease.
	 * GCRA takes none: a charge conforms when the backlog before it fits, so a lease could
	 * overdraw the bucket by its size. */
	d->lease_pkt = 0;
	d->lease_byt = 0;
	if ((r->flags & SL_RF_PER_RULE) && d->has_pkt && alg != SL_ALG_GCRA) {
		__u64 units = alg == SL_ALG_TOKEN ? d->pkt.burst : d->pkt.limit;
		__u64 lp = units / (SL_LEASE_DIV * cpus), lb = 0;

		if (d->has_byt) {
			units = alg == SL_ALG_TOKEN ? d->byt.burst : d->byt.limit;
			lb = units / (SL_LEASE_DIV * cpus);
		}
		if (lp >= 2 && (!d->has_byt || lb >= 2 * 1514)) {
			d->lease_pkt = lp;
			d->lease_byt = lb;
		}
	}
	d->simple = d->has_pkt && !d->has_byt && !d->lease_pkt;

	d->coarse = (coarse_clock & (1U << alg)) && (!d->has_pkt || sl_long_enough(&d->pkt, pper)) &&
		    (!d->has_byt || sl_long_enough(&d->byt, bper));
	d->id = r->id;
	d->version = r->version;
	d->valid = 1;
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
		ag->utat = 0;
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
 * Charge one untracked packet to the rule's budget for untracked keys on this CPU (GCRA, per-CPU
 * state: no atomics). Returns 1 when within.
 */
static __always_inline int sl_untracked(const struct sl_derived *d, struct sl_agg_state *ag,
					__u64 now, __u64 pkts)
{
	__u64 t = ag->utat > now ? ag->utat : now;

	if (t - now > d->unt_tau)
		return 0;
	ag->utat = t + d->unt_interval * pkts;
	return 1;
}

/*
 * Whether this CPU may insert one more key into the state maps now: GCRA over new_per_sec
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

#endif /* SLUICE_STATE_H */
