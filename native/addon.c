// SPDX-License-Identifier: GPL-2.0-only
/*
 * sluice_native: a thin N-API addon over the system libbpf.
 *
 * Parts:  object.c   bpf_object open / inspect / adjust / load (async)
 *         syscall.c  fd-level bpf(2) wrappers: maps, pins, info, ids, links
 *         testrun.c  BPF_PROG_TEST_RUN on a worker thread, optionally pinned to a CPU
 *         net.c      XDP (link and netlink), tc, interface names, network namespaces
 *         lab.c      the lab generator: live-frame runs in a namespace, paced packet socket, GRO
 *         ringbuf.c  BPF ring buffer consumer, polled on a worker thread
 *         flock.c    flock(2) on a file descriptor (Node has none)
 *         notify.c   a datagram to a Unix socket (sd_notify's $NOTIFY_SOCKET; Node has none)
 * Nothing but src/ebpf/native.ts imports this module.
 */
#include "common.h"

#include <bpf/libbpf.h>

static napi_value sn_libbpf_version(napi_env env, napi_callback_info info)
{
	return sn_str(env, libbpf_version_string());
}

static napi_value init(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "libbpfVersion", sn_libbpf_version },
	};

	/* libbpf >= 1.0 behaves this way by default; be explicit about the error convention. */
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	sn_log_install();
	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
	sn_init_object(env, exports);
	sn_init_syscall(env, exports);
	sn_init_testrun(env, exports);
	sn_init_net(env, exports);
	sn_init_lab(env, exports);
	sn_init_ringbuf(env, exports);
	sn_init_flock(env, exports);
	sn_init_notify(env, exports);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
