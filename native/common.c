// SPDX-License-Identifier: GPL-2.0-only
/* Helpers shared by every part of the addon; see common.h. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>

/* ---------------------------------------------------------------- strbuf */

/* A runaway print loop must not eat memory: keep the first 1 MiB of a capture. */
#define SN_LOG_CAP (1u << 20)

void sn_strbuf_free(struct sn_strbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}

char *sn_strbuf_take(struct sn_strbuf *sb)
{
	char *s = sb->len ? sb->buf : NULL;

	if (!s)
		free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	return s;
}

static void sn_strbuf_vappend(struct sn_strbuf *sb, const char *fmt, va_list ap)
{
	va_list cp;
	int n;

	if (sb->len >= SN_LOG_CAP)
		return;
	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n <= 0)
		return;
	if (sb->len + (size_t)n + 1 > sb->cap) {
		size_t cap = sb->cap ? sb->cap : 1024;
		char *p;

		while (cap < sb->len + (size_t)n + 1)
			cap *= 2;
		p = realloc(sb->buf, cap);
		if (!p)
			return;
		sb->buf = p;
		sb->cap = cap;
	}
	vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
	sb->len += (size_t)n;
}

/* ----------------------------------------------------- libbpf print capture */

static __thread struct sn_strbuf tls_log;
static int log_debug; /* SLUICE_LIBBPF_DEBUG=1: also keep debug lines and echo to stderr */

static int sn_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !log_debug)
		return 0;
	if (log_debug) {
		va_list cp;

		va_copy(cp, ap);
		vfprintf(stderr, fmt, cp);
		va_end(cp);
	}
	sn_strbuf_vappend(&tls_log, fmt, ap);
	return 0;
}

void sn_log_install(void)
{
	const char *d = getenv("SLUICE_LIBBPF_DEBUG");

	log_debug = d && *d && strcmp(d, "0") != 0;
	libbpf_set_print(sn_libbpf_print);
}

void sn_log_begin(void)
{
	tls_log.len = 0;
	if (tls_log.buf)
		tls_log.buf[0] = '\0';
}

struct sn_strbuf *sn_log_current(void)
{
	return &tls_log;
}

/* ------------------------------------------------------------------ errors */

const char *sn_errno_name(int err)
{
	const char *n;

	if (err == SN_ENOTSUPP)
		return "ENOTSUPP";
	n = strerrorname_np(err);
	return n ? n : "EUNKNOWN";
}

napi_value sn_errno_error(napi_env env, const char *op, int err, const char *detail,
			  const char *libbpf_log)
{
	char msg[1024], ebuf[128];
	const char *text;
	napi_value code, m, e;

	if (err == SN_ENOTSUPP)
		text = "Operation not supported";
	else
		text = strerror_r(err, ebuf, sizeof(ebuf));
	snprintf(msg, sizeof(msg), "%s: %s (%s)%s%s", op, text, sn_errno_name(err),
		 detail ? ": " : "", detail ? detail : "");
	if (napi_create_string_utf8(env, sn_errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
	    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok ||
	    napi_create_error(env, code, m, &e) != napi_ok)
		return NULL;
	sn_set(env, e, "errno", sn_num(env, err));
	sn_set(env, e, "syscall", sn_str(env, op));
	if (libbpf_log && *libbpf_log)
		sn_set(env, e, "libbpfLog", sn_str(env, libbpf_log));
	return e;
}

napi_value sn_throw_errno(napi_env env, const char *op, int err)
{
	struct sn_strbuf *lb = sn_log_current();
	napi_value e = sn_errno_error(env, op, err, NULL, lb->len ? lb->buf : NULL);

	if (e)
		napi_throw(env, e);
	return NULL;
}

napi_value sn_throw_type(napi_env env, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
	return NULL;
}

void sn_throw_napi(napi_env env, const char *what)
{
	const napi_extended_error_info *info = NULL;
	bool pending = false;

	napi_is_exception_pending(env, &pending);
	if (pending)
		return;
	napi_get_last_error_info(env, &info);
	napi_throw_error(env, "ERR_SLUICE_NAPI",
			 info && info->error_message ? info->error_message : what);
}

/* -------------------------------------------------------- argument parsing */

bool sn_is_nullish(napi_env env, napi_value v)
{
	napi_valuetype t;

	if (!v || napi_typeof(env, v, &t) != napi_ok)
		return true;
	return t == napi_undefined || t == napi_null;
}

static bool sn_get_double(napi_env env, napi_value v, const char *name, double *out)
{
	napi_valuetype t;

	if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
		sn_throw_type(env, "%s must be a number", name);
		return false;
	}
	napi_get_value_double(env, v, out);
	return true;
}

bool sn_get_i32(napi_env env, napi_value v, const char *name, int32_t *out)
{
	double d;

	if (!sn_get_double(env, v, name, &d))
		return false;
	if (d != (double)(int32_t)d) {
		sn_throw_type(env, "%s must be a 32-bit integer, got %g", name, d);
		return false;
	}
	*out = (int32_t)d;
	return true;
}

bool sn_get_u32(napi_env env, napi_value v, const char *name, uint32_t *out)
{
	double d;

	if (!sn_get_double(env, v, name, &d))
		return false;
	if (d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d) {
		sn_throw_type(env, "%s must be an unsigned 32-bit integer, got %g", name, d);
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

bool sn_get_u64(napi_env env, napi_value v, const char *name, uint64_t *out)
{
	napi_valuetype t;
	bool lossless;

	if (napi_typeof(env, v, &t) == napi_ok && t == napi_bigint) {
		napi_get_value_bigint_uint64(env, v, out, &lossless);
		if (!lossless) {
			sn_throw_type(env, "%s does not fit an unsigned 64-bit integer", name);
			return false;
		}
		return true;
	} else {
		double d;

		if (!sn_get_double(env, v, name, &d))
			return false;
		if (d < 0 || d > 9007199254740991.0 || d != (double)(uint64_t)d) {
			sn_throw_type(env, "%s must be a non-negative safe integer", name);
			return false;
		}
		*out = (uint64_t)d;
		return true;
	}
}

bool sn_get_bool(napi_env env, napi_value v, const char *name, bool *out)
{
	if (napi_get_value_bool(env, v, out) != napi_ok) {
		sn_throw_type(env, "%s must be a boolean", name);
		return false;
	}
	return true;
}

bool sn_opt_i32(napi_env env, napi_value v, const char *name, int32_t *out)
{
	return sn_is_nullish(env, v) || sn_get_i32(env, v, name, out);
}

bool sn_opt_u32(napi_env env, napi_value v, const char *name, uint32_t *out)
{
	return sn_is_nullish(env, v) || sn_get_u32(env, v, name, out);
}

bool sn_get_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len)
{
	bool is = false;

	if (napi_is_buffer(env, v, &is) == napi_ok && is)
		return napi_get_buffer_info(env, v, data, len) == napi_ok;
	if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
		napi_typedarray_type type;
		napi_value ab;
		size_t off;

		napi_get_typedarray_info(env, v, &type, len, data, &ab, &off);
		if (type == napi_uint8_array || type == napi_int8_array ||
		    type == napi_uint8_clamped_array)
			return true;
	}
	sn_throw_type(env, "%s must be a Buffer or Uint8Array", name);
	return false;
}

bool sn_opt_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len)
{
	if (sn_is_nullish(env, v)) {
		*data = NULL;
		*len = 0;
		return true;
	}
	return sn_get_bytes(env, v, name, data, len);
}

bool sn_get_string(napi_env env, napi_value v, const char *name, char **out)
{
	size_t len = 0;
	napi_valuetype t;

	*out = NULL;
	if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
		sn_throw_type(env, "%s must be a string", name);
		return false;
	}
	napi_get_value_string_utf8(env, v, NULL, 0, &len);
	*out = malloc(len + 1);
	if (!*out) {
		napi_throw_error(env, "ENOMEM", "out of memory");
		return false;
	}
	napi_get_value_string_utf8(env, v, *out, len + 1, &len);
	if (strlen(*out) != len) { /* an embedded NUL would silently cut a path */
		free(*out);
		*out = NULL;
		sn_throw_type(env, "%s must not contain NUL characters", name);
		return false;
	}
	return true;
}

bool sn_opt_string(napi_env env, napi_value v, const char *name, char **out)
{
	*out = NULL;
	return sn_is_nullish(env, v) || sn_get_string(env, v, name, out);
}

napi_value sn_prop(napi_env env, napi_value obj, const char *name)
{
	napi_value v = NULL;

	if (sn_is_nullish(env, obj) || napi_get_named_property(env, obj, name, &v) != napi_ok)
		napi_get_undefined(env, &v);
	return v;
}

/* ------------------------------------------------------ value construction */

napi_value sn_num(napi_env env, double v)
{
	napi_value r = NULL;

	napi_create_double(env, v, &r);
	return r;
}

napi_value sn_bool(napi_env env, bool v)
{
	napi_value r = NULL;

	napi_get_boolean(env, v, &r);
	return r;
}

napi_value sn_str(napi_env env, const char *s)
{
	napi_value r = NULL;

	napi_create_string_utf8(env, s ? s : "", NAPI_AUTO_LENGTH, &r);
	return r;
}

napi_value sn_null(napi_env env)
{
	napi_value r = NULL;

	napi_get_null(env, &r);
	return r;
}

napi_value sn_undefined(napi_env env)
{
	napi_value r = NULL;

	napi_get_undefined(env, &r);
	return r;
}

napi_value sn_buffer_copy(napi_env env, const void *data, size_t len)
{
	napi_value r = NULL;
	void *dst;

	/* napi_create_buffer_copy rejects len 0 on some versions; create then copy. */
	if (napi_create_buffer(env, len, &dst, &r) != napi_ok)
		return NULL;
	if (len)
		memcpy(dst, data, len);
	return r;
}

void sn_set(napi_env env, napi_value obj, const char *name, napi_value v)
{
	if (v)
		napi_set_named_property(env, obj, name, v);
}

bool sn_async_reject(napi_env env, napi_status status, napi_deferred d, int *err, const char **op,
		     const char *detail)
{
	if (status != napi_ok && !*err) {
		*err = ECANCELED;
		*op = "napi_async_work";
	}
	if (!*err)
		return false;
	napi_reject_deferred(env, d, sn_errno_error(env, *op, *err, detail, NULL));
	return true;
}

/* ----------------------------------------------------------------- netns */

int sn_netns_enter(const char *path, int *saved)
{
	char self[64];
	int target, err;

	*saved = -1;
	if (!path)
		return 0;
	/* The thread's own namespace, not the process's: another thread may have moved. */
	snprintf(self, sizeof(self), "/proc/self/task/%d/ns/net", (int)gettid());
	*saved = open(self, O_RDONLY | O_CLOEXEC);
	if (*saved < 0)
		return errno;
	target = open(path, O_RDONLY | O_CLOEXEC);
	if (target < 0) {
		err = errno;
		close(*saved);
		*saved = -1;
		return err;
	}
	if (setns(target, CLONE_NEWNET)) {
		err = errno;
		close(target);
		close(*saved);
		*saved = -1;
		return err;
	}
	close(target);
	return 0;
}

void sn_netns_leave(int saved)
{
	if (saved < 0)
		return;
	/*
	 * Failing to come back would leave this thread (usually Node's main
	 * thread) acting in another namespace; continuing would be unsafe.
	 */
	if (setns(saved, CLONE_NEWNET)) {
		fprintf(stderr, "sluice_native: cannot return to the original network namespace: %s\n",
			strerror(errno));
		abort();
	}
	close(saved);
}

/* ---------------------------------------------------------- registration */

void sn_register(napi_env env, napi_value exports, const struct sn_fn *fns, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		napi_value f;

		if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f) ==
		    napi_ok)
			napi_set_named_property(env, exports, fns[i].name, f);
	}
}
