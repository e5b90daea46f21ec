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

/*
 * A packet its rule would drop for `reason`: dropped, or in dry-run passed and counted as a
 * would-drop (DRYRUN), whatever the reason, so that trying a policy never drops a packet.
 */
static __always_inline int sl_over(const struct sl_pkt *p, const struct sl_rule *r, __u32 reason,
				   __u32 new_state, __u64 now)
{
	__u32 id = r->id;

	if (r->action == SL_ACT_DRYRUN) {
		sl_count(id, SL_R_DRYRUN, SL_V_PASS, p->len, new_state);
		sl_event(p, id, SL_R_DRYRUN, SL_V_PASS, now);
		return SL_V_PASS;
	}
	sl_count(id, reason, SL_V_DROP, p->len, new_state);
	sl_event(p, id, reason, SL_V_DROP, now);
	return SL_V_DROP;
}

/* The bit of sl_pen_bits that stands for key k (a multiplicative hash of its 24 bytes). */
static __always_inline __u64 *sl_pen_bit(const struct sl_key *k, __u64 *bit)
{
	__u64 a, b, c, h;
	__u32 word;

	__builtin_memcpy(&a, k, 8);
	__builtin_memcpy(&b, (const __u8 *)k + 8, 8);
	__builtin_memcpy(&c, (const __u8 *)k + 16, 8);
	h = (a ^ (b << 21 | b >> 43) ^ (c << 42 | c >> 22)) * 0x9e3779b97f4a7c15ULL;
	h >>= 64 - SL_PEN_BITS_LOG2;
	word = h >> 6;
	*bit = 1ULL << (h & 63);
	return bpf_map_lookup_elem(&sl_pen_bits, &word);
}

/*
 * Record a key's state in sl_penalty as of a drop by its limit (or the start of a block), once
 * per pass: the entry then says everything the state says until the key passes again. `until` is
 * when a fresh state would be as strict: the token and GCRA words are that time; a window's count
 * matters until the window after the next has begun.
 */
__noinline int sl_penalize(const struct sl_key *k, struct sl_state *st, const struct sl_derived *d,
			   __u64 now)
{
	struct sl_penalty pen = {};
	__u64 until = now, bit, *w;
	__u32 alg;

	if (!k || !st || !d)
		return 0;
	alg = d->pkt.alg;
	pen.pkt = READ_ONCE(st->pkt);
	pen.byt = READ_ONCE(st->byt);
	pen.blocked_until = READ_ONCE(st->blocked_until);
	pen.epoch = st->epoch;
	pen.alg = st->alg;
	if (alg == SL_ALG_TOKEN || alg == SL_ALG_GCRA) {
		if (d->has_pkt && pen.pkt > until)
			until = pen.pkt;
		if (d->has_byt && pen.byt > until)
			until = pen.byt;
	} else {
		until = now + 2 * (d->has_pkt ? d->pkt.window_ns : d->byt.window_ns);
	}
	pen.until = until > pen.blocked_until ? until : pen.blocked_until;
	if (bpf_map_update_elem(&sl_penalty, k, &pen, BPF_ANY)) {
		sl_count_event(SL_R_PENALTY_FULL, 0);
		return 0;
	}
	/* After the entry: a CPU that sees the bit finds the entry. */
	w = sl_pen_bit(k, &bit);
	if (w && !(READ_ONCE(*w) & bit))
		__sync_fetch_and_or(w, bit);
	st->penalized = 1;
	return 0;
}

/*
 * A key with no state (new, or evicted from the LRU): its entry in sl_penalty if it has one that
 * still says something, else NULL (an expired entry is deleted here). The filter sl_pen_bits
 * spares the lookup for the keys that never had an entry (almost all of them).
 */
static __always_inline struct sl_penalty *sl_penalty_of(const struct sl_key *k, __u64 now)
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
	if (ag && !sl_aggregate(r, d, ag, now, pkts, &ag_next))
		return sl_over(p, r, SL_R_AGGREGATE, 0, now);

	sl_make_key(p, r, &key);
	st = bpf_map_lookup_elem(&rate_limit_map, &key);
	if (!st) {
		struct sl_state fresh = { .epoch = r->epoch, .alg = alg };
		struct sl_penalty *pen = NULL;
		int untracked = 0;
		long err;

		if (ag && !sl_may_insert(new_per_sec, now)) {
			/* Over this CPU's rate of new states, a new key is not tracked: it is charged
			 * to the rule's budget for untracked keys (and the aggregate); past the budget
			 * it is dropped, whatever its record says (so no lookup). A rule without an
			 * aggregate tracks every key. */
			if (!sl_untracked(d, ag, now, pkts))
				return sl_over(p, r, SL_R_UNTRACKED_OVER, 0, now);
			untracked = 1;
		}
		pen = sl_penalty_of(&key, now);
		if (pen) {
			/* Evicted while over its limit or blocked: it comes back as it left, whatever
			 * this CPU's rate of new states (such keys are few: they had to pass their
			 * limit). */
			fresh.pkt = pen->pkt;
			fresh.byt = pen->byt;
			fresh.blocked_until = pen->blocked_until;
			fresh.epoch = pen->epoch;
			fresh.alg = pen->alg;
			fresh.penalized = 1;
		} else if (untracked) {
			ag->tat = ag_next;
			sl_count(id, SL_R_UNTRACKED, SL_V_PASS, p->len, 0);
			return SL_V_PASS;
		}
		err = bpf_map_update_elem(&rate_limit_map, &key, &fresh, BPF_NOEXIST);
		if (err == 0)
			new_state = 1;
		st = bpf_map_lookup_elem(&rate_limit_map, &key);
		if (!st) {
			if (pen && pen->blocked_until > now)
				return sl_over(p, r, SL_R_BLOCKED, 0, now);
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

	if (READ_ONCE(st->blocked_until) > now)
		return sl_over(p, r, SL_R_BLOCKED, new_state, now);

	if (d->lease_pkt)
		allow = sl_leased(st, &tick, p, d, r);
	else
		allow = sl_charge(st, &tick, pkts, p->len, &d->pkt, &d->byt, d->has_pkt, d->has_byt);
	if (allow > 0) {
		if (ag)
			ag->tat = ag_next;
		if (st->penalized)
			st->penalized = 0;
		sl_count(id, SL_R_PASS, SL_V_PASS, p->len, new_state);
		return SL_V_PASS;
	}
	if (allow < 0)
		return sl_over(p, r, SL_R_CONTENDED, new_state, now);
	if (r->action == SL_ACT_DRYRUN)
		return sl_over(p, r, SL_R_LIMIT, new_state, now);
	__sync_fetch_and_add(&st->dropped, 1);
	if (r->action == SL_ACT_BLOCK) {
		WRITE_ONCE(st->blocked_until, now + (__u64)r->block_ms * 1000000ULL);
		sl_penalize(&key, st, d, now);
	} else if (!st->penalized) {
		sl_penalize(&key, st, d, now);
	}
	return sl_over(p, r, SL_R_LIMIT, new_state, now);
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

/* sl_decide's answer for a rule whose packets go to a plugged program: this | slot | rule id << 16. */
#define SL_PLUGIN_CALL 0x100

/*
 * Everything after parsing, independent of the hook. Returns an sl_verdict, or SL_PLUGIN_CALL |
 * slot when plugins is set and the rule hands its packets to a plugged program (the caller then
 * tail-calls it, and decides again with plugins clear if the slot is empty; that second pass counts
 * none of the counted-only reasons the first one counted).
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
	/* One read of the version: rules, lists and the malformed verdict all come from its half. */
	version = cfg->version;
	half = version & 1;
	h = bpf_map_lookup_elem(&sl_policy, &half);
	if (!h)
		return SL_V_PASS;
	if (!p->family) {
		/* No source to charge: the configured verdict for malformed frames, or non-IP. */
		__u32 v = p->reason && h->malformed_drop ? SL_V_DROP : SL_V_PASS;

		if (!p->reason) {
			sl_count(max_rules, SL_R_NON_IP, SL_V_PASS, p->len, 0);
			return SL_V_PASS;
		}
		sl_count(max_rules, p->reason, v, p->len, 0);
		if (v == SL_V_DROP)
			sl_event(p, max_rules, p->reason, v, bpf_ktime_get_coarse_ns());
		return v;
	}
	if (h->n_lists) {
		struct sl_lpm_key lk;
		struct sl_list_val *lv;

		sl_lpm_key_of(p, half, sl_remote(p), &lk);
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
	if (p->reason) {
		/* Malformed, with a readable source: dropped when so configured, else charged to
		 * the strictest rule the source could have (never exempt because unusual). */
		if (p->reason == SL_R_TINY_FRAG || h->malformed_drop) {
			sl_count(max_rules, p->reason, SL_V_DROP, p->len, 0);
			sl_event(p, max_rules, p->reason, SL_V_DROP, bpf_ktime_get_coarse_ns());
			return SL_V_DROP;
		}
		if (plugins)
			sl_count_event(p->reason, p->len);
		p->unknown |= SL_UNK_L4;
	}
	if (p->note && plugins)
		sl_count_event(p->note, p->len);

	if (p->frag == SL_FRAG_LATER) {
		/* Decided where its datagram's first fragment was; without it, by the strictest rule. */
		struct sl_frag_key fk;
		struct sl_frag_val *fv;

		sl_frag_key_of(p, &fk);
		fv = bpf_map_lookup_elem(&sl_frags, &fk);
		if (fv && fv->version == version && fv->slot < max_rules) {
			slot = fv->slot;
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
	if (p->frag == SL_FRAG_FIRST) {
		struct sl_frag_key fk;
		struct sl_frag_val fv = { .version = version, .slot = slot };

		sl_frag_key_of(p, &fk);
		bpf_map_update_elem(&sl_frags, &fk, &fv, BPF_ANY);
	}
classified:
	idx = half * max_rules + slot;
	rp = bpf_map_lookup_elem(&sl_rules, &idx);
	if (!rp)
		return SL_V_PASS;
	/* Read in place: the live half is never written (a policy is written into the idle half,
	 * after every packet that could still read it has finished). */
	if (rp->version != version)
		sl_count_event(SL_R_STALE, 0);
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

SL_DEFINE_WALK6(sl_walk6_xdp, struct xdp_md)
SL_DEFINE_WALK6(sl_walk6_skb, struct __sk_buff)

/* Parse in a function of its own: the walk is verified once, not in every caller's context. */
__noinline int sl_parse_xdp(struct xdp_md *ctx, struct sl_pkt *p)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct sl_walk6 w = {};

	if (!p)
		return 0;
	p->len = end - data;
	if (sl_parse(data, end, p->len, 0, p, &w)) {
		sl_walk6_xdp(ctx, &w);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		sl_parse_ipv6_tail(data, end, &w, p);
	}
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
		sl_plugin_missed((v >> 16) & 0x7fff, p.len);
		v = sl_decide(&p, 0);
	}
	return v == SL_V_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
