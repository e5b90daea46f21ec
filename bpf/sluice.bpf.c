// SPDX-License-Identifier: GPL-2.0
/*
 * sluice.bpf.c - the entry points: parse -> lists -> classify -> key -> limit -> act -> count.
 *
 * The path of a packet whose key has state, under a rule with a packet limit, is inline in the entry
 * point: parse, the policy's lookups, the rule's per-CPU context (one lookup: derived values,
 * aggregate, counters), the clock, the state's lookup, one algorithm step and its
 * compare-and-exchange. Everything else (classification with CIDR entries, lists, fragments,
 * malformed frames, new keys, byte limits and leases, blocks and penalties, derivation, events) is a
 * global (__noinline) function, so the verifier checks it once on its own instead of once per path
 * through its callers, and the fast path carries none of its code.
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
#include "count.h"
#include "state.h"
#include "key.h"
#include "classify.h"

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

/* sl_state.drops below this may count one more drop (a few racing CPUs never carry past 2^32). */
#define SL_DROPS_SAT 0xffff0000U

/* What sl_new_key returns when the key now has state: the caller looks it up and goes on. */
#define SL_NK_TRACKED 2
/* What the charge of a byte-limited key returns when its byte entry could not be made. */
#define SL_NOSTATE (-2)

/*
 * A packet its rule would drop for `reason`: dropped, or in dry-run passed and counted as a
 * would-drop (DRYRUN), whatever the reason, so that trying a policy never drops a packet.
 */
static __always_inline int sl_over(const struct sl_pkt *p, const struct sl_config *cfg,
				   const struct sl_rule *r, struct sl_rule_cpu *rc, __u32 reason,
				   __u64 now)
{
	if (r->action == SL_ACT_DRYRUN) {
		sl_count_in(&rc->c, SL_R_DRYRUN, SL_V_PASS, p->len);
		sl_event(p, cfg, r->id, SL_R_DRYRUN, SL_V_PASS, now);
		return SL_V_PASS;
	}
	sl_count_in(&rc->c, reason, SL_V_DROP, p->len);
	sl_event(p, cfg, r->id, reason, SL_V_DROP, now);
	return SL_V_DROP;
}

/*
 * Flags and the drop count of sl_state.drops change by atomic operations on the 64 bits from it
 * (drops, epoch, seen: BPF has no 32-bit or/and before -mcpu=v3). They change only drops' 32 bits
 * (a drop is counted only below SL_DROPS_SAT, so no carry leaves them), and epoch and seen are
 * written by plain stores of their own, which an atomic operation never loses. SL_META(x) is x
 * where drops sits in those 64 bits (their low half, or the high one on a big-endian host).
 */
static __always_inline __u64 *sl_meta(struct sl_state *st)
{
	return (__u64 *)&st->drops;
}
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SL_META(x) ((__u64)(x) << 32)
#else
#define SL_META(x) ((__u64)(x))
#endif

/* The state of the packet's key, in rate_limit_map or rate_limit_map6. */
static __always_inline struct sl_state *sl_state_of(const struct sl_pkt *p, const struct sl_rule *r)
{
	if (sl_key_is4(p, r)) {
		struct sl_key k = {};

		sl_key4_of(p, r, &k);
		return bpf_map_lookup_elem(&rate_limit_map, &k);
	}
	{
		struct sl_key6 k = {};

		sl_key6_of(p, r, &k);
		return bpf_map_lookup_elem(&rate_limit_map6, &k);
	}
}

/*
 * The byte entry of the packet's key (flags SL_KF_BYTES): looked up, or with make, inserted with
 * word, written under epoch (BPF_NOEXIST: a concurrent insertion wins) and looked up. *made is set
 * when this call inserted it.
 */
static __always_inline struct sl_state *sl_byte_state_of(const struct sl_pkt *p, const struct sl_rule *r,
							 int make, __u64 word, __u16 epoch, int *made)
{
	struct sl_state fresh = { .word = word, .epoch = epoch };

	if (sl_key_is4(p, r)) {
		struct sl_key k = {};

		sl_key4_of(p, r, &k);
		k.flags |= SL_KF_BYTES;
		if (make && !bpf_map_update_elem(&rate_limit_map, &k, &fresh, BPF_NOEXIST))
			*made = 1;
		return bpf_map_lookup_elem(&rate_limit_map, &k);
	}
	{
		struct sl_key6 k = {};

		sl_key6_of(p, r, &k);
		k.flags |= SL_KF_BYTES;
		if (make && !bpf_map_update_elem(&rate_limit_map6, &k, &fresh, BPF_NOEXIST))
			*made = 1;
		return bpf_map_lookup_elem(&rate_limit_map6, &k);
	}
}

/* The bit of sl_pen_bits that stands for key k (a multiplicative hash of its 20 bytes). */
static __always_inline __u64 *sl_pen_bit(const struct sl_key6 *k, __u64 *bit)
{
	__u64 a, b, h;
	__u32 c, word;

	__builtin_memcpy(&a, k, 8);
	__builtin_memcpy(&b, (const __u8 *)k + 8, 8);
	__builtin_memcpy(&c, (const __u8 *)k + 16, 4);
	h = (a ^ (b << 21 | b >> 43) ^ ((__u64)c << 42 | (__u64)c >> 22)) * 0x9e3779b97f4a7c15ULL;
	h >>= 64 - SL_PEN_BITS_LOG2;
	word = h >> 6;
	*bit = 1ULL << (h & 63);
	return bpf_map_lookup_elem(&sl_pen_bits, &word);
}

/*
 * Record a key's state in sl_penalty as of a drop by its limit, or the start of a block
 * (blocked_until non-zero), once per pass: the entry then says everything the state says until
 * the key passes again. `until` is when a fresh state would be as strict: the token and GCRA
 * words are that time; a window's count matters until the window after the next has begun.
 * Returns 1 when recorded, 0 when sl_penalty is full or was at this CPU's last try, less than
 * SL_PEN_RETRY_NS ago (PENALTY_FULL counted either way).
 */
static __always_inline int sl_penalize_at(const struct sl_pkt *p, const struct sl_rule *r,
					  struct sl_state *st, const struct sl_derived *d, __u64 now,
					  __u64 blocked_until)
{
	struct sl_penalty pen = {};
	struct sl_key6 k = {};
	struct sl_state *sb = NULL;
	struct sl_rule_cpu *g;
	__u32 gidx = max_rules;
	__u64 until = now, bit, *w;
	__u32 alg;
	int made = 0;

	if (!p || !r || !st || !d)
		return 0;
	/* The store was full at this CPU's last try: no write (a failed hash update per drop would
	 * cost more than the drop) until the retry time; counted as if tried. */
	g = bpf_map_lookup_elem(&stats_map, &gidx);
	if (g && now < g->pen_retry) {
		sl_count_event(SL_R_PENALTY_FULL, 0);
		return 0;
	}
	sl_wide_key(p, r, &k);
	alg = d->pkt.alg;
	pen.pkt = READ_ONCE(st->word);
	if (d->has_pkt && d->has_byt) {
		sb = sl_byte_state_of(p, r, 0, 0, 0, &made);
		if (sb)
			pen.byt = READ_ONCE(sb->word);
	}
	pen.blocked_until = blocked_until;
	pen.epoch = st->epoch;
	if (alg == SL_ALG_TOKEN || alg == SL_ALG_GCRA) {
		if (pen.pkt > until)
			until = pen.pkt;
		if (sb && pen.byt > until)
			until = pen.byt;
	} else {
		until = now + 2 * (d->has_pkt ? d->pkt.window_ns : d->byt.window_ns);
	}
	pen.until = until > blocked_until ? until : blocked_until;
	if (bpf_map_update_elem(&sl_penalty, &k, &pen, BPF_ANY)) {
		if (g)
			g->pen_retry = now + SL_PEN_RETRY_NS;
		sl_count_event(SL_R_PENALTY_FULL, 0);
		return 0;
	}
	/* After the entry: a CPU that sees the bit finds the entry. */
	w = sl_pen_bit(&k, &bit);
	if (w && !(READ_ONCE(*w) & bit))
		__sync_fetch_and_or(w, bit);
	if (!(READ_ONCE(st->drops) & SL_SB_PENALIZED))
		__sync_fetch_and_or(sl_meta(st), SL_META(SL_SB_PENALIZED));
	return 1;
}

/* sl_penalize_at for a drop by the limit (no block). */
__noinline int sl_penalize(const struct sl_pkt *p, const struct sl_rule *r, struct sl_state *st,
			   const struct sl_derived *d, __u64 now)
{
	return sl_penalize_at(p, r, st, d, now, 0);
}

/*
 * The key is over its limit under a block rule: blocked for block_ms from now, without charge. The
 * end is kept in its sl_penalty record (recorded with its state); when that store is full the
 * block cannot be kept, and the key is held by its rule's limit alone (PENALTY_FULL counted).
 */
__noinline int sl_block(const struct sl_pkt *p, const struct sl_rule *r, struct sl_state *st,
			const struct sl_derived *d, __u64 now)
{
	__u64 end = now + (__u64)r->block_ms * 1000000ULL;

	if (!p || !r || !st || !d)
		return 0;
	if (!sl_penalize_at(p, r, st, d, now, end))
		return 0;
	/* Not charged while blocked, the word holds the block's end (the record has the word as it
	 * was): the flag's test reads it, and the record is looked up only when it does not hold. */
	WRITE_ONCE(st->word, end);
	if (!(READ_ONCE(st->drops) & SL_SB_BLOCKED))
		__sync_fetch_and_or(sl_meta(st), SL_META(SL_SB_BLOCKED));
	return 0;
}

/*
 * A key with SL_SB_BLOCKED whose word holds a block's end still to come, and no further away than
 * its rule's block lasts: blocked, by the state alone. Any other word (the rule's epoch moved and
 * reset it; a charge that raced with the block's start wrote it) sends the packet to the record.
 */
static __always_inline int sl_blocked_by_word(const struct sl_rule *r, const struct sl_state *st,
					      __u64 now)
{
	__u64 end = READ_ONCE(st->word);

	return end > now && end - now <= (__u64)r->block_ms * 1000000ULL;
}

/*
 * A key with SL_SB_BLOCKED whose word does not say it is blocked (sl_blocked_by_word): whether it
 * is, by its record's end, which the word then holds again. Past the end (or with the record gone:
 * it expired) the flag is cleared and the key is limited again, from the word it had when blocked
 * (the record's; a fresh one without it).
 */
__noinline int sl_still_blocked(const struct sl_pkt *p, const struct sl_rule *r, struct sl_state *st,
				__u64 now)
{
	struct sl_key6 k = {};
	struct sl_penalty *pen;

	if (!p || !r || !st)
		return 0;
	sl_wide_key(p, r, &k);
	pen = bpf_map_lookup_elem(&sl_penalty, &k);
	if (pen && pen->blocked_until > now) {
		WRITE_ONCE(st->word, pen->blocked_until);
		return 1;
	}
	WRITE_ONCE(st->word, pen && pen->epoch == st->epoch ? pen->pkt : 0);
	__sync_fetch_and_and(sl_meta(st), ~SL_META(SL_SB_BLOCKED));
	return 0;
}

/*
 * A key with no state (new, or evicted from the LRU): its entry in sl_penalty if it has one that
 * still says something, else NULL (an expired entry is deleted here). The filter sl_pen_bits
 * spares the lookup for the keys that never had an entry (almost all of them).
 */
static __always_inline struct sl_penalty *sl_penalty_of(const struct sl_key6 *k, __u64 now)
{
	struct sl_penalty *pen;
	__u64 bit, *w = sl_pen_bit(k, &bit);

	if (w && !(READ_ONCE(*w) & bit))
		return NULL;
	pen = bpf_map_lookup_elem(&sl_penalty, k);
	if (pen && pen->until <= now) {
		bpf_map_delete_elem(&sl_penalty, k);
		return NULL;
	}
	return pen;
}

/* Make the packet's key's state (BPF_NOEXIST): 0, or the error (the key exists, the map refused). */
static __always_inline long sl_insert_state(const struct sl_pkt *p, const struct sl_rule *r,
					    const struct sl_state *st)
{
	if (sl_key_is4(p, r)) {
		struct sl_key k = {};

		sl_key4_of(p, r, &k);
		return bpf_map_update_elem(&rate_limit_map, &k, st, BPF_NOEXIST);
	} else {
		struct sl_key6 k = {};

		sl_key6_of(p, r, &k);
		return bpf_map_update_elem(&rate_limit_map6, &k, st, BPF_NOEXIST);
	}
}

/*
 * A packet whose key has no state. Over this CPU's rate of new states, a new key of a rule with an
 * aggregate is not tracked; a key with a record in sl_penalty comes back as it left; else it gets
 * a fresh state. Returns an sl_verdict when the packet is decided here, SL_NK_TRACKED when its key
 * now has state (the caller looks it up and decides).
 */
__noinline int sl_new_key(const struct sl_pkt *p, const struct sl_rule *r, struct sl_rule_cpu *rc,
			  __u64 now, __u64 ag_next)
{
	struct sl_state fresh = {};
	struct sl_penalty *pen;
	struct sl_key6 wk = {};
	struct sl_derived *d;
	struct sl_config *cfg;
	__u64 pkts, bword = 0;
	__u16 bepoch = r ? r->epoch : 0;
	__u32 zero = 0;
	int untracked = 0, made = 0, inserted = 0;
	long err;

	if (!p || !r || !rc)
		return SL_V_PASS;
	cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg)
		return SL_V_PASS;
	d = &rc->d;
	pkts = p->segs ? p->segs : 1;
	fresh.epoch = r->epoch;
	if (d->has_agg && !sl_may_insert(cfg->new_states_per_sec, now)) {
		/* Over this CPU's rate of new states, a new key is not tracked: it is charged to the
		 * rule's budget for untracked keys (and the aggregate); past the budget it is
		 * dropped, whatever its record says (so no lookup). A rule without an aggregate
		 * tracks every key. */
		if (!sl_untracked(d, &rc->agg, now, pkts))
			return sl_over(p, cfg, r, rc, SL_R_UNTRACKED_OVER, now);
		untracked = 1;
	}
	sl_wide_key(p, r, &wk);
	pen = sl_penalty_of(&wk, now);
	if (pen) {
		/* Evicted while over its limit or blocked: it comes back as it left, whatever this
		 * CPU's rate of new states (such keys are few: they had to pass their limit). */
		fresh.word = pen->blocked_until > now ? pen->blocked_until : pen->pkt;
		fresh.epoch = pen->epoch;
		fresh.drops = SL_SB_PENALIZED | (pen->blocked_until > now ? SL_SB_BLOCKED : 0);
		bword = pen->byt;
		bepoch = pen->epoch;
	} else if (untracked) {
		rc->agg.tat = ag_next;
		sl_count_in(&rc->c, SL_R_UNTRACKED, SL_V_PASS, p->len);
		return SL_V_PASS;
	}
	err = sl_insert_state(p, r, &fresh);
	if (err == 0)
		inserted = 1;
	/* A packet and a byte limit: the byte word is an entry of its own. */
	if (d->has_pkt && d->has_byt && inserted) {
		sl_byte_state_of(p, r, 1, bword, bepoch, &made);
		if (made)
			rc->c.new_states += 1;
	}
	rc->c.new_states += inserted;
	if (!sl_state_of(p, r)) {
		if (pen && pen->blocked_until > now)
			return sl_over(p, cfg, r, rc, SL_R_BLOCKED, now);
		sl_count_in(&rc->c, SL_R_NOSTATE, SL_V_PASS, p->len);
		return SL_V_PASS;
	}
	return SL_NK_TRACKED;
}

/*
 * The byte entry (SL_KF_BYTES) of a key with a packet and a byte limit: looked up, or when it is
 * missing (evicted apart from its packet entry) made again, as its record in sl_penalty left it,
 * or fresh. NULL when it could not be made.
 */
static __always_inline struct sl_state *sl_byte_entry(const struct sl_pkt *p, const struct sl_rule *r,
						      struct sl_rule_cpu *rc, struct sl_state *sa,
						      __u64 now)
{
	struct sl_state *sb;
	int made = 0;

	sb = sl_byte_state_of(p, r, 0, 0, 0, &made);
	if (!sb) {
		struct sl_key6 wk = {};
		struct sl_penalty *pen;
		__u64 word = 0;

		sl_wide_key(p, r, &wk);
		pen = sl_penalty_of(&wk, now);
		if (pen && pen->epoch == sa->epoch)
			word = pen->byt;
		sb = sl_byte_state_of(p, r, 1, word, sa->epoch, &made);
		if (made)
			rc->c.new_states += 1;
		if (!sb)
			return NULL;
	}
	if (sb->epoch != (__u16)r->epoch) {
		sb->word = 0;
		sb->epoch = r->epoch;
	}
	return sb;
}

/*
 * The charge of a key under a byte limit (with a packet limit, its byte word is the key's
 * SL_KF_BYTES entry). Returns what sl_charge1 returns, or SL_NOSTATE when the byte entry could not
 * be made.
 */
__noinline int sl_charge_bytes(const struct sl_pkt *p, const struct sl_rule *r, struct sl_rule_cpu *rc,
			       struct sl_state *sa, __u64 now)
{
	struct sl_state *sb = NULL;
	struct sl_derived *d;

	if (!p || !r || !rc || !sa)
		return 1;
	d = &rc->d;
	if (!d->has_pkt && !d->has_byt)
		return 1;
	if (d->has_pkt && d->has_byt) {
		sb = sl_byte_entry(p, r, rc, sa, now);
		if (!sb)
			return SL_NOSTATE;
	}
	return sl_charge_d(sa, sb, d, now, p->segs ? p->segs : 1, p->len);
}

/* The charge of a per-rule bucket with a lease (d->lease_pkt: a packet limit). Verified once. */
__noinline int sl_charge_leased(const struct sl_pkt *p, const struct sl_rule *r, struct sl_rule_cpu *rc,
				struct sl_state *sa, __u64 now)
{
	struct sl_state *sb = NULL;

	if (!p || !r || !rc || !sa)
		return 1;
	if (rc->d.has_byt) {
		sb = sl_byte_entry(p, r, rc, sa, now);
		if (!sb)
			return SL_NOSTATE;
	}
	return sl_lease_charge(sa, sb, rc, r, now, p->segs ? p->segs : 1, p->len);
}

/* What sl_global returns: the key is past this node's grant; no live grant, the rule's own limit decides. */
#define SL_GLOBAL_OVER (-3)
#define SL_GLOBAL_LOCAL (-4)

/*
 * A packet of a key of a global rule (SL_RF_GLOBAL). Its candidate entry (sl_fleet_cand, made on
 * its first packet) counts what it meets and what passes; a live grant (sl_fleet_grant: the share
 * of the fleet's limit the agent got for this node) decides alone: 1 (passed and counted) or
 * SL_GLOBAL_OVER. Without one (a key the agent has not seen yet, the fleet unreachable, the agent
 * gone) it answers SL_GLOBAL_LOCAL: the rule's own limit decides (its local: fallback), and a pass
 * is counted by sl_fleet_used. Verified once; only global rules reach it.
 */
__noinline int sl_global(const struct sl_pkt *p, const struct sl_rule *r, __u64 now)
{
	struct sl_fleet_cand fresh = {}, *c;
	struct sl_fleet_grant *g;
	struct sl_key6 k = {};
	__u64 pkts;

	if (!p || !r)
		return SL_GLOBAL_LOCAL;
	pkts = p->segs ? p->segs : 1;
	sl_wide_key(p, r, &k);
	c = bpf_map_lookup_elem(&sl_fleet_cand, &k);
	if (!c) {
		bpf_map_update_elem(&sl_fleet_cand, &k, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&sl_fleet_cand, &k);
		if (!c)
			return SL_GLOBAL_LOCAL;
	}
	__sync_fetch_and_add(&c->seen, pkts);
	g = bpf_map_lookup_elem(&sl_fleet_grant, &k);
	if (!g || now >= READ_ONCE(g->until))
		return SL_GLOBAL_LOCAL;
	if (READ_ONCE(c->used) + pkts > READ_ONCE(g->cap))
		return SL_GLOBAL_OVER;
	__sync_fetch_and_add(&c->used, pkts);
	return 1;
}

/* A packet of a global rule's key that its local fallback passed: counted in its candidate entry. */
__noinline int sl_fleet_used(const struct sl_pkt *p, const struct sl_rule *r)
{
	struct sl_fleet_cand *c;
	struct sl_key6 k = {};

	if (!p || !r)
		return 0;
	sl_wide_key(p, r, &k);
	c = bpf_map_lookup_elem(&sl_fleet_cand, &k);
	if (c)
		__sync_fetch_and_add(&c->used, p->segs ? p->segs : 1);
	return 0;
}

/*
 * Limit, act and count one classified packet. Returns an sl_verdict. Inline: the path of a key
 * with state under a packet limit calls nothing but the helpers (the clock, the state's lookup).
 */
static __always_inline int sl_enforce(struct sl_pkt *p, const struct sl_rule *r,
				      const struct sl_config *cfg)
{
	struct sl_rule_cpu *rc;
	struct sl_derived *d;
	struct sl_state *st;
	__u32 id = r->id;
	__u64 now, pkts, ag_next = 0;
	__u16 seen;
	int allow, granted = 0;

	rc = bpf_map_lookup_elem(&stats_map, &id);
	if (!rc)
		return SL_V_PASS;
	d = &rc->d;
	if (d->version != r->version || !d->valid)
		sl_derive(r, d);
	now = sl_now(d->coarse);
	pkts = p->segs ? p->segs : 1;

	/* A flood of new sources passes every per-key check; the aggregate holds it. */
	if (d->has_agg && !sl_aggregate(r, d, &rc->agg, now, pkts, &ag_next))
		return sl_over(p, cfg, r, rc, SL_R_AGGREGATE, now);

#ifdef SLUICE_TEST
	sl_salt_key(p, r);
#endif
	st = sl_state_of(p, r);
	if (!st) {
		int v = sl_new_key(p, r, rc, now, ag_next);

		if (v != SL_NK_TRACKED)
			return v;
		st = sl_state_of(p, r);
		if (!st) {
			sl_count_in(&rc->c, SL_R_NOSTATE, SL_V_PASS, p->len);
			return SL_V_PASS;
		}
	}
	if (st->epoch != (__u16)r->epoch) {
		/* Written under another algorithm, window or scale: start this key afresh. */
		st->word = 0;
		st->epoch = r->epoch;
	}
	/* Written only when it moves (every 16.8 ms at most): a store on every packet would pull the
	 * state's cache line away from the other CPUs. */
	seen = now >> SL_SEEN_SHIFT;
	if (st->seen != seen)
		st->seen = seen;

	if ((READ_ONCE(st->drops) & SL_SB_BLOCKED) &&
	    (sl_blocked_by_word(r, st, now) || sl_still_blocked(p, r, st, now)))
		return sl_over(p, cfg, r, rc, SL_R_BLOCKED, now);

	/* A global rule: its grant decides, or (SL_GLOBAL_LOCAL) its own limit, as any rule's. */
	if ((r->flags & SL_RF_GLOBAL) && (allow = sl_global(p, r, now)) != SL_GLOBAL_LOCAL)
		granted = 1;
	else if (d->simple)
		allow = sl_charge1(&st->word, now, pkts, &d->pkt);
	else if (d->lease_pkt)
		allow = sl_charge_leased(p, r, rc, st, now);
	else
		allow = sl_charge_bytes(p, r, rc, st, now);
	if (allow > 0) {
		if (d->has_agg)
			rc->agg.tat = ag_next;
		if ((r->flags & SL_RF_GLOBAL) && !granted)
			sl_fleet_used(p, r);
		if (READ_ONCE(st->drops) & SL_SB_PENALIZED)
			__sync_fetch_and_and(sl_meta(st), ~SL_META(SL_SB_PENALIZED));
		sl_count_in(&rc->c, SL_R_PASS, SL_V_PASS, p->len);
		return SL_V_PASS;
	}
	if (allow == SL_NOSTATE) {
		sl_count_in(&rc->c, SL_R_NOSTATE, SL_V_PASS, p->len);
		return SL_V_PASS;
	}
	if (allow == SL_GLOBAL_OVER)
		return sl_over(p, cfg, r, rc, SL_R_GLOBAL, now);
	if (allow < 0)
		return sl_over(p, cfg, r, rc, SL_R_CONTENDED, now);
	if (r->action == SL_ACT_DRYRUN)
		return sl_over(p, cfg, r, rc, SL_R_LIMIT, now);
	if (READ_ONCE(st->drops) < SL_DROPS_SAT)
		__sync_fetch_and_add(sl_meta(st), SL_META(SL_SB_DROP_ONE));
	if (r->action == SL_ACT_BLOCK)
		sl_block(p, r, st, d, now);
	else if (!(READ_ONCE(st->drops) & SL_SB_PENALIZED))
		sl_penalize(p, r, st, d, now);
	return sl_over(p, cfg, r, rc, SL_R_LIMIT, now);
}

/* The datagram a fragment belongs to. */
static __always_inline void sl_frag_key_of(const struct sl_pkt *p, struct sl_frag_key *k)
{
	k->family = p->family;
	k->proto = p->proto;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->id = p->frag_id;
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
}

/* A later fragment: the slot its datagram's first fragment was decided by, or -1 (not recorded). */
__noinline int sl_frag_slot(const struct sl_pkt *p, __u32 version)
{
	struct sl_frag_key fk;
	struct sl_frag_val *fv;

	if (!p)
		return -1;
	sl_frag_key_of(p, &fk);
	fv = bpf_map_lookup_elem(&sl_frags, &fk);
	if (fv && fv->version == version && fv->slot < max_rules)
		return fv->slot;
	return -1;
}

/* A first fragment: record the slot that decides its datagram. */
__noinline int sl_frag_note(const struct sl_pkt *p, __u32 version, __u32 slot)
{
	struct sl_frag_key fk;
	struct sl_frag_val fv = { .version = version, .slot = slot };

	if (!p)
		return 0;
	sl_frag_key_of(p, &fk);
	bpf_map_update_elem(&sl_frags, &fk, &fv, BPF_ANY);
	return 0;
}

/* Count a verdict decided before classification (global slot), with its event when a drop. */
__noinline int sl_global_verdict(const struct sl_pkt *p, const struct sl_config *cfg, __u32 reason,
				 __u32 v)
{
	if (!p)
		return SL_V_PASS;
	sl_count(max_rules, reason, v, p->len);
	if (v == SL_V_DROP)
		sl_event(p, cfg, max_rules, reason, v, bpf_ktime_get_coarse_ns());
	return v;
}

/*
 * The lists (when the half has entries): the verdict of the list the remote address is in
 * (management, deny, allow, in that order), or -1 when it is in none.
 */
__noinline int sl_listed(const struct sl_pkt *p, const struct sl_config *cfg, __u32 half)
{
	struct sl_lpm_key lk;
	struct sl_list_val *lv;

	if (!p)
		return -1;
	sl_lpm_key_of(p, half, sl_remote(p), &lk);
	lv = bpf_map_lookup_elem(&sl_lists, &lk);
	if (!lv)
		return -1;
	if (lv->flags & SL_LIST_MGMT)
		return sl_global_verdict(p, cfg, SL_R_MGMT, SL_V_PASS);
	if (lv->flags & SL_LIST_DENY)
		return sl_global_verdict(p, cfg, SL_R_DENYLIST, SL_V_DROP);
	if (lv->flags & SL_LIST_ALLOW)
		return sl_global_verdict(p, cfg, SL_R_ALLOWLIST, SL_V_PASS);
	return -1;
}

/*
 * sl_decide's answer for a rule whose packets go to a plugged program: this | the plugin's slot |
 * the half (SL_PLUGIN_HALF) | the rule's slot << 16.
 */
#define SL_PLUGIN_CALL 0x100
#define SL_PLUGIN_HALF 0x200

/*
 * Everything after parsing, independent of the hook. Returns an sl_verdict, or SL_PLUGIN_CALL |
 * slot when plugins is set and the rule hands its packets to a plugged program (the caller then
 * tail-calls it, and decides again with plugins clear if the slot is empty; that second pass counts
 * none of the counted-only reasons the first one counted).
 */
static __always_inline int sl_decide(struct sl_pkt *p, int plugins)
{
	__u32 zero = 0, slot = 0, idx, version, half;
	struct sl_config *cfg;
	struct sl_half *h;
	struct sl_rule *rp;

	cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg)
		return SL_V_PASS;
	/* One read of the version: rules, lists and the malformed verdict all come from its half. */
	version = cfg->version;
	half = version & 1;
	if (p->family && !(p->reason | p->unknown | p->frag | p->note)) {
		/* The default rule alone in its half (SL_RF_ALONE): a readable, well-formed packet is
		 * its own, without the half's header (lists, CIDR and GeoIP entries: none). */
		idx = half * max_rules;
		rp = bpf_map_lookup_elem(&sl_rules, &idx);
		if (rp && (rp->flags & SL_RF_ALONE) && rp->version == version) {
			p->tier = SL_TIER_DEFAULT;
			goto rule;
		}
	}
	h = bpf_map_lookup_elem(&sl_policy, &half);
	if (!h)
		return SL_V_PASS;
	if (!p->family) {
		/* No source to charge: the configured verdict for malformed frames, or non-IP. */
		if (!p->reason)
			return sl_global_verdict(p, cfg, SL_R_NON_IP, SL_V_PASS);
		return sl_global_verdict(p, cfg, p->reason, h->malformed_drop ? SL_V_DROP : SL_V_PASS);
	}
	if (h->n_lists) {
		int v = sl_listed(p, cfg, half);

		if (v >= 0)
			return v;
	}
	if (p->reason) {
		/* Malformed, with a readable source: dropped when so configured, else charged to
		 * the strictest rule the source could have (never exempt because unusual). */
		if (p->reason == SL_R_TINY_FRAG || h->malformed_drop)
			return sl_global_verdict(p, cfg, p->reason, SL_V_DROP);
		if (plugins)
			sl_count_event(p->reason, p->len);
		p->unknown |= SL_UNK_L4;
	}
	if (p->note && plugins)
		sl_count_event(p->note, p->len);

	if (p->frag == SL_FRAG_LATER) {
		/* Decided where its datagram's first fragment was; without it, by the strictest rule. */
		int s = sl_frag_slot(p, version);

		if (s >= 0) {
			slot = s;
			p->tier = SL_TIER_DEFAULT;
			goto classified;
		}
		if (plugins)
			sl_count_event(SL_R_FRAG_ORPHAN, p->len);
	}
	if (p->unknown && plugins)
		sl_count_event(SL_R_UNCERTAIN, p->len);
	if (h->n_geo || h->n_cidr || h->any.n) {
		slot = sl_classify(p, version);
	} else {
		/* Only the default rule: what sl_classify would find, without the call. */
		p->tier = SL_TIER_DEFAULT;
		if (h->any.version != version)
			sl_count_event(SL_R_STALE, 0);
	}
	if (p->frag == SL_FRAG_FIRST)
		sl_frag_note(p, version, slot);
classified:
	idx = half * max_rules + slot;
	rp = bpf_map_lookup_elem(&sl_rules, &idx);
	if (!rp)
		return SL_V_PASS;
	/* Read in place: the live half is never written (a policy is written into the idle half,
	 * after every packet that could still read it has finished). */
	if (rp->version != version)
		sl_count_event(SL_R_STALE, 0);
rule:
	if (!((rp->dir ? rp->dir : SL_DIR_INGRESS) & p->dir))
		/* Only the default rule gets here unmatched (candidates are matched on direction). */
		return sl_global_verdict(p, cfg, SL_R_UNMATCHED, SL_V_PASS);
	if (rp->plugin && plugins) {
		sl_count(rp->id, SL_R_PLUGIN, SL_V_PASS, p->len);
		return SL_PLUGIN_CALL | ((rp->plugin - 1) & (SL_PLUGIN_SLOTS - 1)) |
		       (half ? SL_PLUGIN_HALF : 0) | (slot & 0x7fff) << 16;
	}
	return sl_enforce(p, rp, cfg);
}

/*
 * A packet whose rule's plugin slot was empty (v: what sl_decide answered): its PLUGIN count is
 * taken back (same CPU, so exact) and the built-in limiter decides, by the rule the first pass
 * found (its half is still the one being read: a policy change waits for every packet that could
 * read it before writing it). A function of its own, so that the entry points carry one copy of
 * the fast path.
 */
__noinline int sl_plugin_missed(struct sl_pkt *p, __u32 v)
{
	__u32 zero = 0, idx = ((v & SL_PLUGIN_HALF) ? max_rules : 0) + ((v >> 16) & 0x7fff), id;
	struct sl_config *cfg;
	struct sl_rule_cpu *rc;
	struct sl_rule *rp;

	if (!p)
		return SL_V_PASS;
	cfg = bpf_map_lookup_elem(&config_map, &zero);
	rp = bpf_map_lookup_elem(&sl_rules, &idx);
	if (!cfg || !rp)
		return SL_V_PASS;
	id = rp->id;
	rc = bpf_map_lookup_elem(&stats_map, &id);
	if (rc) {
		rc->c.packets[SL_V_PASS] -= 1;
		rc->c.bytes[SL_V_PASS] -= p->len;
		rc->c.reason_packets[SL_R_PLUGIN] -= 1;
		rc->c.reason_bytes[SL_R_PLUGIN] -= p->len;
	}
	return sl_enforce(p, rp, cfg);
}

SL_DEFINE_WALK6(sl_walk6_xdp, struct xdp_md)
SL_DEFINE_WALK6(sl_walk6_skb, struct __sk_buff)

/* Parse an XDP frame; the IPv6 extension walk is a function of its own (verified once). */
static __always_inline void sl_parse_xdp(struct xdp_md *ctx, struct sl_pkt *p)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct sl_walk6 w = {};

	p->len = end - data;
	if (sl_parse(data, end, p->len, 0, p, &w)) {
		sl_walk6_xdp(ctx, &w);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		sl_parse_ipv6_tail(data, end, &w, p);
	}
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
		v = sl_plugin_missed(&p, v);
	}
	return v == SL_V_DROP ? XDP_DROP : XDP_PASS;
}

/*
 * tc: parse the headers in the skb's linear data, where the stack puts them for what it sends, and
 * check lengths against skb->len (a GSO or non-linear skb holds more than its linear part). A GSO
 * packet stands for gso_segs packets on the wire, each with its own copy of the headers: it is
 * charged as all of them. Returns 1 when a header may lie past the linear data: the caller pulls
 * it in and parses again (rare; a pull may copy a cloned skb, which is why it is not done for
 * every packet).
 */
__noinline int sl_parse_skb(struct __sk_buff *skb, struct sl_pkt *p)
{
	struct sl_walk6 w = {};
	__u32 segs, wire;
	int big;

	if (!p)
		return 0;
	wire = skb->len;
	segs = skb->gso_segs;
	big = segs > 1;
	if (sl_parse((void *)(long)skb->data, (void *)(long)skb->data_end, wire, big, p, &w)) {
		sl_walk6_skb(skb, &w);
		sl_parse_ipv6_tail((void *)(long)skb->data, (void *)(long)skb->data_end, &w, p);
	}
	p->segs = big ? (segs < 0xffff ? segs : 0xffff) : 1;
	p->len = wire + (p->segs - 1) * p->hdr_len;
	/* A later fragment has no L4 header to pull: its unknown ports are not for want of data. */
	return (p->reason == SL_R_TRUNCATED || p->reason == SL_R_TINY_FRAG || p->note ||
		(p->unknown && p->frag != SL_FRAG_LATER)) &&
	       skb->data_end - skb->data < wire;
}

/* Egress at tc clsact. Passing returns TC_ACT_UNSPEC so that other tools' filters still run. */
SEC("tc")
int sluice_egress(struct __sk_buff *skb)
{
	struct sl_pkt p = { .segs = 1, .dir = SL_DIR_EGRESS };
	int v;

	if (sl_parse_skb(skb, &p)) {
		__builtin_memset(&p, 0, sizeof(p));
		p.segs = 1;
		p.dir = SL_DIR_EGRESS;
		bpf_skb_pull_data(skb, skb->len < 512 ? skb->len : 512);
		sl_parse_skb(skb, &p);
	}
	v = sl_decide(&p, 1);
	if (v & SL_PLUGIN_CALL) {
		bpf_tail_call(skb, &sl_plugins_tc, v & (SL_PLUGIN_SLOTS - 1));
		v = sl_plugin_missed(&p, v);
	}
	return v == SL_V_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
