/* SPDX-License-Identifier: GPL-2.0 */
/*
 * limiters.h - the four algorithms, each a pure function of (state word, now, cost, limits).
 *
 * Each returns 1 when the packet fits and writes two candidate words: *charged, the state after
 * charging the packet, and *rolled, the state after only the passage of time (a window roll).
 * The caller commits one of them with a compare-and-exchange. src/limiter/models.ts is the
 * reference model of exactly this arithmetic; the differential test compares them packet by packet.
 *
 * All arithmetic is unsigned 64-bit. The control plane keeps inputs in range (docs/policy.md):
 * rate <= 2^40 per second, burst <= 2^34, window 1 ms .. 60 s, cost <= 65535.
 */
#ifndef SLUICE_LIMITERS_H
#define SLUICE_LIMITERS_H

#include "sluice.h"

#define SL_NSEC 1000000000ULL
#define SL_MASK32 0xffffffffULL
#define SL_MASK30 0x3fffffffULL

/* The packet's moment: the clock now and when the key last saw a packet. */
struct sl_tick {
	__u64 now;
	__u64 last_seen;
};

struct sl_words {
	__u64 charged;
	__u64 rolled;
};

/*
 * Fill pr->limit and pr->inc1 from the limit (rate, burst, window), with exactly the arithmetic the
 * algorithms below would otherwise do per packet. Done once per rule and CPU (struct sl_derived).
 */
static __always_inline void sl_params_derive(struct sl_params *pr)
{
	__u64 rate = pr->rate ? pr->rate : 1;  /* never 0 here; a guard for a dimension not in use */

	if (pr->alg == SL_ALG_TOKEN) {
		/* Both rounded up: the bucket holds at least burst units, and costs never undercharge. */
		pr->limit = (pr->burst * SL_NSEC + rate - 1) / rate;
		pr->inc1 = (SL_NSEC + rate - 1) / rate;
	} else if (pr->alg == SL_ALG_GCRA) {
		pr->limit = (pr->burst - 1) * SL_NSEC / rate;
		pr->inc1 = SL_NSEC / rate;
	} else {
		/* Units a window may hold: rate over the window, plus the burst, capped to the word. */
		__u64 cap = pr->alg == SL_ALG_SLIDING ? SL_MASK30 : SL_MASK32;
		__u64 b = rate * pr->window_ms / 1000 + pr->burst;

		pr->limit = b > cap ? cap : b;
		pr->inc1 = 0;
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
 * sliding window, plus the current count. Word: window number mod 16 (4 bits) | previous (30) |
 * current (30). last_seen tells an idle key (two windows or more) from a window-number wrap.
 */
static __always_inline int sl_sliding(__u64 word, __u64 now, __u64 last_seen, __u64 cost,
				      const struct sl_params *pr, struct sl_words *out)
{
	__u64 w = pr->window_ns;
	__u64 wid = now / w;
	__u64 prev = 0, cur = 0, elapsed, weight, est;
	__u64 budget = pr->limit;

	if (last_seen + 2 * w > now) {
		__u64 d = (wid - (word >> 60)) & 15;

		if (d == 0) {
			prev = (word >> 30) & SL_MASK30;
			cur = word & SL_MASK30;
		} else if (d == 1) {
			prev = word & SL_MASK30;
		}
	}
	elapsed = now - wid * w;
	weight = ((w - elapsed) << 16) / w;  /* share of the previous window still inside, /65536 */
	est = ((prev * weight) >> 16) + cur;

	out->rolled = (wid & 15) << 60 | prev << 30 | cur;
	out->charged = out->rolled;
	if (est + cost > budget)
		return 0;
	out->charged = (wid & 15) << 60 | prev << 30 | (cur + cost);
	return 1;
}

/*
 * Token bucket in its one-timestamp form: the word is the time at which the bucket is full again.
 * Refill is continuous to the nanosecond (no whole-second steps, nothing reset per packet). A
 * packet fits when the bucket holds all of its cost; its cost in time is rounded up, so the
 * long-run rate never exceeds the configured one. A cost larger than the whole bucket (a GSO
 * packet at egress standing for dozens of segments) fits a full bucket and leaves the bucket in
 * debt by the rest, so it is neither starved nor let through above the rate. Debt is never
 * forgiven (as in GCRA): it is what keeps such a charge honest, and after a limit change it is
 * paid off in time like any other.
 */
static __always_inline int sl_token(__u64 word, __u64 now, __u64 cost,
				    const struct sl_params *pr, struct sl_words *out)
{
	/* Both rounded up (sl_params_derive): the bucket holds at least burst units, and costs
	 * never undercharge. */
	__u64 cap = pr->limit;
	__u64 inc = cost == 1 ? pr->inc1 : (cost * SL_NSEC + pr->rate - 1) / pr->rate;
	__u64 need = inc < cap ? inc : cap;
	__u64 t = word > now ? word : now;

	out->rolled = word;
	out->charged = word;
	if (t + need - now > cap)
		return 0;
	out->charged = t + inc;
	return 1;
}

/*
 * GCRA (virtual scheduling): the word is the theoretical arrival time. A packet conforms when it
 * arrives no earlier than TAT - tau, tau = (burst - 1) emission intervals; it then moves TAT by
 * its cost (rounded down). For packets this admits what the token bucket admits; for bytes, a
 * packet conforms when the backlog before it fits, so it may overdraw the bucket by its own size.
 */
static __always_inline int sl_gcra(__u64 word, __u64 now, __u64 cost,
				   const struct sl_params *pr, struct sl_words *out)
{
	__u64 tau = pr->limit;
	__u64 inc = cost == 1 ? pr->inc1 : cost * SL_NSEC / pr->rate;
	__u64 t = word > now ? word : now;

	out->rolled = word;
	out->charged = word;
	if (t - now > tau)
		return 0;
	out->charged = t + inc;
	return 1;
}

#endif /* SLUICE_LIMITERS_H */
