// SPDX-License-Identifier: GPL-2.0
/*
 * flood.bpf.c - the lab's packet generator, run by BPF_PROG_TEST_RUN in live-frame mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES): for every frame the kernel hands it, write the next source
 * address, fix the checksums that cover it, and redirect the frame out of the client's veth.
 *
 * User space builds one valid frame (destination MAC = the server's veth, correct checksums for
 * its first source) and sets the constants below before load. The program changes only one
 * 32-bit word of the source address, and fixes checksums from the word it finds in the frame
 * rather than from the template: live-frame pages are recycled without being reset, so a frame
 * may already carry an earlier source.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lab.h"
#include "csum.h"

/* Load-time settings (user space sets them before load; see src/lab/flood.ts). */
const volatile __u32 out_ifindex = 0;  /* the client veth, in the namespace of the test run   */
const volatile __u32 addr_off = 0;     /* frame offset of the source-address word rewritten  */
const volatile __u32 ip_csum_off = 0;  /* frame offset of the IPv4 header checksum; 0 = none */
const volatile __u32 l4_csum_off = 0;  /* frame offset of a TCP/UDP/ICMPv6 checksum over a
					  pseudo-header with the source; 0 = none           */
const volatile __u8  l4_is_udp = 0;    /* UDP: a computed 0 is sent as 0xffff (RFC 768)       */
const volatile __u32 src_base = 0;     /* host order: the first source word                  */
const volatile __u32 src_count = 1;    /* sources in sequence: base .. base + count - 1;
					  0 = random: base with the bits of src_mask random  */
const volatile __u32 src_mask = 0;     /* host order: random bits when src_count == 0        */
const volatile __u8  src_per_cpu = 0;  /* each CPU its own sequence: base + cpu x count ..,
					  as RSS gives each CPU its own flows              */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lab_flood_stats);
} lab_flood_stats SEC(".maps");

/* Offsets are masked so that the verifier sees a small bound even before it knows the value. */
#define OFF_MASK 0x1ff

SEC("xdp")
int lab_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0, aoff = addr_off & OFF_MASK, coff = ip_csum_off & OFF_MASK;
	__u32 loff = l4_csum_off & OFF_MASK, word, old;
	struct lab_flood_stats *st;
	__u16 *c;

	st = bpf_map_lookup_elem(&lab_flood_stats, &zero);
	if (!st)
		return XDP_ABORTED;
	/* Per-CPU value: only this CPU writes it, no atomics needed. */
	if (src_count)
		word = src_base + (src_per_cpu ? bpf_get_smp_processor_id() * src_count : 0) +
		       (__u32)(st->seq++ % src_count);
	else
		word = (src_base & ~src_mask) | (bpf_get_prandom_u32() & src_mask);
	word = bpf_htonl(word);

	if (data + aoff + 4 > data_end)
		return XDP_ABORTED;
	old = *(__u32 *)(data + aoff);
	*(__u32 *)(data + aoff) = word;
	if (coff) {
		if (data + coff + 2 > data_end)
			return XDP_ABORTED;
		c = data + coff;
		*c = lab_csum_replace4(*c, old, word);
	}
	if (loff) {
		if (data + loff + 2 > data_end)
			return XDP_ABORTED;
		c = data + loff;
		*c = lab_csum_replace4(*c, old, word);
		if (l4_is_udp && *c == 0)
			*c = 0xffff;
	}
	st->frames++;
	return bpf_redirect(out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
