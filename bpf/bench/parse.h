/* SPDX-License-Identifier: GPL-2.0 */
/*
 * FROZEN: a copy of bpf/parse.h at the base of issue 13 (the performance issue), for bench.bpf.c
 * alone. The benchmark baselines (bench_floor, bench_minimal …) parse and key packets with these
 * copies, so that compacting Sluice's key or hardening its parser does not move the baselines it
 * is measured against. Never edit; to re-freeze, copy the file again and say so in the commit.
 */
/*
 * parse.h - cursor-based packet parsing.
 *
 * Every read is preceded by a bounds check against data_end, right before the access, so the
 * verifier sees the proof next to the use; lengths are checked against the IP header's own lengths
 * and the packet's real length. Parsing never fails: a packet it cannot make sense of gets a reason
 * (SL_R_TRUNCATED, SL_R_BAD_IPV4, SL_R_BAD_IPV6, SL_R_VLAN_DEPTH, SL_R_TINY_FRAG). Once the source
 * address has been read (family set) the packet is charged to its source whatever else is wrong;
 * what could not be read is flagged in unknown, and classification then takes the strictest rule
 * the packet could have matched.
 */
#ifndef SLUICE_PARSE_H
#define SLUICE_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice.h"

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
/* The pre-standard QinQ outer tag some switches still send. */
#define SL_ETH_P_QINQ1 0x9100

/* What a packet leaves unknown: fields that rules match on but the parser could not read. */
#define SL_UNK_PROTO 0x01  /* the L4 protocol (an IPv6 chain longer than the walk)            */
#define SL_UNK_L4    0x02  /* ports, TCP flags, ICMP type (a later fragment, an unreadable L4) */

/* Fragments (sl_pkt.frag). */
#define SL_FRAG_NONE  0
#define SL_FRAG_FIRST 1    /* offset 0, more fragments follow: its rule is recorded in sl_frags */
#define SL_FRAG_LATER 2    /* offset > 0: no L4 header; decided where its first fragment was    */

/* What the rest of the pipeline needs to know about a packet. Kernel-internal. */
struct sl_pkt {
	__u8  family;     /* 0 (no readable source), 4 or 6: once set, src holds the source address */
	__u8  proto;      /* L4 protocol (of a fragment: of its datagram); see unknown            */
	__u8  tcp_flags;  /* TCP flags byte (SL_TCP_*)                                            */
	__u8  reason;     /* 0 when well formed, else the malformed reason                        */
	__u16 sport;      /* host order; 0 when there is none                                     */
	__u16 dport;      /* host order (TCP, UDP, SCTP); ICMP/ICMPv6: type << 8 | code, which
	                   * events report and rules never match as a port (sl_has_ports)      */
	__u32 len;        /* bytes, as charged to byte limits (a GSO packet: all its segments')    */
	__u16 segs;       /* packets this frame stands for (GSO segments at egress), >= 1          */
	__u8  dir;        /* enum sl_dir: where it was seen                                       */
	__u8  tier;       /* GeoIP tier of the remote side, filled by classification              */
	__u8  unknown;    /* SL_UNK_*: match fields that could not be read                        */
	__u8  frag;       /* SL_FRAG_*                                                            */
	__u8  note;       /* a counted-only reason (SL_R_EXT_CHAIN, ...), 0 = none                */
	__u8  pad;
	__u32 frag_id;    /* IPv4 id or IPv6 fragment id, as on the wire                          */
	__u16 hdr_len;    /* bytes of headers before the L4 payload (a GSO packet repeats them)   */
	__u16 pad2;
	__u8  src[16];    /* network order; IPv4 in the first 4 bytes */
	__u8  dst[16];
};

/* Whether the packet's protocol has ports: only then does sl_pkt.dport hold one. */
static __always_inline int sl_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* TCP flags (byte 13 of the header). */
#define SL_TCP_FIN 0x01
#define SL_TCP_SYN 0x02
#define SL_TCP_RST 0x04
#define SL_TCP_ACK 0x10

/* IPv4 frag_off (host order): the offset in 8-byte units, and the more-fragments flag. */
#define SL_IP4_OFFSET 0x1fff
#define SL_IP4_MF     0x2000
/* IPv6 fragment header frag_off (host order): offset << 3, and the more-fragments bit. */
#define SL_IP6_OFFSET 0xfff8
#define SL_IP6_MF     0x0001

struct vlan_hdr_sl {
	__be16 tci;
	__be16 encap_proto;
};

struct ipv6_ext_sl {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct frag_hdr_sl {
	__u8   nexthdr;
	__u8   reserved;
	__be16 frag_off;  /* offset in 8-byte units << 3, low bit: more fragments */
	__be32 id;
};

static __always_inline int sl_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
	       proto == bpf_htons(SL_ETH_P_QINQ1);
}

/*
 * Ports (TCP, UDP, SCTP), flags or ICMP type/code. pos is the start of the L4 header; lim is where the IP header
 * says the packet ends (compared with, never read through) (never the frame's end, which may hold padding the sender controls). A
 * header that does not fit leaves the L4 fields unknown: the packet is still charged to its source
 * (by the strictest rule it could match), and a first fragment that does not hold it is dropped.
 */
static __always_inline void sl_parse_l4(void *pos, void *end, void *lim, struct sl_pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = pos;

		if ((void *)(th + 1) > lim || (void *)(th + 1) > end)
			goto cut;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
		p->hdr_len += th->doff * 4;
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = pos;

		if ((void *)(uh + 1) > lim || (void *)(uh + 1) > end)
			goto cut;
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
		p->hdr_len += sizeof(*uh);
	} else if (p->proto == IPPROTO_SCTP) {
		__u8 *sh = pos;

		/* The common header: source port, destination port (as UDP's), verification tag,
		 * checksum. */
		if ((void *)(sh + 12) > lim || (void *)(sh + 12) > end)
			goto cut;
		p->sport = (__u16)sh[0] << 8 | sh[1];
		p->dport = (__u16)sh[2] << 8 | sh[3];
		p->hdr_len += 12;
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		__u8 *ic = pos;

		/* type, code, checksum */
		if ((void *)(ic + 4) > lim || (void *)(ic + 4) > end)
			goto cut;
		p->dport = (__u16)ic[0] << 8 | ic[1];
	}
	return;
cut:
	p->unknown |= SL_UNK_L4;
	p->reason = p->frag == SL_FRAG_FIRST ? SL_R_TINY_FRAG : SL_R_TRUNCATED;
}

/* off: where the IPv4 header starts in the frame; wire: the frame's real length (an skb's len). */
static __always_inline void sl_parse_ipv4(void *pos, void *end, __u32 off, __u32 wire, int big,
					  struct sl_pkt *p)
{
	struct iphdr *ip = pos;
	__u32 hlen, tot, fo;

	if ((void *)(ip + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	if (ip->version != 4) {
		p->reason = SL_R_BAD_IPV4;
		return;
	}
	/* From here the source is known: whatever else is wrong, the packet is charged to it. */
	p->family = 4;
	__builtin_memcpy(p->src, &ip->saddr, 4);
	__builtin_memcpy(p->dst, &ip->daddr, 4);
	p->proto = ip->protocol;
	p->unknown = SL_UNK_L4;

	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	/* IPv4 BIG TCP (a GSO packet over 64 KiB at egress) writes tot_len 0: its length is the skb's. */
	if (tot == 0 && big && wire > off)
		tot = wire - off;
	if (ip->ihl < 5 || tot < hlen) {
		p->reason = SL_R_BAD_IPV4;
		return;
	}
	/* Lengths against the packet's real length, not the linear data an skb happens to hold. */
	if (off + tot > wire) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	p->hdr_len = off + hlen;
	fo = bpf_ntohs(ip->frag_off);
	if (fo & (SL_IP4_OFFSET | SL_IP4_MF)) {
		p->frag_id = ip->id;
		if (fo & SL_IP4_OFFSET) {
			p->frag = SL_FRAG_LATER;
			return;
		}
		p->frag = SL_FRAG_FIRST;
	}
	p->unknown = 0;
	/* Options are skipped, not read. */
	sl_parse_l4(pos + (hlen & 0x3c), end, pos + (tot & 0xffff), p);
}

/* Headers are read up to this offset into the frame; a header deeper than that is taken as cut. */
#define SL_MAX_HDR_OFF 0x3fff

/*
 * off masked to SL_MAX_HDR_OFF, in a register the compiler cannot swap for an unmasked copy: the
 * verifier needs the bound on the very register added to the packet pointer.
 */
static __always_inline __u32 sl_bounded(__u32 off)
{
	off &= SL_MAX_HDR_OFF;
	asm volatile("" : "+r"(off));
	return off;
}

/* The IPv6 extension-header walk, in and out (see SL_DEFINE_WALK6). */
struct sl_walk6 {
	__u32 off;      /* in: offset of the header after the fixed one; out: of the L4 header     */
	__u32 lim;      /* in: offset where the payload ends (by payload_len)                      */
	__u32 frag_id;  /* out: of a fragment                                                     */
	__u8  nh;       /* in: the fixed header's next header; out: the L4 protocol                */
	__u8  state;    /* out: SL_W6_*                                                           */
	__u8  frag;     /* out: SL_FRAG_*                                                         */
	__u8  pad;
};

#define SL_W6_L4       0  /* nh is the L4 protocol, its header at off                    */
#define SL_W6_TOO_LONG 1  /* more than SL_MAX_EXT extension headers                     */
#define SL_W6_CUT      2  /* a header runs past the payload or the data                  */
#define SL_W6_LATER    3  /* a later fragment: nh is its datagram's protocol, no L4 here */

/*
 * Walk at most SL_MAX_EXT extension headers from w->off. A global function, verified once: the
 * walk is the costliest part of parsing for the verifier (each header's length is a new bound), and
 * on its own it is not multiplied by every path that leads to it (VLAN depths, IPv4). Offsets, not
 * pointers, cross the call (a global function cannot take packet pointers); one per hook.
 */
#define SL_DEFINE_WALK6(name, ctx_type)							\
__noinline int name(ctx_type *ctx, struct sl_walk6 *w)					\
{											\
	void *data, *end;								\
	__u32 off, lim, i;								\
	__u8 nh;									\
											\
	if (!w)										\
		return 0;								\
	data = (void *)(long)ctx->data;							\
	end = (void *)(long)ctx->data_end;						\
	off = w->off;									\
	lim = w->lim;									\
	nh = w->nh;									\
	w->state = SL_W6_CUT;								\
	w->frag = SL_FRAG_NONE;								\
	for (i = 0; i <= SL_MAX_EXT; i++) {						\
		struct ipv6_ext_sl *eh;							\
		__u32 hl;								\
											\
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING &&			\
		    nh != IPPROTO_DSTOPTS && nh != IPPROTO_MH && nh != IPPROTO_AH &&	\
		    nh != IPPROTO_FRAGMENT) {						\
			w->nh = nh;							\
			w->off = off;							\
			w->state = off <= lim ? SL_W6_L4 : SL_W6_CUT;			\
			return 0;							\
		}									\
		if (i == SL_MAX_EXT) {							\
			w->state = SL_W6_TOO_LONG;					\
			return 0;							\
		}									\
		/* The verifier bounds a packet offset only below 64 KiB; headers	\
		 * deeper than SL_MAX_HDR_OFF are taken as cut. */			\
		eh = data + sl_bounded(off);						\
		if (off > SL_MAX_HDR_OFF || off + 8 > lim)				\
			return 0;							\
		if ((void *)eh + 8 > end)						\
			return 0;							\
		if (nh == IPPROTO_FRAGMENT) {						\
			struct frag_hdr_sl *fh = (void *)eh;				\
			__u16 fo = bpf_ntohs(fh->frag_off);				\
											\
			/* Every fragment names its datagram's payload protocol. */	\
			nh = fh->nexthdr;						\
			off += sizeof(*fh);						\
			if (fo & SL_IP6_OFFSET) {					\
				w->frag = SL_FRAG_LATER;				\
				w->frag_id = fh->id;					\
				w->nh = nh;						\
				w->state = SL_W6_LATER;					\
				return 0;						\
			}								\
			if (fo & SL_IP6_MF) {						\
				w->frag = SL_FRAG_FIRST;				\
				w->frag_id = fh->id;					\
			}								\
			continue; /* else an atomic fragment: a whole datagram */	\
		}									\
		hl = nh == IPPROTO_AH ? ((__u32)eh->hdrlen + 2) * 4 :			\
					((__u32)eh->hdrlen + 1) * 8;			\
		nh = eh->nexthdr;							\
		off += hl;								\
	}										\
	return 0;									\
}

/* The IPv6 header at off; the walk is done by the caller (sl_parse_ipv6_tail). */
static __always_inline int sl_parse_ipv6(void *pos, void *end, __u32 off, __u32 wire,
					 struct sl_pkt *p, struct sl_walk6 *w)
{
	struct ipv6hdr *ip6 = pos;
	__u32 plen;

	if ((void *)(ip6 + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return 0;
	}
	if (ip6->version != 6) {
		p->reason = SL_R_BAD_IPV6;
		return 0;
	}
	p->family = 6;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	p->unknown = SL_UNK_PROTO | SL_UNK_L4;
	/* The packet must hold the payload it announces (0: a jumbogram or BIG TCP: the rest). */
	plen = bpf_ntohs(ip6->payload_len);
	if (off + sizeof(*ip6) > wire) {
		p->reason = SL_R_TRUNCATED;
		return 0;
	}
	if (!plen)
		plen = wire - off - sizeof(*ip6);
	if (off + sizeof(*ip6) + plen > wire) {
		p->reason = SL_R_TRUNCATED;
		return 0;
	}
	w->off = off + sizeof(*ip6);
	w->lim = off + sizeof(*ip6) + plen;
	w->nh = ip6->nexthdr;
	return 1;
}

/* After the walk: the L4 header, bounded by the payload's end. */
static __always_inline void sl_parse_ipv6_tail(void *data, void *end, const struct sl_walk6 *w,
					       struct sl_pkt *p)
{
	__u32 off = w->off;

	p->frag = w->frag;
	p->frag_id = w->frag_id;
	switch (w->state) {
	case SL_W6_TOO_LONG:
		p->note = SL_R_EXT_CHAIN;
		return;
	case SL_W6_LATER:
		p->proto = w->nh;
		p->unknown = SL_UNK_L4;
		return;
	case SL_W6_L4:
		break;
	default:
		/* The chain runs past the packet (or past the first fragment, which must hold it). */
		p->reason = p->frag == SL_FRAG_FIRST ? SL_R_TINY_FRAG : SL_R_TRUNCATED;
		return;
	}
	p->proto = w->nh;
	p->unknown = 0;
	void *l4 = data + sl_bounded(off);

	if (off > SL_MAX_HDR_OFF) {
		p->unknown = SL_UNK_L4;
		p->reason = SL_R_TRUNCATED;
		return;
	}
	p->hdr_len = off;
	sl_parse_l4(l4, end, data + (w->lim & 0x1ffff), p);
}

/*
 * Parse one frame [data, end): the headers must lie in [data, end); lengths are checked against
 * wire, the packet's real length (XDP: end - data; tc: skb->len, which may exceed the linear data).
 * big: a GSO packet, whose IPv4 tot_len may be 0. Fills p; p->reason tells whether it was
 * malformed, p->family whether its source could be read. Returns 1 when an IPv6 extension walk
 * is to follow (w filled in): the caller runs its hook's walk and then sl_parse_ipv6_tail().
 */
static __always_inline int sl_parse(void *data, void *end, __u32 wire, int big, struct sl_pkt *p,
				    struct sl_walk6 *w)
{
	struct ethhdr *eth = data;
	__be16 proto;
	void *pos;
	__u32 off = sizeof(*eth);
	int i;

	if ((void *)(eth + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return 0;
	}
	proto = eth->h_proto;
	pos = eth + 1;
	for (i = 0; i < SL_MAX_VLAN; i++) {
		struct vlan_hdr_sl *vh = pos;

		if (!sl_is_vlan(proto))
			break;
		if ((void *)(vh + 1) > end) {
			p->reason = SL_R_TRUNCATED;
			return 0;
		}
		proto = vh->encap_proto;
		pos = vh + 1;
		off += sizeof(*vh);
	}
	if (sl_is_vlan(proto)) {
		p->reason = SL_R_VLAN_DEPTH;
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IP))
		sl_parse_ipv4(pos, end, off, wire, big, p);
	else if (proto == bpf_htons(ETH_P_IPV6))
		return sl_parse_ipv6(pos, end, off, wire, p, w);
	/* anything else: family stays 0, counted as SL_R_NON_IP and passed */
	return 0;
}

#endif /* SLUICE_PARSE_H */
