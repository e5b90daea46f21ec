/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse.h - cursor-based packet parsing.
 *
 * Every read is preceded by a bounds check against data_end, right before the access, so the
 * verifier sees the proof next to the use. Parsing never fails: a packet it cannot make sense of
 * gets a reason (SL_R_TRUNCATED, SL_R_BAD_IPV4, SL_R_BAD_IPV6, SL_R_VLAN_DEPTH) and the caller
 * applies the configured verdict for malformed packets.
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

/* What the rest of the pipeline needs to know about a packet. Kernel-internal. */
struct sl_pkt {
	__u8  family;     /* 0 (not IP), 4 or 6 */
	__u8  proto;      /* L4 protocol; 0 when unknown (a non-first fragment) */
	__u8  tcp_flags;  /* TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10 ...) */
	__u8  reason;     /* 0 when well formed, else the malformed reason */
	__u16 sport;      /* host order; 0 when there is none */
	__u16 dport;      /* host order; ICMP/ICMPv6: type << 8 | code */
	__u32 len;        /* frame bytes, as charged to byte limits */
	__u16 segs;       /* packets this frame stands for (GSO segments at egress), >= 1 */
	__u8  dir;        /* enum sl_dir: where it was seen */
	__u8  tier;       /* GeoIP tier of the source, filled by classification */
	__u8  src[16];    /* network order; IPv4 in the first 4 bytes */
	__u8  dst[16];
};

/* TCP flags (byte 13 of the header). */
#define SL_TCP_FIN 0x01
#define SL_TCP_SYN 0x02
#define SL_TCP_RST 0x04
#define SL_TCP_ACK 0x10

/* IPv4 frag_off (host order): the offset in 8-byte units, and the flags above it. */
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
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Ports, flags or ICMP type/code. pos is the start of the L4 header. */
static __always_inline void sl_parse_l4(void *pos, void *end, struct sl_pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = pos;

		if ((void *)(th + 1) > end) {
			p->reason = SL_R_TRUNCATED;
			return;
		}
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = pos;

		if ((void *)(uh + 1) > end) {
			p->reason = SL_R_TRUNCATED;
			return;
		}
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		__u8 *ic = pos;

		/* type, code, checksum */
		if ((void *)(ic + 4) > end) {
			p->reason = SL_R_TRUNCATED;
			return;
		}
		p->dport = (__u16)ic[0] << 8 | ic[1];
	}
}

static __always_inline void sl_parse_ipv4(void *pos, void *end, struct sl_pkt *p)
{
	struct iphdr *ip = pos;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	if (ip->version != 4 || ip->ihl < 5) {
		p->reason = SL_R_BAD_IPV4;
		return;
	}
	p->family = 4;
	__builtin_memcpy(p->src, &ip->saddr, 4);
	__builtin_memcpy(p->dst, &ip->daddr, 4);

	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hlen) {
		p->reason = SL_R_BAD_IPV4;
		return;
	}
	/* Options are skipped, not read; the frame must still hold the whole packet. */
	if (pos + tot > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	/* A non-first fragment carries no L4 header: limit it by address only. */
	if (bpf_ntohs(ip->frag_off) & SL_IP4_OFFSET)
		return;
	p->proto = ip->protocol;
	sl_parse_l4(pos + hlen, end, p);
}

static __always_inline void sl_parse_ipv6(void *pos, void *end, struct sl_pkt *p)
{
	struct ipv6hdr *ip6 = pos;
	__u32 plen;
	__u8 nh;
	int i;

	if ((void *)(ip6 + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	if (ip6->version != 6) {
		p->reason = SL_R_BAD_IPV6;
		return;
	}
	p->family = 6;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	pos = ip6 + 1;
	/* The frame must hold the payload it announces (0: a jumbogram, length in an option). */
	plen = bpf_ntohs(ip6->payload_len);
	if (plen && pos + plen > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}

	/* Walk at most SL_MAX_EXT extension headers; a longer chain is malformed, not a bypass. */
	for (i = 0; i < SL_MAX_EXT; i++) {
		switch (nh) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_MH: {
			struct ipv6_ext_sl *eh = pos;

			if ((void *)(eh + 1) > end) {
				p->reason = SL_R_TRUNCATED;
				return;
			}
			nh = eh->nexthdr;
			pos += ((__u32)eh->hdrlen + 1) * 8;
			break;
		}
		case IPPROTO_AH: {
			struct ipv6_ext_sl *eh = pos;

			if ((void *)(eh + 1) > end) {
				p->reason = SL_R_TRUNCATED;
				return;
			}
			nh = eh->nexthdr;
			pos += ((__u32)eh->hdrlen + 2) * 4;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct frag_hdr_sl *fh = pos;

			if ((void *)(fh + 1) > end) {
				p->reason = SL_R_TRUNCATED;
				return;
			}
			if (bpf_ntohs(fh->frag_off) & SL_IP6_OFFSET)
				return; /* non-first fragment: address only */
			nh = fh->nexthdr;
			pos = fh + 1;
			break;
		}
		default:
			p->proto = nh;
			sl_parse_l4(pos, end, p);
			return;
		}
	}
	p->reason = SL_R_BAD_IPV6;
}

/* Parse one frame [data, end). Fills p; p->reason tells whether it was malformed. */
static __always_inline void sl_parse(void *data, void *end, struct sl_pkt *p)
{
	struct ethhdr *eth = data;
	__be16 proto;
	void *pos;
	int i;

	p->len = end - data;
	if ((void *)(eth + 1) > end) {
		p->reason = SL_R_TRUNCATED;
		return;
	}
	proto = eth->h_proto;
	pos = eth + 1;
	for (i = 0; i < SL_MAX_VLAN; i++) {
		struct vlan_hdr_sl *vh = pos;

		if (!sl_is_vlan(proto))
			break;
		if ((void *)(vh + 1) > end) {
			p->reason = SL_R_TRUNCATED;
			return;
		}
		proto = vh->encap_proto;
		pos = vh + 1;
	}
	if (sl_is_vlan(proto)) {
		p->reason = SL_R_VLAN_DEPTH;
		return;
	}
	if (proto == bpf_htons(ETH_P_IP))
		sl_parse_ipv4(pos, end, p);
	else if (proto == bpf_htons(ETH_P_IPV6))
		sl_parse_ipv6(pos, end, p);
	/* anything else: family stays 0, counted as SL_R_NON_IP and passed */
}

#endif /* SLUICE_PARSE_H */
