/* SPDX-License-Identifier: GPL-2.0 */
/*
 * csum.h - the one incremental checksum update of the lab's generator, shared by its two paths:
 * the XDP program (flood.bpf.c) and the paced packet socket (native/lab.c).
 */
#ifndef SLUICE_LAB_CSUM_H
#define SLUICE_LAB_CSUM_H

#include <linux/types.h>

/*
 * RFC 1624 update of a 16-bit ones' complement checksum when a 32-bit word of the data it covers
 * changes from `from` to `to`. The sum is byte-order independent as long as the checksum and the
 * words are read the same way (here: as stored, network order).
 */
static inline __u16 lab_csum_replace4(__u16 csum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~csum;

	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += to & 0xffff;
	s += to >> 16;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

#endif
