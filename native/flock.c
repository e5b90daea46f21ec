// SPDX-License-Identifier: GPL-2.0-only
/*
 * flock(2) on a file descriptor, which Node lacks. Mechanism only: the lock protocol (what is
 * locked, for how long, how to wait) lives in src/agent/state.ts.
 */
#include "common.h"

#include <errno.h>
#include <sys/file.h>

/* flock(fd, op) -> true, or false when op has LOCK_NB and the lock is held elsewhere */
static napi_value sn_flock(napi_env env, napi_callback_info info)
{
	int32_t fd, op;

	SN_ARGS(env, info, 2);
	if (!sn_get_i32(env, argv[0], "fd", &fd) || !sn_get_i32(env, argv[1], "op", &op))
		return NULL;
	for (;;) {
		if (flock(fd, op) == 0)
			return sn_bool(env, true);
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK && (op & LOCK_NB))
			return sn_bool(env, false);
		return sn_throw_errno(env, "flock", errno);
	}
}

void sn_init_flock(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "flock", sn_flock },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
