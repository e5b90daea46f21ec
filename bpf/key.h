/* SPDX-License-Identifier: GPL-2.0 */
/*
 * key.h - the state key of a packet: the rule id and the source (or destination) masked to the
 * rule's key prefix, or nothing for a per-rule bucket.
 */
#ifndef SLUICE_KEY_H
#define SLUICE_KEY_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"
#include "parse.h"
#include "maps.h"
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

#endif /* SLUICE_KEY_H */
