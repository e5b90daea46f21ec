// SPDX-License-Identifier: GPL-2.0-only
/*
 * BPF ring buffer consumer: ring_buffer__new over a map fd, polled on a worker thread.
 *
 *   ringbufOpen(mapFd) -> handle
 *   ringbufPoll(handle, timeoutMs, maxRecords) -> Promise<Buffer[]>   (one poll at a time)
 *   ringbufClose(handle)
 *
 * Records are copied out in the callback, so JS owns what it receives.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/libbpf.h>

struct sn_ringbuf {
	struct ring_buffer *rb;
	bool busy;    /* a poll owns the ring buffer */
	bool closing; /* closed while a poll ran: freed by the poll */
	/* records of the current poll */
	void **rec;
	size_t *len;
	size_t n, cap, max;
};

static const napi_type_tag rb_tag = { 0x736c75696365ULL, 0x72696e6762756601ULL };

static int on_record(void *ctx, void *data, size_t size)
{
	struct sn_ringbuf *h = ctx;
	void *copy;

	if (h->n >= h->max)
		return 1; /* stop consuming: the rest stays for the next poll */
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		void **rec = realloc(h->rec, cap * sizeof(*rec));
		size_t *len;

		if (!rec)
			return -ENOMEM;
		h->rec = rec;
		len = realloc(h->len, cap * sizeof(*len));
		if (!len)
			return -ENOMEM;
		h->len = len;
		h->cap = cap;
	}
	copy = malloc(size ? size : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, data, size);
	h->rec[h->n] = copy;
	h->len[h->n] = size;
	h->n++;
	return 0;
}

static void rb_free(struct sn_ringbuf *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->rec[i]);
	free(h->rec);
	free(h->len);
	if (h->rb)
		ring_buffer__free(h->rb);
	free(h);
}

static struct sn_ringbuf *get_rb(napi_env env, napi_value v)
{
	struct sn_ringbuf *h = NULL;
	bool ok = false;

	if (napi_check_object_type_tag(env, v, &rb_tag, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, v, (void **)&h) != napi_ok || !h) {
		sn_throw_type(env, "expected a ring buffer handle");
		return NULL;
	}
	if (!h->rb) {
		sn_throw_errno(env, "ring_buffer (closed)", EBADF);
		return NULL;
	}
	return h;
}

static void rb_finalize(napi_env env, void *data, void *hint)
{
	struct sn_ringbuf *h = data;

	if (h->busy)
		h->closing = true; /* the running poll frees it */
	else
		rb_free(h);
}

static napi_value ringbuf_open(napi_env env, napi_callback_info info)
{
	struct sn_ringbuf *h;
	napi_value ext;
	int32_t fd;

	SN_ARGS(env, info, 1);
	if (!sn_get_i32(env, argv[0], "mapFd", &fd))
		return NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return sn_throw_errno(env, "calloc", ENOMEM);
	sn_log_begin();
	h->rb = ring_buffer__new(fd, on_record, h, NULL);
	if (!h->rb) {
		int err = errno ? errno : EINVAL;

		free(h);
		return sn_throw_errno(env, "ring_buffer__new", err);
	}
	SN_NAPI(env, napi_create_external(env, h, rb_finalize, NULL, &ext));
	SN_NAPI(env, napi_type_tag_object(env, ext, &rb_tag));
	return ext;
}

struct poll_work {
	napi_async_work work;
	napi_deferred deferred;
	napi_ref ref;
	struct sn_ringbuf *h;
	int timeout_ms;
	int err;
};

static void poll_execute(napi_env env, void *data)
{
	struct poll_work *w = data;
	int n = ring_buffer__poll(w->h->rb, w->timeout_ms);

	/* EINTR: a signal arrived; the records consumed so far are returned. */
	if (n < 0 && n != -EINTR)
		w->err = -n;
}

static void poll_complete(napi_env env, napi_status status, void *data)
{
	struct poll_work *w = data;
	struct sn_ringbuf *h = w->h;
	napi_value arr;

	h->busy = false;
	if (w->err) {
		napi_reject_deferred(env, w->deferred, sn_errno_error(env, "ring_buffer__poll", w->err, NULL, NULL));
	} else if (napi_create_array_with_length(env, h->n, &arr) == napi_ok) {
		for (size_t i = 0; i < h->n; i++)
			napi_set_element(env, arr, (uint32_t)i, sn_buffer_copy(env, h->rec[i], h->len[i]));
		napi_resolve_deferred(env, w->deferred, arr);
	}
	for (size_t i = 0; i < h->n; i++)
		free(h->rec[i]);
	h->n = 0;
	if (h->closing)
		rb_free(h);
	napi_delete_reference(env, w->ref);
	napi_delete_async_work(env, w->work);
	free(w);
}

static napi_value ringbuf_poll(napi_env env, napi_callback_info info)
{
	struct poll_work *w;
	struct sn_ringbuf *h;
	napi_value promise, name;
	int32_t timeout = 100;
	uint32_t max = 4096;

	SN_ARGS(env, info, 3);
	h = get_rb(env, argv[0]);
	if (!h || !sn_opt_i32(env, argv[1], "timeoutMs", &timeout) || !sn_opt_u32(env, argv[2], "maxRecords", &max))
		return NULL;
	if (h->busy)
		return sn_throw_errno(env, "ring_buffer__poll (a poll is already running)", EBUSY);
	w = calloc(1, sizeof(*w));
	if (!w)
		return sn_throw_errno(env, "calloc", ENOMEM);
	w->h = h;
	w->timeout_ms = timeout;
	h->max = max ? max : 1;
	SN_NAPI(env, napi_create_reference(env, argv[0], 1, &w->ref));
	SN_NAPI(env, napi_create_promise(env, &w->deferred, &promise));
	SN_NAPI(env, napi_create_string_utf8(env, "sluice:ringbuf_poll", NAPI_AUTO_LENGTH, &name));
	SN_NAPI(env, napi_create_async_work(env, NULL, name, poll_execute, poll_complete, w, &w->work));
	h->busy = true;
	SN_NAPI(env, napi_queue_async_work(env, w->work));
	return promise;
}

static napi_value ringbuf_close(napi_env env, napi_callback_info info)
{
	struct sn_ringbuf *h = NULL;
	bool ok = false;

	SN_ARGS(env, info, 1);
	if (napi_check_object_type_tag(env, argv[0], &rb_tag, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, argv[0], (void **)&h) != napi_ok || !h)
		return sn_throw_type(env, "expected a ring buffer handle");
	if (h->busy)
		return sn_throw_errno(env, "ring_buffer__free (a poll is running; wait for it)", EBUSY);
	if (h->rb) {
		ring_buffer__free(h->rb);
		h->rb = NULL;
	}
	return sn_undefined(env);
}

void sn_init_ringbuf(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "ringbufOpen", ringbuf_open },
		{ "ringbufPoll", ringbuf_poll },
		{ "ringbufClose", ringbuf_close },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
