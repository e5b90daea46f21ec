/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.h - every map of the data path, with what it holds and who writes it.
 *
 * Sizes here are the defaults seen by iproute2; the control plane resizes the per-client map and
 * the rule tables before load (and sets max_rules to match).
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sluice.h"

/* Rule slots per policy half. sl_rules holds 2 * max_rules entries, stats_map max_rules + 1. */
const volatile __u32 max_rules = SL_DEFAULT_MAX_RULES;

/* CPUs that share a rule's aggregate limit (each enforces 1/nr_cpus of it); 0 = 1. */
const volatile __u32 nr_cpus = 0;

/*
 * Bit (1 << alg) set: that algorithm reads bpf_ktime_get_coarse_ns() instead of the fine clock, for
 * rules whose time scale is SL_COARSE_MIN_MS or more. Default: every algorithm (docs/datapath.md,
 * Time: the fine clock costs about as much as the rest of a decision on a virtual machine).
 */
const volatile __u32 coarse_clock = (1U << SL_ALG_FIXED) | (1U << SL_ALG_SLIDING) |
				    (1U << SL_ALG_TOKEN) | (1U << SL_ALG_GCRA);

/* See struct sl_btf_anchor. */
const volatile struct sl_btf_anchor sl_btf_anchor;

/*
 * Per-client limiter state, LRU-bounded: IPv4 sources and per-rule buckets (8-byte keys). Name kept
 * from the well-known tutorials.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_DEFAULT_STATE_MAX);
	__type(key, struct sl_key);
	__type(value, struct sl_state);
} rate_limit_map SEC(".maps");

/* The same for IPv6 sources (20-byte keys), sized like rate_limit_map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_DEFAULT_STATE_MAX);
	__type(key, struct sl_key6);
	__type(value, struct sl_state);
} rate_limit_map6 SEC(".maps");

/*
 * Blocked keys and keys their limit dropped, with their state as of that drop (struct sl_penalty).
 * A plain hash, not an LRU: new sources never enter it, so a flood of them cannot evict a block.
 * Entries past their `until` are deleted when looked up, and by the control plane's sweep.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_DEFAULT_PENALTY_MAX);
	__type(key, struct sl_key6);
	__type(value, struct sl_penalty);
} sl_penalty SEC(".maps");

/*
 * A filter in front of sl_penalty: bit h(key) set once a key has had a record (never cleared; a
 * stale bit costs a lookup that misses). A new key's miss costs a bit test instead of a hash
 * lookup. SL_PEN_BITS_LOG2 bits, in words of 64.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1U << (SL_PEN_BITS_LOG2 - 6));
	__type(key, __u32);
	__type(value, __u64);
} sl_pen_bits SEC(".maps");

/*
 * The keys of global rules this node has seen (struct sl_fleet_cand), written by the data path: the
 * candidates of the agent's exchange (docs/fleet.md). LRU: a key no longer sending is evicted
 * first; the agent also deletes keys idle past their window. Sized by the control plane before load
 * (fleet.max_keys).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sl_key6);
	__type(value, struct sl_fleet_cand);
} sl_fleet_cand SEC(".maps");

/* The agent's grants for keys of global rules (struct sl_fleet_grant), sized like sl_fleet_cand. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sl_key6);
	__type(value, struct sl_fleet_grant);
} sl_fleet_grant SEC(".maps");

/* Global settings, one entry. Written by the control plane; the policy flip writes .version. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_config);
} config_map SEC(".maps");

/*
 * Per-CPU counters per rule id, plus the global slot at index max_rules; with each rule's derived
 * values, aggregate limiter and lease after them (struct sl_rule_cpu): one lookup per packet.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_DEFAULT_MAX_RULES + 1);
	__type(key, __u32);
	__type(value, struct sl_rule_cpu);
} stats_map SEC(".maps");

/* Rule tables, double-buffered: index half * max_rules + slot. Slot 0 is the default rule. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * SL_DEFAULT_MAX_RULES);
	__type(key, __u32);
	__type(value, struct sl_rule);
} sl_rules SEC(".maps");

/* Per-half header: version, CIDR entry count, candidates for sources no CIDR covers. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct sl_half);
} sl_policy SEC(".maps");

/* Source CIDR -> ordered candidate rules, both halves in one trie (the half is part of the key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_cands);
} sl_cidr SEC(".maps");

/* Source prefix -> GeoIP tier, both halves in one trie like sl_cidr (a dataset reload is a flip). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_geo_val);
} sl_geo SEC(".maps");

/* Each CPU's budget of new states (GCRA time, ns): see sl_config.new_states_per_sec. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sl_newstate SEC(".maps");

/*
 * Operator-supplied programs a rule can hand its packets to (bpf_tail_call). One array per program
 * type, since a program array binds to one; pinned, since an array is emptied when the last user
 * space holder closes it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, SL_PLUGIN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} sl_plugins_xdp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, SL_PLUGIN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} sl_plugins_tc SEC(".maps");

/*
 * Fragmented datagrams seen recently: each first fragment records its rule, so that the later
 * fragments of the datagram (which carry no ports) are decided by the same rule (docs/datapath.md,
 * Fragments). LRU: a flood of first fragments evicts old entries, whose later fragments then get
 * the strictest rule of their source.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sl_frag_key);
	__type(value, struct sl_frag_val);
} sl_frags SEC(".maps");

/*
 * Management, deny and allow lists by source CIDR, checked before any rule; both halves in one trie
 * like sl_cidr. Sized by the control plane before load: two halves x the entries of one (default
 * SL_DEFAULT_LIST_MAX each).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2 * SL_DEFAULT_LIST_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_list_val);
} sl_lists SEC(".maps");

/* Sampled drop events for `sluice events`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} sl_events SEC(".maps");

/* The event sampler's per-CPU budget (no atomics: only its CPU touches a slot). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_event_budget);
} sl_event_budget SEC(".maps");

/* The ABI stamp of this set of maps (struct sl_abi_stamp), written by the control plane. Never read
 * by the data path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_abi_stamp);
} sl_abi_map SEC(".maps");

/*
 * A grace-period barrier for the control plane, never read by the data path: updating an entry of
 * an array of maps from user space returns only after synchronize_rcu(), i.e. after every packet
 * that might still be reading the previous policy half has finished.
 */
struct sl_rcu_inner_t {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sl_rcu_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct sl_rcu_inner_t);
} sl_rcu SEC(".maps") = {
	.values = { [0] = &sl_rcu_inner },
};

#ifdef SLUICE_TEST
/* Test build: the clock and the key salt. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_test_ctl);
} sl_test SEC(".maps");

/* Test build: per-CPU sequence XORed into keys when sl_test.salt_keys is set. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sl_salt SEC(".maps");
#endif

#endif /* SLUICE_MAPS_H */
