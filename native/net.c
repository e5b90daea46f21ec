// SPDX-License-Identifier: GPL-2.0-only
/*
 * Interface-bound calls: XDP by bpf_link and by netlink, tc clsact filters,
 * interface names, and network namespaces.
 *
 * An ifindex means something only inside one network namespace, and the
 * kernel resolves it in the namespace of the calling thread. Every call here
 * therefore takes an optional namespace path (last argument): the calling
 * thread enters it, makes the call and returns before any JS runs again.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/* Parse the optional netns path and enter it; on failure an exception is pending. */
static bool enter_netns(napi_env env, napi_value v, int *saved)
{
	char *path = NULL;
	int err;

	*saved = -1;
	if (!sn_opt_string(env, v, "netns", &path))
		return false;
	err = sn_netns_enter(path, saved);
	if (err) {
		napi_value e = sn_errno_error(env, "setns", err, path, NULL);

		if (e)
			napi_throw(env, e);
	}
	free(path);
	return err == 0;
}

static bool get_ifindex(napi_env env, napi_value v, int *ifindex)
{
	int32_t x;

	if (!sn_get_i32(env, v, "ifindex", &x))
		return false;
	if (x <= 0) {
		sn_throw_type(env, "ifindex must be a positive integer, got %d", x);
		return false;
	}
	*ifindex = x;
	return true;
}

/* -------------------------------------------------------------- bpf_link */

/* linkCreate(progFd, targetFd, attachType, flags = 0, netns?) -> link fd.
 * For BPF_XDP the target is an ifindex and flags are XDP_FLAGS_* (SKB_MODE=2, DRV_MODE=4). */
static napi_value link_create(napi_env env, napi_callback_info info)
{
	uint32_t type, flags = 0;
	int32_t prog, target;
	int saved, fd;

	SN_ARGS(env, info, 5);
	if (!sn_get_i32(env, argv[0], "progFd", &prog) ||
	    !sn_get_i32(env, argv[1], "targetFd", &target) ||
	    !sn_get_u32(env, argv[2], "attachType", &type) ||
	    !sn_opt_u32(env, argv[3], "flags", &flags))
		return NULL;
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
	if (!enter_netns(env, argv[4], &saved))
		return NULL;
	sn_log_begin();
	fd = bpf_link_create(prog, target, (enum bpf_attach_type)type, &opts);
	sn_netns_leave(saved);
	if (fd < 0)
		return sn_throw_errno(env, "bpf_link_create", -fd);
	return sn_num(env, fd);
}

/* ------------------------------------------------------------ netlink XDP */

/* xdpAttach(ifindex, progFd, flags, oldProgFd = none, netns?) */
static napi_value xdp_attach(napi_env env, napi_callback_info info)
{
	int ifindex, prog, old = -1, saved, err;
	uint32_t flags;

	SN_ARGS(env, info, 5);
	if (!get_ifindex(env, argv[0], &ifindex) || !sn_get_i32(env, argv[1], "progFd", &prog) ||
	    !sn_get_u32(env, argv[2], "flags", &flags) ||
	    !sn_opt_i32(env, argv[3], "oldProgFd", &old))
		return NULL;
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old);
	if (!enter_netns(env, argv[4], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_xdp_attach(ifindex, prog, flags, old >= 0 ? &opts : NULL);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_xdp_attach", -err);
	return sn_undefined(env);
}

/* xdpDetach(ifindex, flags, oldProgFd = none, netns?) */
static napi_value xdp_detach(napi_env env, napi_callback_info info)
{
	int ifindex, old = -1, saved, err;
	uint32_t flags;

	SN_ARGS(env, info, 4);
	if (!get_ifindex(env, argv[0], &ifindex) || !sn_get_u32(env, argv[1], "flags", &flags) ||
	    !sn_opt_i32(env, argv[2], "oldProgFd", &old))
		return NULL;
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old);
	if (!enter_netns(env, argv[3], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_xdp_detach(ifindex, flags, old >= 0 ? &opts : NULL);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_xdp_detach", -err);
	return sn_undefined(env);
}

/* xdpQuery(ifindex, flags = 0, netns?) -> {progId, drvProgId, hwProgId, skbProgId, attachMode}
 * attachMode: XDP_ATTACHED_NONE=0, DRV=1, SKB=2, HW=3, MULTI=4 */
static napi_value xdp_query(napi_env env, napi_callback_info info)
{
	int ifindex, saved, err;
	uint32_t flags = 0;
	napi_value r;

	SN_ARGS(env, info, 3);
	if (!get_ifindex(env, argv[0], &ifindex) || !sn_opt_u32(env, argv[1], "flags", &flags))
		return NULL;
	LIBBPF_OPTS(bpf_xdp_query_opts, opts);
	if (!enter_netns(env, argv[2], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_xdp_query(ifindex, (int)flags, &opts);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_xdp_query", -err);
	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "progId", sn_num(env, opts.prog_id));
	sn_set(env, r, "drvProgId", sn_num(env, opts.drv_prog_id));
	sn_set(env, r, "hwProgId", sn_num(env, opts.hw_prog_id));
	sn_set(env, r, "skbProgId", sn_num(env, opts.skb_prog_id));
	sn_set(env, r, "attachMode", sn_num(env, opts.attach_mode));
	return r;
}

/* -------------------------------------------------------------------- tc */

/* attachPoint: BPF_TC_INGRESS=1, BPF_TC_EGRESS=2 (both=3 for hook create/destroy) */
static bool get_hook(napi_env env, napi_value ifv, napi_value apv, struct bpf_tc_hook *hook)
{
	uint32_t ap;
	int ifindex;

	if (!get_ifindex(env, ifv, &ifindex) || !sn_get_u32(env, apv, "attachPoint", &ap))
		return false;
	if (ap < BPF_TC_INGRESS || ap > (BPF_TC_INGRESS | BPF_TC_EGRESS)) {
		sn_throw_type(env, "attachPoint must be 1 (ingress), 2 (egress) or 3 (both)");
		return false;
	}
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = (enum bpf_tc_attach_point)ap;
	return true;
}

/* tcHookCreate(ifindex, attachPoint, netns?) -> true if created, false if the clsact qdisc existed */
static napi_value tc_hook_create(napi_env env, napi_callback_info info)
{
	struct bpf_tc_hook hook;
	int saved, err;

	SN_ARGS(env, info, 3);
	if (!get_hook(env, argv[0], argv[1], &hook) || !enter_netns(env, argv[2], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_tc_hook_create(&hook);
	sn_netns_leave(saved);
	if (err == -EEXIST)
		return sn_bool(env, false);
	if (err)
		return sn_throw_errno(env, "bpf_tc_hook_create", -err);
	return sn_bool(env, true);
}

/* tcHookDestroy(ifindex, attachPoint, netns?): with 3 removes the whole clsact qdisc,
 * including filters of other tools. The caller decides. */
static napi_value tc_hook_destroy(napi_env env, napi_callback_info info)
{
	struct bpf_tc_hook hook;
	int saved, err;

	SN_ARGS(env, info, 3);
	if (!get_hook(env, argv[0], argv[1], &hook) || !enter_netns(env, argv[2], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_tc_hook_destroy(&hook);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_tc_hook_destroy", -err);
	return sn_undefined(env);
}

static napi_value tc_result(napi_env env, const struct bpf_tc_opts *o)
{
	napi_value r;

	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "handle", sn_num(env, o->handle));
	sn_set(env, r, "priority", sn_num(env, o->priority));
	sn_set(env, r, "progId", sn_num(env, o->prog_id));
	return r;
}

/* tcAttach(ifindex, attachPoint, progFd, {handle, priority, flags}, netns?) -> {handle, priority, progId}
 * flags: BPF_TC_F_REPLACE=1 */
static napi_value tc_attach(napi_env env, napi_callback_info info)
{
	uint32_t handle = 0, prio = 0, flags = 0;
	struct bpf_tc_hook hook;
	int32_t prog;
	int saved, err;

	SN_ARGS(env, info, 5);
	if (!get_hook(env, argv[0], argv[1], &hook) || !sn_get_i32(env, argv[2], "progFd", &prog) ||
	    !sn_opt_u32(env, sn_prop(env, argv[3], "handle"), "handle", &handle) ||
	    !sn_opt_u32(env, sn_prop(env, argv[3], "priority"), "priority", &prio) ||
	    !sn_opt_u32(env, sn_prop(env, argv[3], "flags"), "flags", &flags))
		return NULL;
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog, .handle = handle, .priority = prio,
		    .flags = flags);
	if (!enter_netns(env, argv[4], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_tc_attach(&hook, &opts);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_tc_attach", -err);
	return tc_result(env, &opts);
}

/* tcDetach(ifindex, attachPoint, {handle, priority}, netns?) */
static napi_value tc_detach(napi_env env, napi_callback_info info)
{
	uint32_t handle = 0, prio = 0;
	struct bpf_tc_hook hook;
	int saved, err;

	SN_ARGS(env, info, 4);
	if (!get_hook(env, argv[0], argv[1], &hook) ||
	    !sn_get_u32(env, sn_prop(env, argv[2], "handle"), "handle", &handle) ||
	    !sn_get_u32(env, sn_prop(env, argv[2], "priority"), "priority", &prio))
		return NULL;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = prio);
	if (!enter_netns(env, argv[3], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_tc_detach(&hook, &opts);
	sn_netns_leave(saved);
	if (err)
		return sn_throw_errno(env, "bpf_tc_detach", -err);
	return sn_undefined(env);
}

/* tcQuery(ifindex, attachPoint, {handle, priority}, netns?) -> {handle, priority, progId} | null */
static napi_value tc_query(napi_env env, napi_callback_info info)
{
	uint32_t handle = 0, prio = 0;
	struct bpf_tc_hook hook;
	int saved, err;

	SN_ARGS(env, info, 4);
	if (!get_hook(env, argv[0], argv[1], &hook) ||
	    !sn_get_u32(env, sn_prop(env, argv[2], "handle"), "handle", &handle) ||
	    !sn_get_u32(env, sn_prop(env, argv[2], "priority"), "priority", &prio))
		return NULL;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = prio);
	if (!enter_netns(env, argv[3], &saved))
		return NULL;
	sn_log_begin();
	err = bpf_tc_query(&hook, &opts);
	sn_netns_leave(saved);
	if (err == -ENOENT)
		return sn_null(env);
	if (err)
		return sn_throw_errno(env, "bpf_tc_query", -err);
	return tc_result(env, &opts);
}

/* ------------------------------------------------------------ interfaces */

/* ifNameToIndex(name, netns?) -> ifindex */
static napi_value if_name_to_index(napi_env env, napi_callback_info info)
{
	unsigned int idx;
	int saved, err = 0;
	char *name;

	SN_ARGS(env, info, 2);
	if (!sn_get_string(env, argv[0], "name", &name))
		return NULL;
	if (!enter_netns(env, argv[1], &saved)) {
		free(name);
		return NULL;
	}
	idx = if_nametoindex(name);
	if (!idx)
		err = errno;
	sn_netns_leave(saved);
	if (!idx) {
		napi_value e = sn_errno_error(env, "if_nametoindex", err ? err : ENODEV, name, NULL);

		free(name);
		if (e)
			napi_throw(env, e);
		return NULL;
	}
	free(name);
	return sn_num(env, idx);
}

/* ifIndexToName(ifindex, netns?) -> name */
static napi_value if_index_to_name(napi_env env, napi_callback_info info)
{
	char name[IF_NAMESIZE + 1];
	int ifindex, saved, err = 0;
	char *r;

	SN_ARGS(env, info, 2);
	if (!get_ifindex(env, argv[0], &ifindex) || !enter_netns(env, argv[1], &saved))
		return NULL;
	r = if_indextoname((unsigned int)ifindex, name);
	if (!r)
		err = errno;
	sn_netns_leave(saved);
	if (!r)
		return sn_throw_errno(env, "if_indextoname", err ? err : ENXIO);
	return sn_str(env, name);
}

/* ------------------------------------------------------------------ netns */

/*
 * netnsEnter(path) -> savedFd: move the calling (JS) thread into the network
 * namespace at path. Every call must be paired with netnsReturn(savedFd)
 * before control goes back to the event loop; src/ebpf/netns.ts does that.
 */
static napi_value netns_enter(napi_env env, napi_callback_info info)
{
	int saved;

	SN_ARGS(env, info, 1);
	if (sn_is_nullish(env, argv[0]))
		return sn_throw_type(env, "path must be a string");
	if (!enter_netns(env, argv[0], &saved))
		return NULL;
	return sn_num(env, saved);
}

/* netnsReturn(savedFd): back to the namespace saved by netnsEnter; closes savedFd.
 * Aborts the process if the thread cannot return (it must never keep running elsewhere). */
static napi_value netns_return(napi_env env, napi_callback_info info)
{
	int32_t saved;

	SN_ARGS(env, info, 1);
	if (!sn_get_i32(env, argv[0], "savedFd", &saved))
		return NULL;
	if (saved < 0)
		return sn_throw_type(env, "savedFd must come from netnsEnter");
	sn_netns_leave(saved);
	return sn_undefined(env);
}

void sn_init_net(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "linkCreate", link_create },
		{ "xdpAttach", xdp_attach },
		{ "xdpDetach", xdp_detach },
		{ "xdpQuery", xdp_query },
		{ "tcHookCreate", tc_hook_create },
		{ "tcHookDestroy", tc_hook_destroy },
		{ "tcAttach", tc_attach },
		{ "tcDetach", tc_detach },
		{ "tcQuery", tc_query },
		{ "ifNameToIndex", if_name_to_index },
		{ "ifIndexToName", if_index_to_name },
		{ "netnsEnter", netns_enter },
		{ "netnsReturn", netns_return },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
