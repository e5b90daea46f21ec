// SPDX-License-Identifier: GPL-2.0
/*
 * bench.bpf.c - baselines for the benchmarks (bench/), measured in the same run as the data path.
 * Per packet (bench/decision.ts, BPF_PROG_TEST_RUN):
 *   bench_pass          returns XDP_PASS at once: the cost of the test run itself;
 *   bench_floor         the least any per-source limiter must do: parse the same headers as the
 *                       data path, read the clock once, one hash lookup keyed by the source;
 *   bench_floor_coarse  the same with the coarse clock.
 * Throughput (bench/throughput.ts, attached to the receiving veth; each counts what it decides in
 * bench_count):
 *   bench_drop          drops everything: the ceiling of the receiving side;
 *   bench_stack         passes everything into the kernel's stack;
 *   bench_minimal       a minimal per-source limiter of the tutorials' kind: parse, fine clock, one
 *                       lookup, a new source inserted, a fixed one-second window;
 *   bench_minimal_coarse the same with the coarse clock (what Sluice reads by default).
 * And a probe for tests (test/lab/accuracy.test.ts), not a baseline:
 *   bench_clock         writes the coarse and the fine clock (bpf_ktime_get_coarse_ns,
 *                       bpf_ktime_get_ns: the two the data path reads) into the frame's first
 *                       16 bytes, host order.
 * The parser and key are frozen copies (bench/sluice.h, bench/parse.h) of issue 13's base. The
 * minimal limiters have a map of their own, sized by the benchmark to hold every source of a run
 * (a map smaller than the sources evicts on every packet and measures evictions, not a limiter).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* Frozen copies (bench/sluice.h, bench/parse.h): the baselines do not move when the data path's parser or key does. */
#include "bench/sluice.h"
#include "bench/parse.h"

char _license[] SEC("license") = "GPL";

SL_DEFINE_WALK6(bench_walk6, struct xdp_md)

/* The data path's parser, as sl_parse_xdp runs it. */
static __always_inline void bench_parse(struct xdp_md *ctx, struct sl_pkt *p)
{
	struct sl_walk6 w = {};

	if (sl_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, ctx->data_end - ctx->data, 0, p, &w)) {
		bench_walk6(ctx, &w);
		sl_parse_ipv6_tail((void *)(long)ctx->data, (void *)(long)ctx->data_end, &w, p);
	}
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_DEFAULT_STATE_MAX);
	__type(key, struct sl_key);
	__type(value, struct sl_state);
} floor_map SEC(".maps");

/* The minimal limiters' per-source state; user space sizes it to the run's sources. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_DEFAULT_STATE_MAX);
	__type(key, struct sl_key);
	__type(value, struct sl_state);
} minimal_map SEC(".maps");

/* Per CPU (only its CPU writes a slot: no atomics): [0] packets decided, [1] packets passed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} bench_count SEC(".maps");

/* bench_minimal's limit: packets per source per second. */
const volatile __u32 minimal_limit = 100;

static __always_inline int bench_counted(__u32 verdict)
{
	__u32 zero = 0, one = 1;
	__u64 *c = bpf_map_lookup_elem(&bench_count, &zero);

	if (c)
		*c += 1;
	if (verdict == XDP_PASS) {
		c = bpf_map_lookup_elem(&bench_count, &one);
		if (c)
			*c += 1;
	}
	return verdict;
}

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

	bench_parse(ctx, &p);
	now = bpf_ktime_get_ns();
	k.family = p.family;
	__builtin_memcpy(k.addr, p.src, 16);
	st = bpf_map_lookup_elem(&floor_map, &k);
	if (st && st->last_seen > now)
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int bench_floor_coarse(struct xdp_md *ctx)
{
	struct sl_pkt p = {};
	struct sl_key k = {};
	struct sl_state *st;
	__u64 now;

	bench_parse(ctx, &p);
	now = bpf_ktime_get_coarse_ns();
	k.family = p.family;
	__builtin_memcpy(k.addr, p.src, 16);
	st = bpf_map_lookup_elem(&floor_map, &k);
	if (st && st->last_seen > now)
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return bench_counted(XDP_DROP);
}

SEC("xdp")
int bench_stack(struct xdp_md *ctx)
{
	return bench_counted(XDP_PASS);
}

/* A fixed one-second window per source, on the clock it is given. */
static __always_inline int bench_minimal_at(struct xdp_md *ctx, int coarse)
{
	struct sl_pkt p = {};
	struct sl_key k = {};
	struct sl_state *st;
	__u64 now;

	bench_parse(ctx, &p);
	if (!p.family)
		return bench_counted(XDP_PASS);
	now = coarse ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();
	k.family = p.family;
	__builtin_memcpy(k.addr, p.src, 16);
	st = bpf_map_lookup_elem(&minimal_map, &k);
	if (!st) {
		struct sl_state fresh = { .pkt = 1, .last_seen = now };

		bpf_map_update_elem(&minimal_map, &k, &fresh, BPF_ANY);
		return bench_counted(XDP_PASS);
	}
	if (now - st->last_seen >= 1000000000ULL) {
		st->last_seen = now;
		st->pkt = 0;
	}
	return bench_counted(__sync_fetch_and_add(&st->pkt, 1) < minimal_limit ? XDP_PASS : XDP_DROP);
}

SEC("xdp")
int bench_minimal(struct xdp_md *ctx)
{
	return bench_minimal_at(ctx, 0);
}

SEC("xdp")
int bench_minimal_coarse(struct xdp_md *ctx)
{
	return bench_minimal_at(ctx, 1);
}

SEC("xdp")
int bench_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u64 *t = data;

	if ((void *)(t + 2) > end)
		return XDP_ABORTED;
	t[0] = bpf_ktime_get_coarse_ns();
	t[1] = bpf_ktime_get_ns();
	return XDP_PASS;
}
