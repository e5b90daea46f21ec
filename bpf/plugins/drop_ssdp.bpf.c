// SPDX-License-Identifier: GPL-2.0
/*
 * An example plugin: an operator's own decision for the packets of a rule, plugged into a slot
 * with `sluice policy plug --slot N --object bpf/plugins/drop_ssdp.bpf.o --section xdp` and named
 * by a rule (`plugin: N`). The rule's packets arrive here by tail call from Sluice's program, with
 * the packet untouched; whatever this returns is the verdict.
 *
 * This one drops SSDP (UDP to port 1900, a common reflection-attack vector) outright and passes
 * everything else the rule hands it. Plugins keep their own counters: here, a per-CPU pair.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "GPL";

/* [0] dropped, [1] passed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} ssdp_counts SEC(".maps");

static __always_inline int count(__u32 i, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&ssdp_counts, &i);

	if (c)
		*c += 1; /* per-CPU: no atomics needed */
	return verdict;
}

SEC("xdp")
int drop_ssdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *uh;
	__u8 proto;

	if ((void *)(eth + 1) > end)
		return count(1, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return count(1, XDP_PASS);
		proto = ip->protocol;
		uh = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return count(1, XDP_PASS);
		proto = ip6->nexthdr; /* extension headers are Sluice's business, not this example's */
		uh = (void *)(ip6 + 1);
	} else {
		return count(1, XDP_PASS);
	}
	if (proto == IPPROTO_UDP && (void *)(uh + 1) <= end && uh->dest == bpf_htons(1900))
		return count(0, XDP_DROP);
	return count(1, XDP_PASS);
}
