/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared helpers of the sluice_native addon: argument parsing, errno errors,
 * and the capture of libbpf's own print output.
 *
 * The addon mirrors libbpf 1:1 and holds no policy. Every function that fails
 * throws (or rejects with) an Error whose `code` is the errno name ('EPERM'),
 * `errno` the number and `syscall` the libbpf or libc function that failed.
 */
#ifndef SLUICE_NATIVE_COMMON_H
#define SLUICE_NATIVE_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <node_api.h>

/* ENOTSUPP is kernel-internal (not in errno.h) but leaks out of some BPF paths. */
#define SN_ENOTSUPP 524

/* Return NULL from the napi callback (an exception is then pending) when a call fails. */
#define SN_NAPI(env, call)                                                     \
	do {                                                                   \
		if ((call) != napi_ok) {                                       \
			sn_throw_napi((env), #call);                           \
			return NULL;                                           \
		}                                                              \
	} while (0)

/* Fetch up to N arguments of the current callback into argv[]. */
#define SN_ARGS(env, info, n)                                                  \
	size_t argc = (n);                                                     \
	napi_value argv[(n) > 0 ? (n) : 1];                                    \
	SN_NAPI((env), napi_get_cb_info((env), (info), &argc, argv, NULL, NULL)); \
	for (size_t i_ = argc; i_ < (size_t)(n); i_++)                         \
		napi_get_undefined((env), &argv[i_])

/* ---- growable string, used to capture libbpf's prints ---- */
struct sn_strbuf {
	char *buf;
	size_t len, cap;
};
void sn_strbuf_free(struct sn_strbuf *sb);
char *sn_strbuf_take(struct sn_strbuf *sb); /* caller frees; NULL when empty */

/*
 * libbpf prints through one global callback. We route its output into a
 * thread-local buffer so that a failing call (on the JS thread or a worker
 * thread) can attach what libbpf said to its error. sn_log_begin() starts a
 * fresh capture for the current thread into the thread's own buffer.
 */
void sn_log_install(void);
void sn_log_begin(void);
struct sn_strbuf *sn_log_current(void);

/* ---- errors ---- */
const char *sn_errno_name(int err);
/* Build (not throw) an Error for errno `err` raised by `op`; detail may be NULL. */
napi_value sn_errno_error(napi_env env, const char *op, int err, const char *detail,
			  const char *libbpf_log);
/* Throw an errno Error (with the current thread's libbpf log); returns NULL. */
napi_value sn_throw_errno(napi_env env, const char *op, int err);
napi_value sn_throw_type(napi_env env, const char *fmt, ...);
/*
 * In an async work's complete callback: a failed napi status becomes ECANCELED in *err; when
 * *err is set, reject `d` with an errno Error (op, detail) and return true.
 */
bool sn_async_reject(napi_env env, napi_status status, napi_deferred d, int *err, const char **op,
		     const char *detail);
void sn_throw_napi(napi_env env, const char *what);

/* ---- argument parsing; each throws a TypeError and returns false on a bad value ---- */
bool sn_is_nullish(napi_env env, napi_value v);
bool sn_get_i32(napi_env env, napi_value v, const char *name, int32_t *out);
bool sn_get_u32(napi_env env, napi_value v, const char *name, uint32_t *out);
bool sn_get_u64(napi_env env, napi_value v, const char *name, uint64_t *out);
bool sn_get_bool(napi_env env, napi_value v, const char *name, bool *out);
/* Optional variants keep *out when v is undefined or null. */
bool sn_opt_i32(napi_env env, napi_value v, const char *name, int32_t *out);
bool sn_opt_u32(napi_env env, napi_value v, const char *name, uint32_t *out);
/* Buffer or Uint8Array; data points into JS memory (valid during the call only). */
bool sn_get_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len);
bool sn_opt_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len);
/* malloc'd UTF-8 copy; *out stays NULL for an optional undefined/null. */
bool sn_get_string(napi_env env, napi_value v, const char *name, char **out);
bool sn_opt_string(napi_env env, napi_value v, const char *name, char **out);
/* Property of an options object (undefined when obj is nullish or lacks it). */
napi_value sn_prop(napi_env env, napi_value obj, const char *name);

/* ---- value construction ---- */
napi_value sn_num(napi_env env, double v);
napi_value sn_bool(napi_env env, bool v);
napi_value sn_str(napi_env env, const char *s);
napi_value sn_null(napi_env env);
napi_value sn_undefined(napi_env env);
napi_value sn_buffer_copy(napi_env env, const void *data, size_t len);
void sn_set(napi_env env, napi_value obj, const char *name, napi_value v);

/* ---- network namespace switching of the calling thread ---- */
/*
 * Enter the namespace at `path` (NULL: stay) on the calling thread. On success
 * *saved holds an fd of the original namespace (or -1 when path was NULL) and
 * must be given to sn_netns_leave(). Returns 0 or a positive errno.
 */
int sn_netns_enter(const char *path, int *saved);
/* Return to the saved namespace; aborts the process if that is impossible. */
void sn_netns_leave(int saved);

/* ---- registration of each module part ---- */
struct sn_fn {
	const char *name;
	napi_callback cb;
};
void sn_register(napi_env env, napi_value exports, const struct sn_fn *fns, size_t n);
void sn_init_object(napi_env env, napi_value exports);
void sn_init_syscall(napi_env env, napi_value exports);
void sn_init_testrun(napi_env env, napi_value exports);
void sn_init_net(napi_env env, napi_value exports);
void sn_init_lab(napi_env env, napi_value exports);
void sn_init_ringbuf(napi_env env, napi_value exports);
void sn_init_flock(napi_env env, napi_value exports);
void sn_init_notify(napi_env env, napi_value exports);

#define SN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
