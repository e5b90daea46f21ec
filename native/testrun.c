// SPDX-License-Identifier: GPL-2.0-only
/*
 * BPF_PROG_TEST_RUN off the JS thread.
 *
 * progTestRun runs on a libuv pool thread. progTestRunOnCpu runs on a thread
 * of its own pinned to one CPU: an XDP test run executes on the CPU of the
 * calling thread (BPF_F_TEST_RUN_ON_CPU is for raw tracepoints only), so two
 * such calls on CPU 0 and 1 exercise per-CPU and shared map state from both
 * CPUs at the same time.
 *
 * With opts.netns the thread that runs the test first enters that network namespace and comes
 * back afterwards (or the process aborts): a live-frame run (BPF_F_TEST_XDP_LIVE_FRAMES, the lab's
 * packet generator) resolves the program's redirect target in the namespace of the running thread.
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>

struct run_work {
	napi_async_work work;
	napi_deferred deferred;
	int fd;
	int cpu; /* -1: any */
	/* the namespace the running thread enters; NULL: its own */
	char *netns;
	void *in, *ctx_in, *out, *ctx_out;
	uint32_t in_len, ctx_len, out_cap;
	uint32_t repeat, flags, batch_size;
	bool live;
	/* results */
	int err;
	const char *err_op;
	uint32_t retval, duration, out_len, ctx_out_len;
	uint64_t elapsed_ns; /* wall time of the syscall, set-up included */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Every length given to the kernel here is that of a buffer this file allocated or copied (in,
 * out, ctx): none comes from the caller unchecked, so no test run can read or write past one.
 * An output larger than out_cap is cut (ENOSPC from the kernel; run_complete copies at most
 * out_cap).
 */
static void do_run(struct run_work *w)
{
	uint64_t t0;
	int saved, err;

	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = w->in, .data_size_in = w->in_len,
		    .repeat = (int)w->repeat, .flags = w->flags, .batch_size = w->batch_size);
	/* Live frames are consumed by the program (and possibly sent): nothing comes back. */
	if (!w->live) {
		opts.data_out = w->out;
		opts.data_size_out = w->out_cap;
	}
	if (w->ctx_in) {
		opts.ctx_in = w->ctx_in;
		opts.ctx_size_in = w->ctx_len;
		if (!w->live) {
			opts.ctx_out = w->ctx_out;
			opts.ctx_size_out = w->ctx_len;
		}
	}
	err = sn_netns_enter(w->netns, &saved);
	if (err) {
		w->err = err;
		w->err_op = "setns";
		return;
	}
	t0 = now_ns();
	err = bpf_prog_test_run_opts(w->fd, &opts);
	w->elapsed_ns = now_ns() - t0;
	/* Back before anything else runs on this thread; aborts the process if impossible. */
	sn_netns_leave(saved);
	if (err) {
		w->err = -err;
		w->err_op = "bpf_prog_test_run_opts";
		return;
	}
	w->retval = opts.retval;
	w->duration = opts.duration;
	w->out_len = w->live ? 0 : opts.data_size_out;
	w->ctx_out_len = w->ctx_in && !w->live ? opts.ctx_size_out : 0;
}

static void *pinned_main(void *arg)
{
	struct run_work *w = arg;
	cpu_set_t set;
	int err;

	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (err) {
		w->err = err;
		w->err_op = "pthread_setaffinity_np";
		return NULL;
	}
	do_run(w);
	return NULL;
}

static void run_execute(napi_env env, void *data)
{
	struct run_work *w = data;
	pthread_t t;
	int err;

	if (w->cpu < 0) {
		do_run(w);
		return;
	}
	/* A thread of our own, so that no pool thread keeps a changed affinity. */
	err = pthread_create(&t, NULL, pinned_main, w);
	if (err) {
		w->err = err;
		w->err_op = "pthread_create";
		return;
	}
	pthread_join(t, NULL);
}

static void run_free(struct run_work *w)
{
	free(w->netns);
	free(w->in);
	free(w->ctx_in);
	free(w->out);
	free(w->ctx_out);
	free(w);
}

static void run_complete(napi_env env, napi_status status, void *data)
{
	struct run_work *w = data;
	napi_value r;

	if (!sn_async_reject(env, status, w->deferred, &w->err, &w->err_op, w->netns) &&
	    napi_create_object(env, &r) == napi_ok) {
		uint32_t out_len = w->out_len < w->out_cap ? w->out_len : w->out_cap;

		sn_set(env, r, "retval", sn_num(env, w->retval));
		sn_set(env, r, "duration", sn_num(env, w->duration));
		sn_set(env, r, "dataOut", w->live ? sn_null(env) : sn_buffer_copy(env, w->out, out_len));
		sn_set(env, r, "dataSizeOut", sn_num(env, w->out_len));
		sn_set(env, r, "elapsedNs", sn_num(env, (double)w->elapsed_ns));
		if (w->ctx_in && !w->live)
			sn_set(env, r, "ctxOut", sn_buffer_copy(env, w->ctx_out,
								w->ctx_out_len < w->ctx_len ? w->ctx_out_len : w->ctx_len));
		napi_resolve_deferred(env, w->deferred, r);
	}
	napi_delete_async_work(env, w->work);
	run_free(w);
}

static void *dup_bytes(const void *p, size_t n)
{
	void *q = malloc(n ? n : 1);

	if (q && n)
		memcpy(q, p, n);
	return q;
}

/*
 * progTestRun(fd, data, {repeat, ctx, flags, batchSize, dataSizeOut, netns}, cpu = -1)
 *   -> Promise<{retval, duration, dataOut, dataSizeOut, elapsedNs, ctxOut?}>
 * duration is the kernel's average per repetition, in ns; elapsedNs the wall time of the syscall,
 * set-up included. netns (a path; null or absent: the current one) is entered by the running
 * thread for the run. The input is copied, so the caller may reuse its buffer at once.
 */
static napi_value test_run(napi_env env, napi_callback_info info, bool need_cpu)
{
	uint32_t repeat = 1, flags = 0, batch = 0, out_size = 0;
	int32_t fd, cpu = -1;
	struct run_work *w;
	napi_value promise;
	void *data, *ctx;
	size_t dlen, clen;

	SN_ARGS(env, info, 4);
	if (!sn_get_i32(env, argv[0], "fd", &fd) || !sn_get_bytes(env, argv[1], "data", &data, &dlen) ||
	    !sn_opt_u32(env, sn_prop(env, argv[2], "repeat"), "repeat", &repeat) ||
	    !sn_opt_u32(env, sn_prop(env, argv[2], "flags"), "flags", &flags) ||
	    !sn_opt_u32(env, sn_prop(env, argv[2], "batchSize"), "batchSize", &batch) ||
	    !sn_opt_u32(env, sn_prop(env, argv[2], "dataSizeOut"), "dataSizeOut", &out_size) ||
	    !sn_opt_bytes(env, sn_prop(env, argv[2], "ctx"), "ctx", &ctx, &clen) ||
	    !sn_opt_i32(env, argv[3], "cpu", &cpu))
		return NULL;
	if (need_cpu && cpu < 0)
		return sn_throw_type(env, "cpu must be given");
	if (cpu >= CPU_SETSIZE)
		return sn_throw_type(env, "cpu %d is out of range", cpu);
	if (dlen > UINT32_MAX / 2 || clen > UINT32_MAX)
		return sn_throw_type(env, "data is too large");
	w = calloc(1, sizeof(*w));
	if (!w)
		return sn_throw_errno(env, "calloc", ENOMEM);
	if (!sn_opt_string(env, sn_prop(env, argv[2], "netns"), "netns", &w->netns)) {
		free(w);
		return NULL;
	}
	w->fd = fd;
	w->cpu = cpu;
	w->repeat = repeat;
	w->flags = flags;
	w->batch_size = batch;
	w->live = flags & BPF_F_TEST_XDP_LIVE_FRAMES;
	w->in_len = (uint32_t)dlen;
	/* Room for a program that grows the packet (bpf_xdp_adjust_head/tail). */
	w->out_cap = out_size ? out_size : (uint32_t)(dlen + 256 > 4096 ? dlen + 256 : 4096);
	w->in = dup_bytes(data, dlen);
	w->out = malloc(w->out_cap);
	if (ctx) {
		w->ctx_len = (uint32_t)clen;
		w->ctx_in = dup_bytes(ctx, clen);
		w->ctx_out = calloc(1, clen ? clen : 1);
	}
	if (!w->in || !w->out || (ctx && (!w->ctx_in || !w->ctx_out))) {
		run_free(w);
		return sn_throw_errno(env, "malloc", ENOMEM);
	}
	if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
	    napi_create_async_work(env, NULL, sn_str(env, "sluice:progTestRun"), run_execute,
				   run_complete, w, &w->work) != napi_ok ||
	    napi_queue_async_work(env, w->work) != napi_ok) {
		run_free(w);
		sn_throw_napi(env, "progTestRun");
		return NULL;
	}
	return promise;
}

static napi_value prog_test_run(napi_env env, napi_callback_info info)
{
	return test_run(env, info, false);
}

/* progTestRunOnCpu(fd, data, opts, cpu): progTestRun on a thread pinned to `cpu` */
static napi_value prog_test_run_on_cpu(napi_env env, napi_callback_info info)
{
	return test_run(env, info, true);
}

/*
 * A batch of frames, each through its own BPF_PROG_TEST_RUN, in one pool job: a fuzzer sends
 * millions of frames, and the hop to a pool thread and back costs more than the run itself.
 */
struct batch_work {
	napi_async_work work;
	napi_deferred deferred;
	int fd;
	uint32_t n;
	uint8_t *frames;   /* the frames, back to back */
	uint32_t *lens;    /* n lengths */
	int32_t *results;  /* n results: retval (>= 0) or -errno of that frame's run */
	int err;
	const char *err_op;
};

static void batch_execute(napi_env env, void *data)
{
	struct batch_work *w = data;
	size_t off = 0;
	uint32_t i;

	for (i = 0; i < w->n; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = w->frames + off,
			    .data_size_in = w->lens[i], .repeat = 1);
		int err = bpf_prog_test_run_opts(w->fd, &opts);

		w->results[i] = err ? (err < 0 ? err : -err) : (int32_t)(opts.retval & 0x7fffffff);
		off += w->lens[i];
	}
}

static void batch_free(struct batch_work *w)
{
	free(w->frames);
	free(w->lens);
	free(w->results);
	free(w);
}

static void batch_complete(napi_env env, napi_status status, void *data)
{
	struct batch_work *w = data;

	if (!sn_async_reject(env, status, w->deferred, &w->err, &w->err_op, NULL))
		napi_resolve_deferred(env, w->deferred,
				      sn_buffer_copy(env, w->results, (size_t)w->n * sizeof(int32_t)));
	napi_delete_async_work(env, w->work);
	batch_free(w);
}

/*
 * progTestRunBatch(fd, frames, lens) -> Promise<Buffer>: frames back to back in one buffer, their
 * lengths in a Uint32Array; resolves to n int32 (host order): each frame's retval, or -errno when
 * its run failed (EINVAL for a frame shorter than Ethernet). The input is copied.
 */
static napi_value prog_test_run_batch(napi_env env, napi_callback_info info)
{
	struct batch_work *w;
	napi_value promise;
	void *frames, *lens;
	size_t flen, llen, total = 0, i;
	int32_t fd;

	SN_ARGS(env, info, 3);
	if (!sn_get_i32(env, argv[0], "fd", &fd) || !sn_get_bytes(env, argv[1], "frames", &frames, &flen) ||
	    !sn_get_bytes(env, argv[2], "lens", &lens, &llen))
		return NULL;
	if (llen % sizeof(uint32_t) || llen / sizeof(uint32_t) > UINT32_MAX)
		return sn_throw_type(env, "lens must be a Uint32Array");
	w = calloc(1, sizeof(*w));
	if (!w)
		return sn_throw_errno(env, "calloc", ENOMEM);
	w->fd = fd;
	w->n = (uint32_t)(llen / sizeof(uint32_t));
	w->lens = dup_bytes(lens, llen);
	w->frames = dup_bytes(frames, flen);
	w->results = calloc(w->n ? w->n : 1, sizeof(int32_t));
	if (!w->lens || !w->frames || !w->results) {
		batch_free(w);
		return sn_throw_errno(env, "malloc", ENOMEM);
	}
	for (i = 0; i < w->n; i++)
		total += w->lens[i];
	if (total != flen) {
		batch_free(w);
		return sn_throw_type(env, "lens add up to %zu bytes, frames has %zu", total, flen);
	}
	if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
	    napi_create_async_work(env, NULL, sn_str(env, "sluice:progTestRunBatch"), batch_execute,
				   batch_complete, w, &w->work) != napi_ok ||
	    napi_queue_async_work(env, w->work) != napi_ok) {
		batch_free(w);
		sn_throw_napi(env, "progTestRunBatch");
		return NULL;
	}
	return promise;
}

void sn_init_testrun(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "progTestRun", prog_test_run },
		{ "progTestRunOnCpu", prog_test_run_on_cpu },
		{ "progTestRunBatch", prog_test_run_batch },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
