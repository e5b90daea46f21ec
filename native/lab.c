// SPDX-License-Identifier: GPL-2.0-only
/*
 * The lab's system part: the paced way the packet generator transmits, and GRO on a veth. (The
 * other way, a live-frame BPF_PROG_TEST_RUN in the client's namespace, is progTestRun with a netns
 * option: native/testrun.c.)
 *
 *  labPacedSend   an AF_PACKET socket bound to an interface in a namespace, and a worker thread
 *                 that sends one frame at each due time (absolute schedule, sleep then spin),
 *                 so that a low offered rate is even rather than a train of bursts.
 *  labSetGro      GRO on or off on an interface (SIOCETHTOOL, ETHTOOL_SGRO): a veth only runs
 *                 NAPI, which redirected XDP frames need, with GRO or an XDP program on it.
 *
 * Mechanism only: what to send, how fast and for how long is decided in src/lab/flood.ts.
 */
#include "common.h"

#include <errno.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "../bpf/lab/csum.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Run fn(arg) on a thread of its own, pinned to `cpu` when cpu >= 0 (so that no pool thread keeps
 * a changed affinity or policy), or on the calling thread when cpu < 0 and !own. Returns 0 or an
 * errno of the threading. */
static int run_on_cpu(int cpu, bool own, void *(*fn)(void *), void *arg, const char **op)
{
	pthread_attr_t attr;
	cpu_set_t set;
	pthread_t t;
	int err = 0;

	if (cpu < 0 && !own) {
		fn(arg);
		return 0;
	}
	pthread_attr_init(&attr);
	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	if (!err)
		err = pthread_create(&t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	if (err) {
		*op = "pthread_create";
		return err;
	}
	pthread_join(t, NULL);
	return 0;
}

/* ------------------------------------------------------------ paced sending */

/* How a source address is written into each frame; the same rule as bpf/lab/flood.bpf.c. */
struct rewrite {
	uint32_t addr_off, ip_csum_off, l4_csum_off; /* 0 = none for the checksums */
	bool l4_is_udp;
	uint32_t base, count, mask;                  /* host order; count 0 = random in mask */
};

struct paced_work {
	napi_async_work work;
	napi_deferred deferred;
	napi_ref stop_ref;
	volatile uint8_t *stop;   /* non-zero: stop at the next frame */
	int sock;
	int cpu;
	void *frame;
	uint32_t frame_len;
	struct rewrite rw;
	double pps;               /* frames per second; the schedule is t0 + i / pps */
	uint64_t max_frames;      /* 0: no limit */
	uint64_t duration_ns;     /* 0: no limit */
	bool record;
	bool realtime;            /* ask for SCHED_FIFO */
	bool realtime_on;         /* got it */
	uint64_t *times;          /* send time of each frame (CLOCK_MONOTONIC ns) when record */
	/* results */
	int err;
	const char *err_op;
	uint64_t sent, start_ns, elapsed_ns, late_ns_max, enobufs;
};

/* Write source number `seq` into buf (a copy of the template frame). */
static void apply_rewrite(const struct rewrite *rw, uint8_t *buf, uint64_t seq, unsigned int *rnd)
{
	uint32_t word, old;
	uint16_t c;

	if (rw->count)
		word = rw->base + (uint32_t)(seq % rw->count);
	else
		word = (rw->base & ~rw->mask) | ((((uint32_t)rand_r(rnd) << 16) ^ (uint32_t)rand_r(rnd)) & rw->mask);
	word = htonl(word);
	memcpy(&old, buf + rw->addr_off, 4);
	memcpy(buf + rw->addr_off, &word, 4);
	if (rw->ip_csum_off) {
		memcpy(&c, buf + rw->ip_csum_off, 2);
		c = lab_csum_replace4(c, old, word);
		memcpy(buf + rw->ip_csum_off, &c, 2);
	}
	if (rw->l4_csum_off) {
		memcpy(&c, buf + rw->l4_csum_off, 2);
		c = lab_csum_replace4(c, old, word);
		if (rw->l4_is_udp && c == 0)
			c = 0xffff;
		memcpy(buf + rw->l4_csum_off, &c, 2);
	}
}

#define PACED_BATCH 64
/* Sleep until this close to a due time, then spin: nanosleep overshoots by tens of µs, less for a
 * real-time thread. */
#define SPIN_NS 60000ull
#define SPIN_NS_RT 10000ull
/* Real time only when frames are at least this far apart, so that the thread mostly sleeps: one
 * that spins all the time is stopped for ~50 ms a second by RT throttling. */
#define RT_MIN_INTERVAL_NS 40000.0
/* Re-check the stop flag at least this often while waiting. */
#define STOP_CHECK_NS 10000000ull
#define GRACE_MIN_NS 50000000ull  /* frames due before the end may leave up to this late (or 5% of the run) */

static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *paced_main(void *arg)
{
	struct paced_work *w = arg;
	uint8_t *bufs = malloc((size_t)w->frame_len * PACED_BATCH);
	struct mmsghdr msgs[PACED_BATCH];
	struct iovec iov[PACED_BATCH];
	double interval = 1e9 / w->pps;
	unsigned int rnd = (unsigned int)now_ns();
	uint64_t t0, end, grace, spin, i = 0;

	if (!bufs) {
		w->err = ENOMEM;
		w->err_op = "malloc";
		return NULL;
	}
	memset(msgs, 0, sizeof(msgs));
	for (int k = 0; k < PACED_BATCH; k++) {
		memcpy(bufs + (size_t)k * w->frame_len, w->frame, w->frame_len);
		iov[k].iov_base = bufs + (size_t)k * w->frame_len;
		iov[k].iov_len = w->frame_len;
		msgs[k].msg_hdr.msg_iov = &iov[k];
		msgs[k].msg_hdr.msg_iovlen = 1;
	}
	if (w->realtime && interval >= RT_MIN_INTERVAL_NS) {
		/* A real-time thread wakes at its due time even when the CPUs are busy (a normal one
		 * was seen up to 5 ms late here under load). The thread is our own and ends with the
		 * run, so nothing else keeps the policy. */
		struct sched_param sp = { .sched_priority = 1 };

		if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0)
			w->realtime_on = true;
	}
	spin = w->realtime_on ? SPIN_NS_RT : SPIN_NS;
	t0 = now_ns();
	end = w->duration_ns ? t0 + w->duration_ns : UINT64_MAX;
	grace = !w->duration_ns ? 0 : w->duration_ns / 20 > GRACE_MIN_NS ? w->duration_ns / 20 : GRACE_MIN_NS;
	w->start_ns = t0;
	for (;;) {
		uint64_t due, now;
		int n, k, r;

		if (__atomic_load_n(w->stop, __ATOMIC_RELAXED) || (w->max_frames && i >= w->max_frames))
			break;
		due = t0 + (uint64_t)((double)i * interval);
		if (due >= end)
			break;
		now = now_ns();
		/* A rate the machine cannot reach leaves the schedule behind the clock: the run still
		 * ends on time (with a grace for frames due in time but sent a little late, on a busy
		 * machine), with fewer frames sent than asked (the caller reports the rate reached). */
		if (now >= end + grace)
			break;
		if (due > now) {
			if (due - now > spin) {
				uint64_t wake = due - spin;

				if (wake - now > STOP_CHECK_NS)
					wake = now + STOP_CHECK_NS;
				sleep_until(wake);
				continue; /* re-check the stop flag and the clock */
			}
			while ((now = now_ns()) < due)
				;
		}
		if (now - due > w->late_ns_max)
			w->late_ns_max = now - due;
		/* Every frame already due goes now, in one sendmmsg (at least this one). */
		for (n = 1; n < PACED_BATCH; n++) {
			if (w->max_frames && i + (uint64_t)n >= w->max_frames)
				break;
			if (t0 + (uint64_t)((double)(i + (uint64_t)n) * interval) > now)
				break;
		}
		for (k = 0; k < n; k++)
			apply_rewrite(&w->rw, bufs + (size_t)k * w->frame_len, i + (uint64_t)k, &rnd);
		r = sendmmsg(w->sock, msgs, (unsigned int)n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS || errno == EAGAIN) {
				/* The device queue is full: the frames due are late; try again shortly. */
				w->enobufs++;
				sleep_until(now_ns() + 20000);
				continue;
			}
			w->err = errno;
			w->err_op = "sendmmsg";
			break;
		}
		if (w->record) {
			uint64_t t = now_ns();

			for (k = 0; k < r; k++)
				w->times[i + (uint64_t)k] = t;
		}
		/* Frames not taken keep their sequence numbers: re-stamp them next round. */
		i += (uint64_t)r;
	}
	w->sent = i;
	w->elapsed_ns = now_ns() - t0;
	free(bufs);
	return NULL;
}

static void paced_execute(napi_env env, void *data)
{
	struct paced_work *w = data;
	int err = run_on_cpu(w->cpu, true, paced_main, w, &w->err_op);

	if (err)
		w->err = err;
}

static void paced_free(napi_env env, struct paced_work *w)
{
	if (w->stop_ref)
		napi_delete_reference(env, w->stop_ref);
	if (w->sock >= 0)
		close(w->sock);
	free(w->frame);
	free(w->times);
	free(w);
}

static void paced_complete(napi_env env, napi_status status, void *data)
{
	struct paced_work *w = data;
	napi_value r;

	if (!sn_async_reject(env, status, w->deferred, &w->err, &w->err_op, NULL) &&
	    napi_create_object(env, &r) == napi_ok) {
		sn_set(env, r, "sent", sn_num(env, (double)w->sent));
		sn_set(env, r, "startNs", sn_num(env, (double)w->start_ns));
		sn_set(env, r, "elapsedNs", sn_num(env, (double)w->elapsed_ns));
		sn_set(env, r, "lateNsMax", sn_num(env, (double)w->late_ns_max));
		sn_set(env, r, "enobufs", sn_num(env, (double)w->enobufs));
		sn_set(env, r, "realtime", sn_bool(env, w->realtime_on));
		sn_set(env, r, "times", w->record ? sn_buffer_copy(env, w->times, w->sent * 8) : sn_null(env));
		napi_resolve_deferred(env, w->deferred, r);
	}
	napi_delete_async_work(env, w->work);
	paced_free(env, w);
}

/* A raw packet socket bound to `ifindex`, created inside namespace `netns` (it stays bound to
 * that namespace afterwards). Protocol 0: it receives nothing. Returns fd or -errno. */
static int packet_socket(const char *netns, int ifindex, const char **op)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = ifindex };
	int saved, fd, err, one = 1, sndbuf = 4 << 20;

	err = sn_netns_enter(netns, &saved);
	if (err) {
		*op = "setns";
		return -err;
	}
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	err = fd < 0 ? errno : 0;
	sn_netns_leave(saved);
	if (fd < 0) {
		*op = "socket(AF_PACKET)";
		return -err;
	}
	/* Straight to the driver: the lab's veths have no qdisc to shape with anyway. */
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll))) {
		err = errno;
		close(fd);
		*op = "bind(AF_PACKET)";
		return -err;
	}
	return fd;
}

/*
 * labPacedSend(netns?, ifindex, frame, opts, stop, cpu = -1)
 *   opts: {pps, maxFrames, durationNs, record, realtime (SCHED_FIFO for the sender),
 *          addrOff, ipCsumOff, l4CsumOff, l4IsUdp, srcBase, srcCount, srcMask}
 *   stop: a Uint8Array (over a SharedArrayBuffer); the sender stops once stop[0] != 0
 *   -> Promise<{sent, startNs, elapsedNs, lateNsMax, enobufs, realtime, times: Buffer | null}>
 * Frame i is due at start + i / pps and is sent at the first moment it is due; frames that fell
 * behind go together in one sendmmsg. times holds each frame's send time (u64, host order,
 * CLOCK_MONOTONIC ns) when opts.record is set.
 */
/* An optional number property (kept when absent); false with a TypeError pending otherwise. */
static bool opt_double(napi_env env, napi_value obj, const char *name, double *out)
{
	napi_value v = sn_prop(env, obj, name);

	if (sn_is_nullish(env, v))
		return true;
	if (napi_get_value_double(env, v, out) != napi_ok) {
		sn_throw_type(env, "%s must be a number", name);
		return false;
	}
	return true;
}

static bool opt_bool(napi_env env, napi_value obj, const char *name, bool *out)
{
	napi_value v = sn_prop(env, obj, name);

	return sn_is_nullish(env, v) || sn_get_bool(env, v, name, out);
}

static napi_value lab_paced_send(napi_env env, napi_callback_info info)
{
	uint32_t addr_off = 0, ip_off = 0, l4_off = 0, base = 0, count = 1, mask = 0;
	int32_t ifindex, cpu = -1;
	bool udp = false, record = false, realtime = false;
	struct paced_work *w;
	const char *op = NULL;
	void *frame, *stop;
	size_t len, stop_len;
	char *netns = NULL;
	napi_value promise, o;
	double pps = 0, maxf = 0, dur = 0;
	int fd;

	SN_ARGS(env, info, 6);
	o = argv[3];
	if (!sn_get_i32(env, argv[1], "ifindex", &ifindex) ||
	    !sn_get_bytes(env, argv[2], "frame", &frame, &len) ||
	    !opt_double(env, o, "pps", &pps) || !opt_double(env, o, "maxFrames", &maxf) ||
	    !opt_double(env, o, "durationNs", &dur) || !opt_bool(env, o, "l4IsUdp", &udp) ||
	    !opt_bool(env, o, "record", &record) || !opt_bool(env, o, "realtime", &realtime) ||
	    !sn_opt_u32(env, sn_prop(env, o, "addrOff"), "addrOff", &addr_off) ||
	    !sn_opt_u32(env, sn_prop(env, o, "ipCsumOff"), "ipCsumOff", &ip_off) ||
	    !sn_opt_u32(env, sn_prop(env, o, "l4CsumOff"), "l4CsumOff", &l4_off) ||
	    !sn_opt_u32(env, sn_prop(env, o, "srcBase"), "srcBase", &base) ||
	    !sn_opt_u32(env, sn_prop(env, o, "srcCount"), "srcCount", &count) ||
	    !sn_opt_u32(env, sn_prop(env, o, "srcMask"), "srcMask", &mask) ||
	    !sn_get_bytes(env, argv[4], "stop", &stop, &stop_len) ||
	    !sn_opt_i32(env, argv[5], "cpu", &cpu))
		return NULL;
	if (!(pps > 0) || pps > 1e8 || maxf < 0 || dur < 0 || stop_len < 1 || cpu >= CPU_SETSIZE ||
	    len < 14 || len > 65535 || addr_off + 4 > len || (ip_off && ip_off + 2 > len) ||
	    (l4_off && l4_off + 2 > len) || (record && (maxf < 1 || maxf > (double)(1u << 27))))
		return sn_throw_type(env, "labPacedSend: bad arguments (pps in (0, 1e8], offsets inside "
					  "the frame, record needs maxFrames <= 2^27)");
	if (!sn_opt_string(env, argv[0], "netns", &netns))
		return NULL;
	fd = packet_socket(netns, ifindex, &op);
	if (fd < 0) {
		napi_value e = sn_errno_error(env, op, -fd, netns, NULL);

		free(netns);
		if (e)
			napi_throw(env, e);
		return NULL;
	}
	free(netns);
	w = calloc(1, sizeof(*w));
	if (!w) {
		close(fd);
		return sn_throw_errno(env, "calloc", ENOMEM);
	}
	w->sock = fd;
	w->cpu = cpu;
	w->stop = stop;
	w->pps = pps;
	w->max_frames = (uint64_t)maxf;
	w->duration_ns = (uint64_t)dur;
	w->record = record;
	w->realtime = realtime;
	w->rw = (struct rewrite){ .addr_off = addr_off, .ip_csum_off = ip_off, .l4_csum_off = l4_off,
				  .l4_is_udp = udp, .base = base, .count = count, .mask = mask };
	w->frame_len = (uint32_t)len;
	w->frame = malloc(len);
	w->times = record ? calloc(w->max_frames, 8) : NULL;
	if (!w->frame || (record && !w->times)) {
		paced_free(env, w);
		return sn_throw_errno(env, "malloc", ENOMEM);
	}
	memcpy(w->frame, frame, len);
	/* The stop flag lives in JS memory: keep it alive until the sender is done. */
	if (napi_create_reference(env, argv[4], 1, &w->stop_ref) != napi_ok ||
	    napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
	    napi_create_async_work(env, NULL, sn_str(env, "sluice:labPacedSend"), paced_execute,
				   paced_complete, w, &w->work) != napi_ok ||
	    napi_queue_async_work(env, w->work) != napi_ok) {
		paced_free(env, w);
		sn_throw_napi(env, "labPacedSend");
		return NULL;
	}
	return promise;
}

/* ------------------------------------------------------------ GRO */

/* labSetGro(ifname, on, netns?): ETHTOOL_SGRO, as `ethtool -K IFACE gro on|off` does. */
static napi_value lab_set_gro(napi_env env, napi_callback_info info)
{
	struct ethtool_value ev = { .cmd = ETHTOOL_SGRO };
	struct ifreq ifr;
	char *name = NULL, *netns = NULL;
	int saved, fd, err = 0;
	bool on;

	SN_ARGS(env, info, 3);
	if (!sn_get_string(env, argv[0], "ifname", &name))
		return NULL;
	if (!sn_get_bool(env, argv[1], "on", &on) || !sn_opt_string(env, argv[2], "netns", &netns)) {
		free(name);
		return NULL;
	}
	if (strlen(name) >= IFNAMSIZ) {
		free(name);
		free(netns);
		return sn_throw_type(env, "interface name is too long");
	}
	ev.data = on ? 1 : 0;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, name);
	ifr.ifr_data = (void *)&ev;
	err = sn_netns_enter(netns, &saved);
	if (!err) {
		fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || ioctl(fd, SIOCETHTOOL, &ifr))
			err = errno;
		if (fd >= 0)
			close(fd);
		sn_netns_leave(saved);
	}
	free(name);
	if (err) {
		napi_value e = sn_errno_error(env, "ioctl(SIOCETHTOOL, ETHTOOL_SGRO)", err, netns, NULL);

		free(netns);
		if (e)
			napi_throw(env, e);
		return NULL;
	}
	free(netns);
	return sn_undefined(env);
}

void sn_init_lab(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "labPacedSend", lab_paced_send },
		{ "labSetGro", lab_set_gro },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
