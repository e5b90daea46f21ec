/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lab.h - structs shared by the lab's BPF programs (flood.bpf.c, count.bpf.c) and user space.
 *
 * scripts/gen-types.ts reads them from the BTF of count.bpf.o and flood.bpf.o and writes
 * src/generated/lab.ts; user space never copies them by hand.
 */
#ifndef SLUICE_LAB_H
#define SLUICE_LAB_H

#include <linux/types.h>

/* Key of lab_count: one source address as it arrived at the server's interface. */
struct lab_count_key {
	__u8  family;     /* 4 or 6 */
	__u8  pad[3];
	__u8  addr[16];   /* network order; IPv4 in the first 4 bytes, the rest zero */
};

/* Value of lab_count (per CPU): what arrived from one source. */
struct lab_count_val {
	__u64 packets;    /* packets, GRO-merged packets counted one by one (gso_segs) */
	__u64 bytes;      /* bytes as tc saw them (skb->len, Ethernet header included) */
};

/* lab_count_totals[0] (per CPU): everything the counter saw. */
struct lab_count_totals {
	__u64 packets;    /* every IP packet (gso_segs), counted in lab_count or not          */
	__u64 bytes;
	__u64 non_ip;     /* frames that were neither IPv4 nor IPv6 (ARP …), not in lab_count */
	__u64 unrecorded; /* IP packets whose source found no room in lab_count (map full)    */
};

/* lab_flood_stats[0] (per CPU): what the flood program handed to the redirect. */
struct lab_flood_stats {
	__u64 frames;     /* frames rewritten and redirected */
	__u64 seq;        /* position in the sequence of sources (this CPU) */
};

#endif
