// SPDX-License-Identifier: GPL-2.0
/*
 * bench.bpf.c - baselines for the per-packet benchmark (bench/decision.ts), measured in the same
 * run as the data path:
 *   bench_pass   returns XDP_PASS at once: the cost of the test run itself;
 *   bench_floor  the least any per-source limiter must do: parse the same headers as the data
 *                path, read the clock once, one hash lookup keyed by the source.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sluice.h"
#include "parse.h"

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_DEFAULT_STATE_MAX);
	__type(key, struct sl_key);
	__type(value, struct sl_state);
} floor_map SEC(".maps");

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int bench_floor(struct xdp_md *ctx)
{
	struct sl_pkt p = {};
	struct sl_key k = {};
	struct sl_state *st;
	__u64 now;

	sl_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &p);
	now = bpf_ktime_get_ns();
	k.family = p.family;
	__builtin_memcpy(k.addr, p.src, 16);
	st = bpf_map_lookup_elem(&floor_map, &k);
	if (st && st->last_seen > now)
		return XDP_DROP;
	return XDP_PASS;
}
