/* SPDX-License-Identifier: GPL-2.0 */
/*
 * key.h - the state key of a packet: the rule id and the source (or destination) masked to the
 * rule's key prefix, or nothing for a per-rule bucket. IPv4 keys and per-rule buckets are 8 bytes
 * (rate_limit_map), IPv6 keys 20 (rate_limit_map6); sl_penalty takes either in the wide form.
 */
#ifndef SLUICE_KEY_H
#define SLUICE_KEY_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"
#include "parse.h"
#include "maps.h"

/* Whether the rule's keys live in rate_limit_map (IPv4, or one bucket for the rule). */
static __always_inline int sl_key_is4(const struct sl_pkt *p, const struct sl_rule *r)
{
	return (r->flags & SL_RF_PER_RULE) || p->family == 4;
}

/* The address a rule keys by: the source, or the destination (SL_RF_KEY_DST). */
static __always_inline const __u8 *sl_key_addr(const struct sl_pkt *p, const struct sl_rule *r)
{
	return (r->flags & SL_RF_KEY_DST) ? p->dst : p->src;
}

/* The IPv4 prefix length of a rule's keys, 1..32. */
static __always_inline __u32 sl_plen4(const struct sl_rule *r)
{
	__u32 plen = r->key_v4 ? r->key_v4 : SL_DEFAULT_KEY_V4;

	return plen > 32 ? 32 : plen;
}

/* The IPv6 prefix length of a rule's keys, 1..128. */
static __always_inline __u32 sl_plen6(const struct sl_rule *r)
{
	__u32 plen = r->key_v6 ? r->key_v6 : SL_DEFAULT_KEY_V6;

	return plen > 128 ? 128 : plen;
}

/* The key of rate_limit_map: an IPv4 prefix, or the rule's bucket. The caller zeroed k. */
static __always_inline void sl_key4_of(const struct sl_pkt *p, const struct sl_rule *r, struct sl_key *k)
{
	__u32 plen, a;

	k->rule_id = r->id;
	if (r->flags & SL_RF_PER_RULE) {
		k->flags = SL_KF_PER_RULE;
		return;
	}
	plen = sl_plen4(r);
	__builtin_memcpy(&a, sl_key_addr(p, r), 4);
	a &= bpf_htonl(~0U << (32 - plen));
	__builtin_memcpy(k->addr, &a, 4);
	k->plen = plen;
}

/* The key of rate_limit_map6: an IPv6 prefix. The caller zeroed k. */
static __always_inline void sl_key6_of(const struct sl_pkt *p, const struct sl_rule *r, struct sl_key6 *k)
{
	const __u8 *addr = sl_key_addr(p, r);
	__u32 plen = sl_plen6(r);
	__u64 hi, lo;

	k->rule_id = r->id;
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

/* The key of either map in sl_penalty's form (SL_KF_V4 for rate_limit_map's). The caller zeroed k. */
static __always_inline void sl_wide_key(const struct sl_pkt *p, const struct sl_rule *r, struct sl_key6 *k)
{
	if (sl_key_is4(p, r)) {
		struct sl_key k4 = {};

		sl_key4_of(p, r, &k4);
		k->rule_id = k4.rule_id;
		k->plen = k4.plen;
		k->flags = k4.flags | SL_KF_V4;
		__builtin_memcpy(k->addr, k4.addr, 4);
		return;
	}
	sl_key6_of(p, r, k);
}

#ifdef SLUICE_TEST
/*
 * Test build: with sl_test.salt_keys, XOR a per-CPU sequence (modulo salt_mod when set) into the
 * address the packet is keyed by, once per decision, so that every run is a new source (and every
 * key the decision builds, in either map or sl_penalty, is that source's).
 */
static __always_inline void sl_salt_key(struct sl_pkt *p, const struct sl_rule *r)
{
	__u32 zero = 0;
	struct sl_test_ctl *t = bpf_map_lookup_elem(&sl_test, &zero);
	__u64 *seq = bpf_map_lookup_elem(&sl_salt, &zero);
	__u8 *addr = (r->flags & SL_RF_KEY_DST) ? p->dst : p->src;
	__u64 n;
	__u32 s, a, at;

	if (!t || !seq || !t->salt_keys || (r->flags & SL_RF_PER_RULE))
		return;
	n = (*seq)++;
	if (t->salt_mod)
		n %= t->salt_mod;
	s = (__u32)n ^ (bpf_get_smp_processor_id() << 28);
	/* The 32 bits of the key's prefix that end at its length (IPv4: the address, shifted into a
	 * shorter prefix), so that the salt is not masked off. */
	if (p->family == 4) {
		__u32 plen = sl_plen4(r);

		__builtin_memcpy(&a, addr, 4);
		a ^= bpf_htonl(plen < 32 ? s << (32 - plen) : s);
		__builtin_memcpy(addr, &a, 4);
		return;
	}
	at = sl_plen6(r) > 32 ? (sl_plen6(r) - 32) / 8 : 0;
	/* 0, 4, 8 or 12, in a register the verifier sees bounded */
	at &= 12;
	asm volatile("" : "+r"(at));
	__builtin_memcpy(&a, addr + at, 4);
	a ^= s;
	__builtin_memcpy(addr + at, &a, 4);
}
#endif

#endif /* SLUICE_KEY_H */
