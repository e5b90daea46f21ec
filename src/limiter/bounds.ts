/**
 * Bounds of a rule that bpf/sluice.h does not state as an enum (the generated Bounds and Defaults
 * hold those): stated once here, for the rule model (./rule.ts), the policy compiler (./policy.ts)
 * and the unit parsers (./units.ts), which import nothing else of each other for them.
 */

/** The largest rate (packets or bytes per period) the data path's arithmetic takes: 2^40. */
export const MAX_RATE = 2 ** 40;
/** A full-size Ethernet frame without FCS: a byte limit must let one through. */
export const FULL_FRAME_BYTES = 1514;
