// SPDX-License-Identifier: GPL-2.0
/*
 * count.bpf.c - the lab's receiver-side count: a tc ingress filter on the server's veth that
 * counts, per source address, what arrived after the XDP hook (that is, what Sluice passed).
 * It never changes a verdict: every packet continues (TC_ACT_OK).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lab.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536); /* user space may resize before load */
	__type(key, struct lab_count_key);
	__type(value, struct lab_count_val);
} lab_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lab_count_totals);
} lab_count_totals SEC(".maps");

SEC("tc")
int lab_count_in(struct __sk_buff *skb)
{
	struct lab_count_key key = {};
	struct lab_count_totals *t;
	struct lab_count_val *v, init;
	__u32 zero = 0, segs;
	__u16 proto;
	int err;

	t = bpf_map_lookup_elem(&lab_count_totals, &zero);
	if (!t)
		return TC_ACT_OK;
	/* GRO may have merged several packets into this skb; count what was on the wire. */
	segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	/* skb->protocol is the ethertype after VLAN acceleration, so tagged frames count too. */
	proto = bpf_ntohs(skb->protocol);
	/* Loads through the helper, not direct access: after GRO the headers we need are still
	 * there, but a non-linear skb would make direct access fail its bounds check. */
	if (proto == ETH_P_IP) {
		key.family = 4;
		err = bpf_skb_load_bytes(skb, ETH_HLEN + 12, key.addr, 4);
	} else if (proto == ETH_P_IPV6) {
		key.family = 6;
		err = bpf_skb_load_bytes(skb, ETH_HLEN + 8, key.addr, 16);
	} else {
		/* Per-CPU values: only this CPU writes them, so plain increments are exact. */
		t->non_ip++;
		return TC_ACT_OK;
	}
	if (err) {
		t->non_ip++;
		return TC_ACT_OK;
	}
	t->packets += segs;
	t->bytes += skb->len;
	v = bpf_map_lookup_elem(&lab_count, &key);
	if (v) {
		v->packets += segs;
		v->bytes += skb->len;
		return TC_ACT_OK;
	}
	init.packets = segs;
	init.bytes = skb->len;
	if (bpf_map_update_elem(&lab_count, &key, &init, BPF_NOEXIST)) {
		/* Full, or another CPU created it first: try that entry once more. */
		v = bpf_map_lookup_elem(&lab_count, &key);
		if (!v) {
			t->unrecorded += segs;
			return TC_ACT_OK;
		}
		v->packets += segs;
		v->bytes += skb->len;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
