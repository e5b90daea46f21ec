// SPDX-License-Identifier: GPL-2.0-only
/*
 * One datagram to a Unix socket, which Node cannot send: what sd_notify(3) does with
 * $NOTIFY_SOCKET. Mechanism only: the address (a path, or an abstract name as bytes starting with
 * NUL) and the message (READY=1 …) are made in src/agent/notify.ts.
 */
#include "common.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* unixDatagramSend(address: Uint8Array, message: Uint8Array) -> bytes sent */
static napi_value sn_unix_dgram_send(napi_env env, napi_callback_info info)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	void *addr, *msg;
	size_t alen, mlen;
	ssize_t n;
	int fd, err;

	SN_ARGS(env, info, 2);
	if (!sn_get_bytes(env, argv[0], "address", &addr, &alen) || !sn_get_bytes(env, argv[1], "message", &msg, &mlen))
		return NULL;
	if (alen == 0 || alen > sizeof(sa.sun_path))
		return sn_throw_type(env, "address must be 1..%zu bytes, got %zu", sizeof(sa.sun_path), alen);
	memcpy(sa.sun_path, addr, alen);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sn_throw_errno(env, "socket", errno);
	do
		n = sendto(fd, msg, mlen, MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + alen));
	while (n < 0 && errno == EINTR);
	err = errno;
	close(fd);
	if (n < 0)
		return sn_throw_errno(env, "sendto", err);
	return sn_num(env, (double)n);
}

void sn_init_notify(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "unixDatagramSend", sn_unix_dgram_send },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
