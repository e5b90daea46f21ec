/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sluice.h - the one header shared by the kernel side and user space.
 *
 * Every struct that crosses the kernel/user boundary is defined here, once, with fixed-width
 * types and explicit padding. User space never copies these by hand: scripts/gen-types.ts reads
 * the BTF of the built object and writes src/generated/types.ts, and the build fails when the two
 * drift apart.
 *
 * Conventions:
 *   - "host order" means the byte order of the CPU; addresses are always in network order.
 *   - A zero in any configuration field means its documented default, so that the object works
 *     when it is loaded by iproute2 alone, with every map zeroed.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <linux/types.h>

/*
 * The meaning of the maps' contents, beyond what their BTF layout shows. Bump it in the commit that
 * changes what a field means at the same size (a state word's encoding, a flag's sense): pins record
 * it with the layout hash of the object's BTF, and a control plane refuses to adopt pins of another
 * ABI (docs/errors.md, pins_abi_mismatch) instead of reading old state with new meaning.
 */
enum sl_abi {
	SL_ABI_VERSION = 5, /* 2: token/gcra words in quanta of 2^-shift ns; sliding 16|24|24.
	                     * 3: compact state (8-byte IPv4 keys, rate_limit_map6 for IPv6, a 16-byte
	                     * value with one word, the byte dimension a key of its own); stats_map
	                     * holds each rule's per-CPU context (struct sl_rule_cpu).
	                     * 4: global rules (SL_RF_GLOBAL): sl_fleet_cand, sl_fleet_grant.
	                     * 5: a blocked key's word holds the block's end (ns) */
};

/* Algorithms. 0 selects the default (fixed window), as does any unknown value. */
enum sl_alg {
	SL_ALG_DEFAULT = 0,
	SL_ALG_FIXED   = 1, /* fixed window: at most budget per window                        */
	SL_ALG_SLIDING = 2, /* two-window weighted counter                                     */
	SL_ALG_TOKEN   = 3, /* token bucket, strict: the whole packet must fit in the bucket   */
	SL_ALG_GCRA    = 4, /* generic cell rate algorithm: conforming if the backlog fits     */
	SL_ALG_MAX     = 5,
};

/* What happens to a packet over its rule's limit. */
enum sl_action {
	SL_ACT_DROP   = 0, /* default */
	SL_ACT_DRYRUN = 1, /* count as would-drop, pass */
	SL_ACT_BLOCK  = 2, /* drop, and drop every packet of the key for block_ms without charging it */
};

/*
 * Why a packet got its verdict. Counted per rule (stats_map[rule id]) or, for reasons decided
 * before classification, in the global slot (stats_map[max_rules]).
 */
enum sl_reason {
	SL_R_PASS       = 0,  /* pass: within the rule's limit                                  */
	SL_R_LIMIT      = 1,  /* drop: over the rule's limit                                    */
	SL_R_DRYRUN     = 2,  /* pass: over the limit, but the rule is in dry-run               */
	SL_R_BLOCKED    = 3,  /* drop: the key is blocked for a while                           */
	SL_R_CONTENDED  = 4,  /* drop: the state stayed contended past SL_CAS_TRIES retries      */
	SL_R_NOSTATE    = 5,  /* pass: no state could be created (map full of fresh entries)    */
	SL_R_MGMT       = 6,  /* pass: source in the management allowlist (global slot)         */
	SL_R_DENYLIST   = 7,  /* drop: source in the denylist (global slot)                     */
	SL_R_ALLOWLIST  = 8,  /* pass: source in the allowlist (global slot)                    */
	SL_R_NON_IP     = 9,  /* pass: not IPv4/IPv6, e.g. ARP, LLDP (global slot)              */
	SL_R_TRUNCATED  = 10, /* malformed: a header runs past the end of the frame             */
	SL_R_BAD_IPV4   = 11, /* malformed: IPv4 version, IHL or total length inconsistent      */
	SL_R_BAD_IPV6   = 12, /* malformed: IPv6 extension chain longer than SL_MAX_EXT or bad  */
	SL_R_VLAN_DEPTH = 13, /* malformed: more than SL_MAX_VLAN VLAN tags                     */
	SL_R_STALE      = 14, /* counted only: a table entry of another policy version was seen */
	SL_R_AGGREGATE  = 15, /* drop: over the rule's aggregate limit over all its keys         */
	SL_R_PLUGIN     = 16, /* handed to the rule's plugged program, which decides             */
	SL_R_UNMATCHED  = 17, /* pass: no rule applies in this direction (the default rule is
	                       * ingress-only unless it says otherwise) (global slot)            */
	SL_R_UNTRACKED  = 18, /* pass: a new key while this CPU was over its rate of new states
	                       * (sl_config.new_states_per_sec); within the rule's budget for
	                       * untracked keys (one key's limit per CPU) and its aggregate      */
	SL_R_TINY_FRAG  = 19, /* drop: a first fragment that does not hold its whole L4 header  */
	SL_R_EXT_CHAIN  = 20, /* counted only (global slot): an IPv6 extension chain longer than
	                       * SL_MAX_EXT; charged to the strictest rule of its source         */
	SL_R_FRAG_ORPHAN = 21, /* counted only (global slot): a later fragment whose first fragment
	                       * was not seen; charged to the strictest rule of its source       */
	SL_R_UNCERTAIN  = 22, /* counted only (global slot): a packet whose source is known but not
	                       * every match field (malformed, a later fragment): charged to the
	                       * strictest rule it could match (sl_rule.strict_rank)              */
	SL_R_UNTRACKED_OVER = 23, /* drop: a new key while this CPU was over its rate of new states,
	                       * past the rule's budget for untracked keys (one key's limit per
	                       * CPU, shared by every untracked source)                          */
	SL_R_PENALTY_FULL = 24, /* counted only (global slot): a block or an over-limit state could
	                       * not be recorded in sl_penalty (full); it lasts while the key's
	                       * state does                                                      */
	SL_R_GLOBAL     = 25, /* drop: a global rule's key is past this node's share of the fleet's
	                       * limit (its grant in sl_fleet_grant, docs/fleet.md)              */
	SL_R_MAX        = 32,
};

enum sl_verdict {
	SL_V_PASS = 0,
	SL_V_DROP = 1,
	SL_V_MAX  = 2,
};

/* Rule flags (sl_rule.flags). */
enum sl_rule_flags {
	SL_RF_NO_PKT_LIMIT = 1 << 0, /* no packets-per-second limit (a bytes-only rule)    */
	SL_RF_PER_RULE     = 1 << 1, /* one bucket for the whole rule instead of per key   */
	SL_RF_MATCH_SYN    = 1 << 2, /* match only TCP segments with SYN set and ACK clear  */
	SL_RF_KEY_DST      = 1 << 3, /* key by destination address instead of source       */
	SL_RF_NO_AGG       = 1 << 4, /* no aggregate limit over the rule's keys            */
	SL_RF_ALONE        = 1 << 5, /* written by the control plane on the default rule (slot 0) of a
	                              * half with no other rule and no list, source-CIDR or GeoIP
	                              * entries: a packet whose fields are all known is this rule's,
	                              * and the half's header need not be read                    */
	SL_RF_GLOBAL       = 1 << 6, /* scope global: while the key has a live grant in sl_fleet_grant
	                              * (written by the agent from the fleet's exchange) the grant
	                              * decides; without one, the rule's own limit (its local:
	                              * fallback). Either way its passes are counted in sl_fleet_cand */
	/* The period of pkt.rate and byt.rate (struct sl_limit): a second unless one of these says a
	 * minute or an hour (both set: an hour). The aggregate (agg) is always per second. */
	SL_RF_PKT_PER_MIN  = 1 << 8,
	SL_RF_PKT_PER_HOUR = 1 << 9,
	SL_RF_BYT_PER_MIN  = 1 << 10,
	SL_RF_BYT_PER_HOUR = 1 << 11,
};

/* Directions a rule applies in (sl_rule.dir); 0 means ingress only. */
enum sl_dir {
	SL_DIR_INGRESS = 1 << 0, /* XDP */
	SL_DIR_EGRESS  = 1 << 1, /* tc clsact egress */
};

/* Management / deny / allow list membership (effective: inherited from covering prefixes). */
enum sl_list_flags {
	SL_LIST_MGMT  = 1 << 0,
	SL_LIST_DENY  = 1 << 1,
	SL_LIST_ALLOW = 1 << 2,
};

/* Limits of the data path, documented in docs/policy.md. */
enum sl_bounds {
	SL_MAX_VLAN  = 4,  /* VLAN tags walked (0x8100, 0x88a8, 0x9100); more: VLAN_DEPTH */
	SL_MAX_EXT   = 8,  /* IPv6 extension headers walked; a longer chain: EXT_CHAIN */
	SL_MAX_CANDS = 15, /* rules in one candidate list                        */
	SL_CAS_TRIES = 8,  /* compare-and-exchange attempts before SL_R_CONTENDED */
	SL_LEASE_DIV = 8,  /* a per-rule bucket's lease: its burst / (SL_LEASE_DIV x CPUs)  */
	SL_PEN_BITS_LOG2 = 20, /* bits of the filter in front of sl_penalty (128 KiB)     */
	SL_PLUGIN_SLOTS = 16, /* slots of each plugin program array               */
	SL_TIER_DEFAULT = 255, /* the tier of a source no GeoIP entry covers        */
	SL_COARSE_MIN_MS = 250, /* a rule whose time scale is shorter reads the fine clock */
	SL_SEEN_SHIFT = 24,  /* sl_state.seen counts in units of 2^24 ns (16.8 ms)                 */
	SL_PEN_RETRY_NS = 10000000, /* after a failed write to a full sl_penalty, a CPU writes no
	                             * record for 10 ms (sl_rule_cpu.pen_retry of the global slot) */
};

/* Documented defaults for zero fields. */
enum sl_defaults {
	SL_DEFAULT_PPS       = 1000,   /* packets per second of a rule with pkt.rate = 0 */
	SL_DEFAULT_WINDOW_MS = 1000,   /* window of the window algorithms                */
	SL_DEFAULT_KEY_V4    = 32,     /* IPv4 key prefix length                         */
	SL_DEFAULT_KEY_V6    = 64,     /* IPv6 key prefix length                         */
	SL_DEFAULT_MAX_RULES = 1024,   /* rule slots per policy half                     */
	SL_DEFAULT_STATE_MAX = 100000, /* entries of rate_limit_map                      */
	SL_DEFAULT_EVENTS    = 100,    /* drop events per second per CPU                 */
	SL_DEFAULT_AGG_KEYS  = 16384,  /* aggregate limit = this many keys at their limit */
	SL_DEFAULT_NEW_STATES = 100000, /* new states per second per CPU before new keys go untracked */
	SL_DEFAULT_PENALTY_MAX = 65536, /* entries of sl_penalty (blocked and over-limit keys)      */
	SL_DEFAULT_LIST_MAX  = 65536,  /* list entries per policy half (sl_lists holds two halves) */
};

/* One dimension of a limit (packets or bytes). */
struct sl_limit {
	__u64 rate;   /* units per period (a second, or sl_rule.flags' SL_RF_*_PER_*), 1 .. 2^40;
	               * packets: 0 = SL_DEFAULT_PPS; bytes: 0 = no byte limit                     */
	__u64 burst;  /* units; 0 = default: one period's worth for token/gcra, none for the windows  */
};

/*
 * A rule, as stored in sl_rules[half * max_rules + slot]. The data path reads it after
 * classification. Match fields are ANDed; a zero match field matches everything.
 */
struct sl_rule {
	__u32 version;      /* policy version that wrote this entry; must equal config.version      */
	__u16 id;           /* stable rule id: index of its counters in stats_map, part of state keys */
	__u8  alg;          /* enum sl_alg                                                          */
	__u8  action;       /* enum sl_action                                                       */
	__u32 flags;        /* SL_RF_*                                                              */
	__u32 epoch;        /* state written under another epoch is re-initialised on its next packet */
	__u8  key_v4;       /* IPv4 key prefix length, 1..32; 0 = 32                                */
	__u8  key_v6;       /* IPv6 key prefix length, 1..128; 0 = 64                               */
	__u8  proto;        /* match: IPPROTO_*; 0 = any                                            */
	__u8  tier;         /* match: GeoIP tier of the source (sl_geo), SL_TIER_DEFAULT for sources
	                     * in no listed tier; 0 = any                                          */
	__u16 dport_lo;     /* match: destination port range, host order; 0,0 = any                 */
	__u16 dport_hi;
	__u32 window_ms;    /* window of fixed/sliding, milliseconds, up to 1 h; 0 = 1000            */
	__u32 block_ms;     /* SL_ACT_BLOCK: how long a key stays blocked, milliseconds              */
	__u8  dir;          /* match: enum sl_dir bits; 0 = ingress only                            */
	__u8  plugin;       /* 1 + slot of the plugin program that decides this rule's packets; 0 = none */
	__u8  dst_family;   /* match: destination prefix family (4, 6); 0 = any destination        */
	__u8  dst_plen;     /* match: destination prefix length                                     */
	__u8  dst_addr[16]; /* match: destination prefix, network order, masked                     */
	__u32 strict_rank;  /* for a packet whose match fields are not all known (a later fragment, an
	                     * IPv6 chain past the walk, an unreadable L4 header): of the rules it could
	                     * match, the one with the lowest rank decides. Written by user space (the
	                     * packets per second a key may send, so lower is stricter); 0 = the
	                     * highest rank (what iproute2 alone loads: only the default rule) */
	struct sl_limit pkt;  /* packets per second and packet burst */
	struct sl_limit byt;  /* bytes per second and byte burst (frame bytes, without FCS) */
	struct sl_limit agg;  /* packets per second over all keys; 0 = pkt rate x SL_DEFAULT_AGG_KEYS */
};

/* An ordered list of rule slots; the first whose match fields fit the packet decides. */
struct sl_cands {
	__u32 version;               /* policy version that wrote this list */
	__u16 n;                     /* entries used in slot[], 0..SL_MAX_CANDS */
	__u16 slot[SL_MAX_CANDS];    /* rule slots within the half */
};

/* Per-half policy header: sl_policy[half]. Everything a policy change writes is in its half. */
struct sl_half {
	__u32 version;        /* policy version of this half                                     */
	__u32 n_cidr;         /* entries in sl_cidr for this half; 0 skips the LPM lookup        */
	struct sl_cands any;  /* candidates for a source that no CIDR entry covers                */
	__u32 n_geo;          /* entries in sl_geo for this half; 0 skips the GeoIP lookup       */
	__u32 geo_version;    /* version that wrote this half's sl_geo entries (they may be older
	                       * than the policy: an unchanged dataset is not rewritten)          */
	__u32 n_lists;        /* entries in sl_lists for this half; 0 skips the list lookup      */
	__u64 geo_hash;       /* identity of the dataset in this half (user space's, opaque here) */
	__u8  malformed_drop; /* 0 = pass malformed packets (default), 1 = drop them             */
	__u8  pad[7];
};

/* Value of sl_geo: the GeoIP tier of a source prefix (country -> tier, compiled in user space). */
struct sl_geo_val {
	__u32 version;        /* policy version that wrote this entry */
	__u8  tier;           /* 1.. ; 0 would mean "the default tier" and is never stored */
	__u8  pad[3];
};

/*
 * One dimension (packets or bytes) of a rule's limit, zero fields resolved to their defaults, with
 * the values the algorithm would otherwise derive on every packet (each a division).
 */
struct sl_params {
	__u32 alg;        /* enum sl_alg, resolved (never SL_ALG_DEFAULT) */
	__u32 shift;      /* token, gcra: time is kept in quanta of 2^-shift ns (limiters.h); else 0 */
	__u64 rate;       /* units per period, > 0 */
	__u64 burst;      /* units */
	__u64 stale;      /* token, gcra: the largest backlog (quanta) a live key can have; a word
	                   * farther ahead of now is a full bucket (limiters.h, sl_backlog) */
	__u64 window_ns;  /* fixed, sliding */
	__u64 limit;      /* fixed, sliding: units a window may hold (floor(rate x window / period) +
	                   * burst, capped to the word's count field); token: bucket depth, quanta
	                   * (burst x inc1); gcra: tau, quanta ((burst - 1) x inc1) */
	__u64 inc1;       /* token, gcra: quanta one unit costs, ceil(period x 2^shift / rate); windows: 0 */
};

/*
 * What the data path derives from a rule, per CPU (struct sl_rule_cpu, in stats_map[rule id]).
 * Valid while the rule's version matches (every policy change writes a new version), so a hit
 * needs no division and a change of policy is seen on the next packet. Only its CPU writes it.
 */
struct sl_derived {
	__u32 version;        /* sl_rule.version derived from */
	__u16 id;             /* sl_rule.id derived from */
	__u8  valid;          /* 1 once filled */
	__u8  coarse;         /* 1: the rule reads the coarse clock (see docs/datapath.md, Time) */
	__u8  has_pkt;        /* a packet limit applies */
	__u8  has_byt;        /* a byte limit applies */
	__u8  has_agg;        /* an aggregate limit applies */
	__u8  simple;         /* a packet limit alone, no lease: one word, charged inline */
	__u8  pad[4];
	__u64 agg_interval;   /* aggregate: ns between packets of this CPU's share */
	__u64 agg_tau;        /* aggregate: tolerance, ns (burst - 1 intervals) */
	__u64 unt_interval;   /* untracked budget: ns between packets (one key's packet rate) */
	__u64 unt_tau;        /* untracked budget: tolerance, ns (one key's burst - 1 intervals) */
	__u64 lease_pkt;      /* per-rule bucket: packets each CPU takes from it at once; 0 = none */
	__u64 lease_byt;      /* per-rule bucket: bytes each CPU takes with them (0: no byte limit) */
	struct sl_params pkt;
	struct sl_params byt;
};

/*
 * A CPU's lease on a per-rule bucket (struct sl_rule_cpu, in stats_map[rule id]). Units this CPU took from the
 * rule's one bucket (charged there by one compare-and-exchange) and spends without atomics, so that
 * every CPU does not compare-and-exchange one cache line per packet (docs/datapath.md, Per-rule
 * buckets).
 */
struct sl_lease {
	__u64 pkts;           /* packets left */
	__u64 byts;           /* bytes left */
	__u64 expires;        /* ns: the window forms' lease ends with the window it was taken in */
	__u32 version;        /* sl_rule.version it was taken under; another: void */
	__u32 epoch;          /* sl_state.epoch of the bucket it was taken from */
};

/* Per-CPU aggregate limiter of a rule (struct sl_rule_cpu, in stats_map[rule id]). */
struct sl_agg_state {
	__u64 tat;            /* GCRA theoretical arrival time for this CPU's share, ns */
	__u32 epoch;          /* sl_rule.epoch that wrote it (both times) */
	__u32 pad;
	__u64 utat;           /* GCRA time of this CPU's budget for untracked keys, ns */
};

/*
 * LPM trie key of sl_cidr (rules by source) and sl_lists. The trie compares bits from the start
 * of the data: half and family are always matched in full, so prefixlen = 32 + address bits.
 */
struct sl_lpm_key {
	__u32 prefixlen;  /* 32 + prefix length of addr */
	__u8  half;       /* policy half (0 or 1) */
	__u8  family;     /* 4 or 6 */
	__u8  pad[2];
	__u8  addr[16];   /* network order; IPv4 in the first 4 bytes, the rest zero */
};

struct sl_list_val {
	__u32 flags;      /* SL_LIST_*, including those of every covering prefix */
};

/* Key of sl_frags: one fragmented datagram (RFC 791 / 8200: source, destination, id, protocol). */
struct sl_frag_key {
	__u8  family;     /* 4 or 6 */
	__u8  proto;      /* the datagram's L4 protocol */
	__u8  pad[2];
	__u32 id;         /* IPv4 id (16 bits) or IPv6 fragment id, as on the wire */
	__u8  src[16];    /* network order */
	__u8  dst[16];
};

/* Value of sl_frags: where the datagram's first fragment was decided. */
struct sl_frag_val {
	__u32 version;    /* policy version that decided it; another version: not used */
	__u16 slot;       /* rule slot in that version's half */
	__u16 pad;
};

/* Global settings: config_map[0]. */
struct sl_config {
	__u32 version;        /* active policy version; the live half is (version & 1). The lists
	                       * and the malformed verdict are part of the half (struct sl_half), so
	                       * that one flip changes rules, lists and verdict together          */
	__u8  events_off;     /* non-zero: emit no drop events                                   */
	__u8  pad[3];
	__u32 events_per_sec; /* drop events each CPU may emit per second; 0 = SL_DEFAULT_EVENTS */
	__u32 new_states_per_sec; /* rate_limit_map insertions each CPU may make per second (burst: one
	                       * second's worth); past it, a new key of a rule with an aggregate limit
	                       * passes untracked (SL_R_UNTRACKED) within that limit.
	                       * 0 = SL_DEFAULT_NEW_STATES; above 10^9 (0xffffffff): no cap */
};

/* A sampled drop (or would-drop) event, from the sl_events ring buffer. */
struct sl_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC, ns: the clock the packet was decided with (fine or coarse) */
	__u8  addr[16];   /* source address, network order; IPv4 in the first 4 bytes */
	__u16 rule_id;    /* rule that decided, or the global slot for list and malformed drops */
	__u8  family;     /* 4 or 6; 0 when not IP */
	__u8  reason;     /* enum sl_reason */
	__u8  verdict;    /* enum sl_verdict */
	__u8  proto;      /* IPPROTO_*, 0 when unknown */
	__u16 dport;      /* host order */
	__u32 len;        /* frame bytes */
	__u32 pad;
};

/* Per-CPU state of the event sampler: sl_event_budget[0]. */
struct sl_event_budget {
	__u64 tat;        /* GCRA theoretical arrival time of the next event, ns */
	__u64 suppressed; /* events not emitted because the budget was spent */
	__u64 lost;       /* events not emitted because the ring buffer was full */
};

/* Flags of a state key (sl_key.flags, sl_key6.flags). */
enum sl_key_flags {
	SL_KF_PER_RULE = 1 << 0, /* one bucket for the whole rule: no address (rate_limit_map only)   */
	SL_KF_BYTES    = 1 << 1, /* the byte dimension's word of the key (a rule with a packet and a
	                          * byte limit keeps one entry for each)                           */
	SL_KF_V4       = 1 << 2, /* sl_penalty: an IPv4 key (its address in addr[0..3]) or a per-rule
	                          * bucket (with SL_KF_PER_RULE), both of which rate_limit_map holds */
};

/*
 * Key of rate_limit_map: one limiter state per (rule, IPv4 source prefix), or the rule's one bucket
 * (SL_KF_PER_RULE, address and plen 0). 8 bytes: the hash of a lookup covers two words.
 */
struct sl_key {
	__u16 rule_id;    /* sl_rule.id */
	__u8  plen;       /* prefix length the address was masked to (0 for a per-rule bucket) */
	__u8  flags;      /* SL_KF_* */
	__u8  addr[4];    /* IPv4, network order, masked to plen */
};

/*
 * Key of rate_limit_map6 (one limiter state per rule and IPv6 source prefix) and of sl_penalty (a
 * key of either map: SL_KF_V4 for one of rate_limit_map's). The two families never share a map
 * entry, so an IPv4 key and an IPv6 key never share state.
 */
struct sl_key6 {
	__u16 rule_id;    /* sl_rule.id */
	__u8  plen;       /* prefix length the address was masked to */
	__u8  flags;      /* SL_KF_* */
	__u8  addr[16];   /* network order, masked to plen (IPv4 in sl_penalty: the first 4 bytes) */
};

/* sl_state.drops: a count in the high 30 bits, two flags in the low ones. */
enum sl_state_bits {
	SL_SB_PENALIZED = 1 << 0, /* sl_penalty holds this key's state as of its last drop (cleared by
	                           * its next pass, so a key at its limit writes it once per pass) */
	SL_SB_BLOCKED   = 1 << 1, /* the key was blocked (action block): until the time its record in
	                           * sl_penalty says, which its word holds meanwhile; cleared by its
	                           * first packet after that                                         */
	SL_SB_DROP_ONE  = 1 << 2, /* one drop in the count                                          */
	SL_SB_FLAGS     = 3,
};

/*
 * Value of rate_limit_map and rate_limit_map6 (16 bytes). word holds one algorithm's whole state in
 * 64 bits, committed with a compare-and-exchange, so no lock is needed (LRU maps refuse
 * bpf_spin_lock). Its dimension is the key's: packets (or, for a rule without a packet limit,
 * bytes), or bytes with SL_KF_BYTES.
 *   fixed:   bits 63..32 window number (now / window), bits 31..0 units used in that window
 *   sliding: bits 63..48 window number mod 2^16, 47..24 previous window's units, 23..0 current's
 *   token:   the time at which the bucket is full again, in quanta of 2^-shift ns, modulo 2^64
 *            (sl_params.shift; 0: a fresh state, a full bucket)
 *   gcra:    the theoretical arrival time, in the same quanta
 *   blocked: with SL_SB_BLOCKED, in every form, the block's end in ns (a blocked key is not
 *            charged; its word as it was is in its sl_penalty record, back when the block ends)
 * drops, epoch and seen are kept in the packet entry only (an SL_KF_BYTES entry has epoch alone).
 */
struct sl_state {
	__u64 word;           /* the dimension's algorithm word */
	__u32 drops;          /* packets of this key dropped by its limit, x SL_SB_DROP_ONE
	                       * (atomically added, saturating at 2^30 - 2^14), | SL_SB_* flags
	                       * (atomically or-ed and and-ed) */
	__u16 epoch;          /* low 16 bits of the sl_rule.epoch it was (re)initialised under; the
	                       * epoch changes with the algorithm, so that says which wrote word */
	__u16 seen;           /* kernel clock of its last packet, in units of 2^SL_SEEN_SHIFT ns
	                       * (16.8 ms), modulo 2^16 (18.3 minutes); no algorithm reads it */
};

/*
 * Value of sl_penalty (a hash map, not an LRU: only keys that were dropped by their limit or
 * blocked enter it, so a flood of new sources cannot evict them): a key's state as of its last
 * drop. When the key's entry in rate_limit_map is evicted (a flood of new keys churns that LRU),
 * its next packet restores this state instead of starting with a full bucket, so a key regains by
 * eviction nothing that time would not have given it, and a block lasts its whole duration.
 */
struct sl_penalty {
	__u64 pkt;            /* the packet entry's word at the drop */
	__u64 byt;            /* the byte entry's word at the drop (SL_KF_BYTES) */
	__u64 blocked_until;  /* ns; the key is blocked while now < blocked_until (its sl_state says
	                       * SL_SB_BLOCKED) */
	__u64 until;          /* ns: from then on a fresh state is as strict; the entry may go */
	__u16 epoch;          /* sl_state.epoch at the drop */
	__u8  pad[6];
};

/* Per-CPU counters: stats_map[rule id], and stats_map[max_rules] for the global slot. */
struct sl_counters {
	__u64 packets[SL_V_MAX];          /* by verdict: pass, drop */
	__u64 bytes[SL_V_MAX];
	__u64 reason_packets[SL_R_MAX];
	__u64 reason_bytes[SL_R_MAX];
	__u64 new_states;                 /* rate_limit_map insertions (an LRU evicts silently) */
};

/*
 * Value of stats_map: everything the data path keeps per rule and CPU, so that a packet makes one
 * lookup for all of it. The counters come first: stats_map[id] reads as the counters it always
 * held (bpftool shows the rest after them).
 */
struct sl_rule_cpu {
	struct sl_counters c;     /* this rule's counters (the global slot's, at max_rules)          */
	struct sl_agg_state agg;  /* the aggregate limit's and the untracked budget's GCRA times      */
	struct sl_lease lease;    /* a per-rule bucket's lease                                        */
	struct sl_derived d;      /* what the rule's limits imply, derived once per policy version    */
	__u64 pen_retry;          /* the global slot's: ns before which this CPU writes no sl_penalty
	                           * record (the store was full at its last try); 0 in rule slots    */
};

/*
 * Value of sl_fleet_cand: a key of a global rule (SL_RF_GLOBAL) as this node's data path saw it,
 * inserted by the data path on the key's first packet, so that the agent reads the candidates of
 * each exchange from this small map instead of walking the state maps. Both counts only grow
 * (atomic adds); the agent takes differences between its rounds.
 */
struct sl_fleet_cand {
	__u64 used;           /* packets passed (under a grant or the local fallback) */
	__u64 seen;           /* packets that met the rule: passed or dropped (this node's demand) */
};

/*
 * Value of sl_fleet_grant, written by the agent each exchange round: how far this node may let the
 * key's sl_fleet_cand.used go, and until when that holds. Past `until` (the agent or Redis stopped
 * answering) the rule's own limit (the local: fallback) decides again, without the agent.
 */
struct sl_fleet_grant {
	__u64 cap;            /* packets: pass while used + cost <= cap */
	__u64 until;          /* CLOCK_MONOTONIC ns: the grant holds while now < until */
};

/*
 * What made the pinned maps: sl_abi_map[0], written by the control plane when it creates them and
 * compared when it adopts them. Zero (an object loaded by iproute2 alone) means "unknown".
 */
struct sl_abi_stamp {
	__u64 layout_hash;   /* first 8 bytes of the SHA-256 of the maps' BTF layout (user space's) */
	__u32 abi_version;   /* SL_ABI_VERSION of the object that created the maps */
	__u32 pad;
};

/* Test build only: sl_test[0] supplies the clock and a key salt. */
struct sl_test_ctl {
	__u64 now_ns;     /* the data path's clock; 0 = the kernel clock the production build reads */
	__u32 salt_keys;  /* non-zero: XOR a per-CPU sequence into each key's address (new source per run) */
	__u32 salt_mod;   /* non-zero: the sequence runs modulo this, so each CPU cycles over that many keys */
	__u32 cas_fail;   /* non-zero: every compare-and-exchange on a key's state fails (contention) */
	__u32 pad;
};

/*
 * Not used by the data path: a .rodata variable whose type names every shared enum (and the event
 * record), so that they all reach the object's BTF and src/generated/ can be generated from it.
 */
struct sl_btf_anchor {
	enum sl_abi abi;
	enum sl_alg alg;
	enum sl_action action;
	enum sl_reason reason;
	enum sl_verdict verdict;
	enum sl_rule_flags rule_flags;
	enum sl_list_flags list_flags;
	enum sl_bounds bounds;
	enum sl_defaults defaults;
	enum sl_dir dir;
	enum sl_key_flags key_flags;
	enum sl_state_bits state_bits;
	struct sl_event event;  /* reaches user space through a ring buffer, not a typed map */
};

#endif /* SLUICE_H */
