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
		struct sl_lpm_key lk;
		struct sl_list_val *lv;

		sl_lpm_key_of(p, 0, &lk);
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
