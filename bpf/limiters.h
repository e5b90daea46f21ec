/* SPDX-License-Identifier: GPL-2.0 */
/*
 * limiters.h - the four algorithms, each a pure function of (state word, now, cost, limits).
 *
 * Each returns 1 when the packet fits and writes two candidate words: *charged, the state after
 * charging the packet, and *rolled, the state after only the passage of time (a window roll).
 * The caller commits one of them with a compare-and-exchange. src/limiter/models.ts is the
 * reference model of exactly this arithmetic; the differential test compares them packet by packet.
 *
 * A rate is R units per period P (a second, a minute or an hour: sl_rule.flags). All arithmetic is
 * unsigned 64-bit, exact in these ranges, which the control plane enforces (docs/policy.md, Ranges):
 *   R 1 .. 2^40 per period; burst 0 .. 2^34; window 1 ms .. 1 h; a cost (frame bytes, GSO
 *   segments) at most 2^20; token/gcra: burst x inc1 <= 2^62 (below); fixed: R x window / P +
 *   burst <= 2^32 - 1, sliding <= 2^24 - 1.
 *
 * Token bucket and GCRA keep time in quanta of 2^-shift ns. shift is the smallest (at most
 * SL_MAX_SHIFT) for which one unit spans at least 2^16 quanta, and a unit costs inc1 =
 * ceil(P x 2^shift / R) quanta: every cost is a whole number of units, so charges add up exactly,
 * the bucket holds exactly burst units (depth = burst x inc1), nothing is ever admitted above R per
 * P, and the long-run rate is below R by less than one part in 2^16 (2^13.9 at R = 2^40/s).
 * No division is left on the per-packet path of these two.
 */
#ifndef SLUICE_LIMITERS_H
#define SLUICE_LIMITERS_H

#include "sluice.h"

#define SL_NSEC 1000000000ULL
#define SL_MASK32 0xffffffffULL
#define SL_MASK24 0xffffffULL
#define SL_UNIT_QUANTA_BITS 16       /* a unit spans at least 2^16 quanta, up to SL_MAX_SHIFT */
#define SL_MAX_SHIFT 24              /* at most 2^24 quanta per ns */
#define SL_MAX_COST (1ULL << 20)     /* larger costs are charged as this (no frame is that big) */
#define SL_TAT_SPAN (1ULL << 62)     /* bound of a bucket's depth, in quanta */
#define SL_MAX_WINDOW_MS 3600000ULL  /* windows longer than an hour are taken as an hour */

struct sl_words {
	__u64 charged;
	__u64 rolled;
};

/* The period of a dimension, from the rule's flags: a second unless they say a minute or an hour. */
static __always_inline __u64 sl_period_ms(__u32 flags, __u32 per_min, __u32 per_hour)
{
	if (flags & per_hour)
		return 3600000ULL;
	if (flags & per_min)
		return 60000ULL;
	return 1000ULL;
}

/*
 * Fill pr->shift, limit, inc1, stale and window_ns from (rate per period_ms, burst, window_ms),
 * with every division the algorithms below would otherwise do per packet. Done once per rule and
 * CPU (struct sl_derived).
 */
static __always_inline void sl_params_derive(struct sl_params *pr, __u64 period_ms, __u64 window_ms)
{
	__u64 rate = pr->rate ? pr->rate : 1;  /* never 0 here; a guard for a dimension not in use */
	__u64 pns = period_ms * 1000000ULL;

	if (window_ms > SL_MAX_WINDOW_MS)
		window_ms = SL_MAX_WINDOW_MS;
	pr->window_ns = window_ms * 1000000ULL;
	pr->shift = 0;
	pr->inc1 = 0;
	pr->stale = 0;
	if (pr->alg == SL_ALG_TOKEN || pr->alg == SL_ALG_GCRA) {
		__u64 units, cap;
		__u32 f = 0;
		int i;

		for (i = 0; i < SL_MAX_SHIFT; i++) {
			if ((pns << f) >= (rate << SL_UNIT_QUANTA_BITS))
				break;
			f++;
		}
		pr->shift = f;
		pr->inc1 = ((pns << f) + rate - 1) / rate;
		/* token: the bucket holds burst units; gcra: tau is burst - 1 of them. */
		units = pr->alg == SL_ALG_TOKEN ? pr->burst : (pr->burst ? pr->burst - 1 : 0);
		cap = units > SL_TAT_SPAN / pr->inc1 ? SL_TAT_SPAN : units * pr->inc1;
		pr->limit = cap;
		/* The farthest a live key's TAT can be ahead of now: a full bucket's worth plus the
		 * largest charge (a GSO packet may leave debt). Anything beyond is a word that idled
		 * past the wrap of the quanta: a full bucket. inc1 < 2^42 (P <= 1 h), so no overflow. */
		pr->stale = cap + pr->inc1 * SL_MAX_COST;
	} else {
		/* Units a window may hold: floor(rate x window / period) + burst, capped to the word's
		 * count field (the control plane refuses more). Split so that nothing overflows. */
		__u64 cap = pr->alg == SL_ALG_SLIDING ? SL_MASK24 : SL_MASK32;
		__u64 w = window_ms ? window_ms : 1;
		__u64 q = rate / period_ms, r = rate % period_ms, b;

		if (q > cap / w)
			b = cap;
		else
			b = q * w + r * w / period_ms + pr->burst;
		pr->limit = b > cap ? cap : b;
	}
}

/* Fixed window. Word: window number (32 bits) | units used in it (32 bits). */
static __always_inline int sl_fixed(__u64 word, __u64 now, __u64 cost,
				    const struct sl_params *pr, struct sl_words *out)
{
	__u64 wid = (now / pr->window_ns) & SL_MASK32;
	__u64 used = (word >> 32) == wid ? (word & SL_MASK32) : 0;
	__u64 budget = pr->limit;

	out->rolled = wid << 32 | used;
	out->charged = out->rolled;
	if (used + cost > budget)
		return 0;
	out->charged = wid << 32 | (used + cost);
	return 1;
}

/*
 * Sliding window: the previous window's count, weighted by how much of it still overlaps the
 * sliding window, plus the current count. Word: window number mod 2^16 (16 bits) | previous (24)
 * | current (24). The word says which window it counts, so no other field is read (a key idle for
 * a multiple of 65,536 windows, give or take one, would see its old counts: at 1 s windows, 18 h).
 * Both roundings are up (the share of the previous window in 1/65536, then the weighted count), so
 * the estimate is never below prev x share + cur, and a packet passes only if that plus its cost
 * fits the limit.
 */
static __always_inline int sl_sliding(__u64 word, __u64 now, __u64 cost,
				      const struct sl_params *pr, struct sl_words *out)
{
	__u64 w = pr->window_ns;
	__u64 wid = now / w;
	__u64 d = (wid - (word >> 48)) & 0xffff;
	__u64 prev = 0, cur = 0, elapsed, weight, est;
	__u64 budget = pr->limit;

	if (d == 0) {
		prev = (word >> 24) & SL_MASK24;
		cur = word & SL_MASK24;
	} else if (d == 1) {
		prev = word & SL_MASK24;
	}
	elapsed = now - wid * w;
	weight = (((w - elapsed) << 16) + w - 1) / w;  /* share still inside, /65536, rounded up */
	est = ((prev * weight + 0xffff) >> 16) + cur;

	out->rolled = (wid & 0xffff) << 48 | prev << 24 | cur;
	out->charged = out->rolled;
	if (est + cost > budget)
		return 0;
	out->charged = out->rolled + cost;
	return 1;
}

/*
 * The TAT forms' word: the time (in quanta, modulo 2^64) at which the bucket is full again. Its
 * backlog at nq (now in quanta) is how far it is ahead; a word behind now, or too far ahead to be
 * a live key's (pr->stale: it idled past a wrap), or 0 (a fresh state) is a full bucket. A
 * charge never stores 0.
 */
static __always_inline __u64 sl_backlog(__u64 word, __u64 nq, const struct sl_params *pr)
{
	__u64 d = word - nq;

	return word && d <= pr->stale ? d : 0;
}

static __always_inline __u64 sl_tat_word(__u64 t)
{
	return t ? t : 1;
}

static __always_inline __u64 sl_cost_quanta(__u64 cost, const struct sl_params *pr)
{
	return (cost < SL_MAX_COST ? cost : SL_MAX_COST) * pr->inc1;
}

/*
 * Token bucket in its one-timestamp form. Refill is continuous to the quantum (no whole-second
 * steps, nothing reset per packet). A packet fits when the bucket holds all of its cost. A cost
 * larger than the whole bucket (a GSO packet at egress standing for dozens of segments) fits a
 * full bucket and leaves the bucket in debt by the rest, so it is neither starved nor let through
 * above the rate. Debt is never forgiven (as in GCRA): it is what keeps such a charge honest, and
 * after a limit change it is paid off in time like any other.
 */
static __always_inline int sl_token(__u64 word, __u64 now, __u64 cost,
				    const struct sl_params *pr, struct sl_words *out)
{
	__u64 nq = now << pr->shift;
	__u64 cap = pr->limit;
	__u64 inc = sl_cost_quanta(cost, pr);
	__u64 need = inc < cap ? inc : cap;
	__u64 back = sl_backlog(word, nq, pr);

	out->rolled = word;
	out->charged = word;
	if (back + need > cap)
		return 0;
	out->charged = sl_tat_word(nq + back + inc);
	return 1;
}

/*
 * GCRA (virtual scheduling): the word is the theoretical arrival time. A packet conforms when it
 * arrives no earlier than TAT - tau, tau = (burst - 1) units; it then moves TAT by its cost. For
 * packets this admits what the token bucket admits; for bytes, a packet conforms when the backlog
 * before it fits, so it may overdraw the bucket by its own size less one unit.
 */
static __always_inline int sl_gcra(__u64 word, __u64 now, __u64 cost,
				   const struct sl_params *pr, struct sl_words *out)
{
	__u64 nq = now << pr->shift;
	__u64 back = sl_backlog(word, nq, pr);

	out->rolled = word;
	out->charged = word;
	if (back > pr->limit)
		return 0;
	out->charged = sl_tat_word(nq + back + sl_cost_quanta(cost, pr));
	return 1;
}

#endif /* SLUICE_LIMITERS_H */
