/* SPDX-License-Identifier: GPL-2.0 */
/*
 * classify.h - lists and rules: which rule decides a packet.
 */
#ifndef SLUICE_CLASSIFY_H
#define SLUICE_CLASSIFY_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"
#include "parse.h"
#include "maps.h"
#include "count.h"
/*
 * The key of an LPM lookup (sl_lists, sl_cidr, sl_geo) for one of the packet's addresses, at full
 * length: the trie returns the longest prefix that covers it.
 */
static __always_inline void sl_lpm_key_of(const struct sl_pkt *p, __u32 half, const __u8 *addr,
					  struct sl_lpm_key *k)
{
	k->prefixlen = 32 + (p->family == 4 ? 32 : 128);
	k->half = half;
	k->family = p->family;
	k->pad[0] = 0;
	k->pad[1] = 0;
	__builtin_memcpy(k->addr, addr, 16);
}

/*
 * The other end of the packet: its source at ingress, its destination at egress (where the source
 * is this host). Lists and GeoIP tiers are about who the host talks to, so they look at this.
 */
static __always_inline const __u8 *sl_remote(const struct sl_pkt *p)
{
	return p->dir == SL_DIR_EGRESS ? p->dst : p->src;
}

/* A rule's rank for a packet whose match fields are not all known: lower is stricter. */
static __always_inline __u64 sl_rank(const struct sl_rule *r, const struct sl_pkt *p)
{
	/* A rule not for this direction (only the default rule is left unmatched so) passes the
	 * packet unlimited: the laxest of all. */
	if (!((r->dir ? r->dir : SL_DIR_INGRESS) & p->dir))
		return 1ULL << 32;
	return r->strict_rank ? r->strict_rank : 0xffffffffULL;
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
	/* A field the packet leaves unknown could be anything: such a rule could match. */
	if (r->proto && !(p->unknown & SL_UNK_PROTO) && r->proto != p->proto)
		return 0;
	if (r->tier && r->tier != p->tier)
		return 0;
	if (r->dst_family && (r->dst_family != p->family || !sl_in_prefix(p->dst, r->dst_addr, r->dst_plen)))
		return 0;
	if (p->unknown & SL_UNK_L4)
		return 1;
	/* A port range matches only a protocol with ports: ICMP's type/code in dport is no port. */
	if ((r->dport_lo || r->dport_hi) &&
	    (!sl_has_ports(p->proto) || p->dport < r->dport_lo || p->dport > r->dport_hi))
		return 0;
	if ((r->flags & SL_RF_MATCH_SYN) &&
	    (p->proto != IPPROTO_TCP || (p->tcp_flags & (SL_TCP_SYN | SL_TCP_ACK)) != SL_TCP_SYN))
		return 0;
	return 1;
}

/*
 * Classify: the LPM trie on the source gives the ordered candidates for its prefix (compiled in
 * user space: the prefix's own rules and those inherited from shorter ones); without a hit, or
 * with no CIDR rules at all, the half's "any" list. The first candidate whose other match
 * fields fit decides; none means slot 0, the default rule. Returns the slot.
 *
 * A packet with unknown match fields (p->unknown) could be the first match of any candidate that
 * fits what is known, or of none (the default rule): of all of those, the strictest decides
 * (sl_rule.strict_rank), so that hiding the ports or the protocol never buys a laxer rule.
 */
__noinline int sl_classify(struct sl_pkt *p, __u32 version)
{
	__u32 half = version & 1, i, n, idx, best = 0;
	struct sl_half *h = bpf_map_lookup_elem(&sl_policy, &half);
	__u64 best_rank = ~0ULL;
	struct sl_cands *c;
	struct sl_rule *r;

	if (!p || !h)
		return 0;
	p->tier = SL_TIER_DEFAULT;
	if (h->n_geo) {
		struct sl_lpm_key gk;
		struct sl_geo_val *g;

		sl_lpm_key_of(p, half, sl_remote(p), &gk);
		g = bpf_map_lookup_elem(&sl_geo, &gk);
		if (g && g->version == h->geo_version)
			p->tier = g->tier;
		else if (g)
			sl_count_event(SL_R_STALE, 0);
	}
	c = &h->any;
	if (h->n_cidr) {
		struct sl_lpm_key lk;
		struct sl_cands *hit;

		sl_lpm_key_of(p, half, p->src, &lk);
		hit = bpf_map_lookup_elem(&sl_cidr, &lk);
		if (hit)
			c = hit;
	}
	if (c->version != version) {
		sl_count_event(SL_R_STALE, 0);
		return 0;
	}
	n = c->n;
	for (i = 0; i < SL_MAX_CANDS; i++) {
		__u32 slot;
		__u64 rank;

		if (i >= n)
			break;
		slot = c->slot[i];
		idx = half * max_rules + slot;
		r = bpf_map_lookup_elem(&sl_rules, &idx);
		if (!r || slot >= max_rules || !sl_rule_matches(r, p))
			continue;
		if (!p->unknown)
			return slot;
		rank = sl_rank(r, p);
		if (rank < best_rank) {
			best_rank = rank;
			best = slot;
		}
	}
	if (!p->unknown || best_rank == ~0ULL)
		return 0;
	/* The default rule decides only if it is stricter than every candidate: at equal rank, the
	 * first candidate that could match keeps the packet with its source's other traffic. */
	idx = half * max_rules;
	r = bpf_map_lookup_elem(&sl_rules, &idx);
	if (r && sl_rank(r, p) < best_rank)
		return 0;
	return best;
}

#endif /* SLUICE_CLASSIFY_H */
