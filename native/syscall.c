// SPDX-License-Identifier: GPL-2.0-only
/*
 * fd-level bpf(2) wrappers from bpf/bpf.h: map elements and batches, pins,
 * object info, ids, links, stats.
 *
 * The kernel copies exactly key_size and value_size bytes (value_size rounded
 * up to 8, times the possible CPUs, for per-CPU maps) from and to the pointers
 * it is given: a shorter buffer is a read or a write past its end. So every
 * buffer that reaches a map syscall is checked here against the map's own
 * sizes, read from the kernel (BPF_OBJ_GET_INFO_BY_FD) by fd, whatever the
 * caller says; a mismatch is a TypeError and no syscall is made.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static bool get_fd(napi_env env, napi_value v, int *fd)
{
	int32_t x;

	if (!sn_get_i32(env, v, "fd", &x))
		return false;
	if (x < 0) {
		sn_throw_type(env, "fd must be a non-negative integer, got %d", x);
		return false;
	}
	*fd = x;
	return true;
}

/* Allocate a JS Buffer of len bytes and hand back its memory. */
static napi_value new_buffer(napi_env env, size_t len, void **data)
{
	napi_value b = NULL;

	if (napi_create_buffer(env, len, data, &b) != napi_ok) {
		sn_throw_napi(env, "napi_create_buffer");
		return NULL;
	}
	if (len)
		memset(*data, 0, len);
	return b;
}

/* ------------------------------------------------------------ map sizes */

struct map_sizes {
	bool known; /* false: fd is no map we could ask (the syscall then fails on its own) */
	uint32_t type, key, value, vbuf; /* vbuf: bytes of one value as the kernel copies it */
};

static bool is_percpu(uint32_t type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

/*
 * Whether fd is a BPF map. BPF_OBJ_GET_INFO_BY_FD answers for programs and links too, in their own
 * layout, so sizes read from it mean something only for a map. Asked only when a size looks wrong.
 */
static bool is_map_fd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return true; /* no /proc: keep the check */
	target[n] = '\0';
	return strcmp(target, "anon_inode:bpf-map") == 0;
}

/*
 * The sizes of the map behind fd, from the kernel. When fd cannot be asked (closed, not BPF), the
 * sizes are unknown and nothing is checked: the map syscall then fails with its own errno before
 * it touches any buffer (fdget and the map type come first). Returns false only when it threw.
 */
static bool map_sizes(napi_env env, int fd, struct map_sizes *s)
{
	struct bpf_map_info mi;
	uint32_t len = sizeof(mi);

	memset(s, 0, sizeof(*s));
	memset(&mi, 0, sizeof(mi));
	if (bpf_obj_get_info_by_fd(fd, &mi, &len))
		return true;
	s->known = true;
	s->type = mi.type;
	s->key = mi.key_size;
	s->value = mi.value_size;
	s->vbuf = mi.value_size;
	if (is_percpu(mi.type)) {
		int n = libbpf_num_possible_cpus();

		if (n < 0) {
			sn_throw_errno(env, "libbpf_num_possible_cpus", -n);
			return false;
		}
		s->vbuf = ((mi.value_size + 7) & ~7u) * (uint32_t)n;
	}
	return true;
}

/* A size differs: true (and a thrown TypeError) when it really is a map's size that differs. */
static bool mismatch(int fd, struct map_sizes *s)
{
	if (s->known && !is_map_fd(fd))
		s->known = false;
	return s->known;
}

/*
 * A key for the map: exactly key_size bytes; none (NULL) for a map without keys
 * (queue, stack, bloom filter), or where null_ok (the first get_next_key).
 */
static bool check_key(napi_env env, int fd, struct map_sizes *s, const void *key, size_t len,
		      bool null_ok, const char *what)
{
	if (!s->known || (!key && (null_ok || s->key == 0)) || (key && len == s->key) ||
	    !mismatch(fd, s))
		return true;
	if (!key)
		sn_throw_type(env, "%s: the map has %u-byte keys, got none", what, s->key);
	else
		sn_throw_type(env, "%s must be %u bytes (the map's key_size), got %zu", what, s->key, len);
	return false;
}

static bool check_value(napi_env env, int fd, struct map_sizes *s, size_t len, const char *what)
{
	if (!s->known || len == s->vbuf || !mismatch(fd, s))
		return true;
	if (is_percpu(s->type))
		sn_throw_type(env, "%s must be %u bytes (value_size %u rounded up to 8, times %u possible CPUs), got %zu",
			      what, s->vbuf, s->value, s->vbuf / ((s->value + 7) & ~7u), len);
	else
		sn_throw_type(env, "%s must be %u bytes (the map's value_size), got %zu", what, s->vbuf, len);
	return false;
}

/* count packed items of `each` bytes in `len` bytes. */
static bool check_packed(napi_env env, int fd, struct map_sizes *s, size_t len, uint32_t count,
			 uint32_t each, const char *what)
{
	if (!s->known || len == (uint64_t)count * each || !mismatch(fd, s))
		return true;
	sn_throw_type(env, "%s must be %u %s of %u bytes, got %zu bytes", what, count, what, each, len);
	return false;
}

/* ------------------------------------------------------------ map elements */

/* mapLookupElem(fd, key, valueLen, flags = 0) -> Buffer | null when absent */
static napi_value map_lookup_elem(napi_env env, napi_callback_info info)
{
	uint32_t vlen, flags = 0;
	struct map_sizes ms;
	void *key, *val;
	size_t klen;
	napi_value b;
	int fd, err;

	SN_ARGS(env, info, 4);
	if (!get_fd(env, argv[0], &fd) || !sn_opt_bytes(env, argv[1], "key", &key, &klen) ||
	    !sn_get_u32(env, argv[2], "valueLen", &vlen) ||
	    !sn_opt_u32(env, argv[3], "flags", &flags))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_key(env, fd, &ms, key, klen, false, "key") ||
	    !check_value(env, fd, &ms, vlen, "valueLen"))
		return NULL;
	b = new_buffer(env, vlen, &val);
	if (!b)
		return NULL;
	err = bpf_map_lookup_elem_flags(fd, key, val, flags);
	if (err == -ENOENT)
		return sn_null(env);
	if (err)
		return sn_throw_errno(env, "bpf_map_lookup_elem", -err);
	return b;
}

/* mapUpdateElem(fd, key, value, flags = BPF_ANY) */
static napi_value map_update_elem(napi_env env, napi_callback_info info)
{
	uint32_t flags = 0;
	struct map_sizes ms;
	void *key, *val;
	size_t klen, vlen;
	int fd, err;

	SN_ARGS(env, info, 4);
	if (!get_fd(env, argv[0], &fd) || !sn_opt_bytes(env, argv[1], "key", &key, &klen) ||
	    !sn_get_bytes(env, argv[2], "value", &val, &vlen) ||
	    !sn_opt_u32(env, argv[3], "flags", &flags))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_key(env, fd, &ms, key, klen, false, "key") ||
	    !check_value(env, fd, &ms, vlen, "value"))
		return NULL;
	err = bpf_map_update_elem(fd, key, val, flags);
	if (err)
		return sn_throw_errno(env, "bpf_map_update_elem", -err);
	return sn_undefined(env);
}

/* mapDeleteElem(fd, key) -> true when deleted, false when absent */
static napi_value map_delete_elem(napi_env env, napi_callback_info info)
{
	struct map_sizes ms;
	size_t klen;
	void *key;
	int fd, err;

	SN_ARGS(env, info, 2);
	if (!get_fd(env, argv[0], &fd) || !sn_get_bytes(env, argv[1], "key", &key, &klen))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_key(env, fd, &ms, key, klen, false, "key"))
		return NULL;
	err = bpf_map_delete_elem(fd, key);
	if (err == -ENOENT)
		return sn_bool(env, false);
	if (err)
		return sn_throw_errno(env, "bpf_map_delete_elem", -err);
	return sn_bool(env, true);
}

/* mapGetNextKey(fd, key | null, keyLen) -> Buffer | null at the end */
static napi_value map_get_next_key(napi_env env, napi_callback_info info)
{
	struct map_sizes ms;
	void *key, *next;
	uint32_t klen_out;
	size_t klen;
	napi_value b;
	int fd, err;

	SN_ARGS(env, info, 3);
	if (!get_fd(env, argv[0], &fd) || !sn_opt_bytes(env, argv[1], "key", &key, &klen) ||
	    !sn_get_u32(env, argv[2], "keyLen", &klen_out))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_key(env, fd, &ms, key, klen, true, "key"))
		return NULL;
	if (ms.known && klen_out != ms.key && mismatch(fd, &ms))
		return sn_throw_type(env, "keyLen must be %u (the map's key_size), got %u", ms.key, klen_out);
	b = new_buffer(env, klen_out, &next);
	if (!b)
		return NULL;
	err = bpf_map_get_next_key(fd, key, next);
	if (err == -ENOENT)
		return sn_null(env);
	if (err)
		return sn_throw_errno(env, "bpf_map_get_next_key", -err);
	return b;
}

/* mapLookupAndDeleteElem(fd, key | null, valueLen) -> Buffer | null when absent */
static napi_value map_lookup_and_delete_elem(napi_env env, napi_callback_info info)
{
	struct map_sizes ms;
	void *key, *val;
	uint32_t vlen;
	size_t klen;
	napi_value b;
	int fd, err;

	SN_ARGS(env, info, 3);
	if (!get_fd(env, argv[0], &fd) || !sn_opt_bytes(env, argv[1], "key", &key, &klen) ||
	    !sn_get_u32(env, argv[2], "valueLen", &vlen))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_key(env, fd, &ms, key, klen, false, "key") ||
	    !check_value(env, fd, &ms, vlen, "valueLen"))
		return NULL;
	b = new_buffer(env, vlen, &val);
	if (!b)
		return NULL;
	err = bpf_map_lookup_and_delete_elem(fd, key, val);
	if (err == -ENOENT)
		return sn_null(env);
	if (err)
		return sn_throw_errno(env, "bpf_map_lookup_and_delete_elem", -err);
	return b;
}

/*
 * mapLookupBatch(fd, inBatch | null, keyLen, valueLen, count, {elemFlags, delete, keys, values})
 *   -> {count, keys, values, nextBatch, done}
 * keys/values hold `count` packed entries; pass nextBatch as inBatch to go on. Given keys and
 * values buffers (at least count entries each) are filled instead of new ones.
 * The batch token is opaque: a bucket index for hash maps, a key for arrays,
 * so it is given max(keyLen, 8) bytes.
 */
static napi_value map_lookup_batch(napi_env env, napi_callback_info info)
{
	uint32_t klen, vlen, count, n;
	struct map_sizes ms;
	napi_value keys, vals, next, r;
	void *in, *kbuf, *vbuf, *out;
	bool del = false;
	size_t inlen, toklen;
	int fd, err;

	SN_ARGS(env, info, 6);
	if (!get_fd(env, argv[0], &fd) || !sn_opt_bytes(env, argv[1], "inBatch", &in, &inlen) ||
	    !sn_get_u32(env, argv[2], "keyLen", &klen) ||
	    !sn_get_u32(env, argv[3], "valueLen", &vlen) ||
	    !sn_get_u32(env, argv[4], "count", &count))
		return NULL;
	if (!sn_is_nullish(env, sn_prop(env, argv[5], "delete")) &&
	    !sn_get_bool(env, sn_prop(env, argv[5], "delete"), "delete", &del))
		return NULL;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	{
		uint32_t ef = 0;

		if (!sn_opt_u32(env, sn_prop(env, argv[5], "elemFlags"), "elemFlags", &ef))
			return NULL;
		opts.elem_flags = ef;
	}
	if (count == 0)
		return sn_throw_type(env, "count must be > 0");
	if (!map_sizes(env, fd, &ms))
		return NULL;
	if (ms.known && klen != ms.key && mismatch(fd, &ms))
		return sn_throw_type(env, "keyLen must be %u (the map's key_size), got %u", ms.key, klen);
	if (!check_value(env, fd, &ms, vlen, "valueLen"))
		return NULL;
	if ((uint64_t)count * (klen + vlen) > (1u << 30))
		return sn_throw_type(env, "count %u is too large: a batch is limited to 1 GiB", count);
	toklen = klen > 8 ? klen : 8;
	if (in && inlen < toklen)
		return sn_throw_type(env, "inBatch must be a token returned as nextBatch");
	/* Caller's buffers (reused from batch to batch of a walk) or new ones, count entries each. */
	keys = sn_prop(env, argv[5], "keys");
	vals = sn_prop(env, argv[5], "values");
	if (!sn_is_nullish(env, keys) || !sn_is_nullish(env, vals)) {
		size_t kcap, vcap;

		if (!sn_get_bytes(env, keys, "keys", &kbuf, &kcap) ||
		    !sn_get_bytes(env, vals, "values", &vbuf, &vcap))
			return NULL;
		if (kcap < (size_t)klen * count || vcap < (size_t)vlen * count)
			return sn_throw_type(env, "keys and values must hold %u entries (%zu and %zu bytes), got %zu and %zu",
					     count, (size_t)klen * count, (size_t)vlen * count, kcap, vcap);
	} else if (!(keys = new_buffer(env, (size_t)klen * count, &kbuf)) ||
		   !(vals = new_buffer(env, (size_t)vlen * count, &vbuf))) {
		return NULL;
	}
	if (!(next = new_buffer(env, toklen, &out)))
		return NULL;
	n = count;
	if (del)
		err = bpf_map_lookup_and_delete_batch(fd, in, out, kbuf, vbuf, &n, &opts);
	else
		err = bpf_map_lookup_batch(fd, in, out, kbuf, vbuf, &n, &opts);
	/* ENOENT: the walk reached the end; n entries were still copied. */
	if (err && err != -ENOENT)
		return sn_throw_errno(env, del ? "bpf_map_lookup_and_delete_batch"
					       : "bpf_map_lookup_batch", -err);
	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "count", sn_num(env, n));
	sn_set(env, r, "keys", keys);
	sn_set(env, r, "values", vals);
	sn_set(env, r, "nextBatch", next);
	sn_set(env, r, "done", sn_bool(env, err == -ENOENT));
	return r;
}

/* mapDeleteBatch(fd, keys, count) -> number deleted */
static napi_value map_delete_batch(napi_env env, napi_callback_info info)
{
	struct map_sizes ms;
	uint32_t count;
	size_t klen;
	void *keys;
	int fd, err;

	SN_ARGS(env, info, 3);
	if (!get_fd(env, argv[0], &fd) || !sn_get_bytes(env, argv[1], "keys", &keys, &klen) ||
	    !sn_get_u32(env, argv[2], "count", &count))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_packed(env, fd, &ms, klen, count, ms.key, "keys"))
		return NULL;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	err = bpf_map_delete_batch(fd, keys, &count, &opts);
	if (err)
		return sn_throw_errno(env, "bpf_map_delete_batch", -err);
	return sn_num(env, count);
}

/*
 * mapUpdateBatch(fd, keys, values, count, {elemFlags, flags}) -> number written
 * keys and values hold `count` packed entries of the map's sizes.
 */
static napi_value map_update_batch(napi_env env, napi_callback_info info)
{
	uint32_t count, ef = 0, fl = 0;
	struct map_sizes ms;
	size_t klen, vlen;
	void *keys, *vals;
	int fd, err;

	SN_ARGS(env, info, 5);
	if (!get_fd(env, argv[0], &fd) || !sn_get_bytes(env, argv[1], "keys", &keys, &klen) ||
	    !sn_get_bytes(env, argv[2], "values", &vals, &vlen) ||
	    !sn_get_u32(env, argv[3], "count", &count))
		return NULL;
	if (!sn_is_nullish(env, argv[4]) &&
	    (!sn_opt_u32(env, sn_prop(env, argv[4], "elemFlags"), "elemFlags", &ef) ||
	     !sn_opt_u32(env, sn_prop(env, argv[4], "flags"), "flags", &fl)))
		return NULL;
	if (!map_sizes(env, fd, &ms) || !check_packed(env, fd, &ms, klen, count, ms.key, "keys") ||
	    !check_packed(env, fd, &ms, vlen, count, ms.vbuf, "values"))
		return NULL;
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = ef, .flags = fl);
	err = bpf_map_update_batch(fd, keys, vals, &count, &opts);
	if (err)
		return sn_throw_errno(env, "bpf_map_update_batch", -err);
	return sn_num(env, count);
}

/*
 * mapCreate(type, name, keySize, valueSize, maxEntries, {flags, innerMapFd}) -> fd
 * A map of its own, outside any object (bpf_map_create).
 */
static napi_value map_create(napi_env env, napi_callback_info info)
{
	uint32_t type, ksz, vsz, max, flags = 0;
	int32_t inner = -1;
	char *name = NULL;
	int fd;

	SN_ARGS(env, info, 6);
	if (!sn_get_u32(env, argv[0], "type", &type) || !sn_get_string(env, argv[1], "name", &name))
		return NULL;
	if (!sn_get_u32(env, argv[2], "keySize", &ksz) || !sn_get_u32(env, argv[3], "valueSize", &vsz) ||
	    !sn_get_u32(env, argv[4], "maxEntries", &max) ||
	    (!sn_is_nullish(env, argv[5]) &&
	     (!sn_opt_u32(env, sn_prop(env, argv[5], "flags"), "flags", &flags) ||
	      !sn_opt_i32(env, sn_prop(env, argv[5], "innerMapFd"), "innerMapFd", &inner)))) {
		free(name);
		return NULL;
	}
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);
	if (inner >= 0)
		opts.inner_map_fd = (uint32_t)inner;
	sn_log_begin();
	fd = bpf_map_create((enum bpf_map_type)type, name[0] ? name : NULL, ksz, vsz, max, &opts);
	free(name);
	if (fd < 0)
		return sn_throw_errno(env, "bpf_map_create", -fd);
	return sn_num(env, fd);
}

/* ------------------------------------------------------------------- pins */

/* objPin(fd, path) */
static napi_value obj_pin(napi_env env, napi_callback_info info)
{
	char *path;
	int fd, err;

	SN_ARGS(env, info, 2);
	if (!get_fd(env, argv[0], &fd) || !sn_get_string(env, argv[1], "path", &path))
		return NULL;
	err = bpf_obj_pin(fd, path);
	free(path);
	if (err)
		return sn_throw_errno(env, "bpf_obj_pin", -err);
	return sn_undefined(env);
}

/* objGet(path, fileFlags = 0) -> fd (BPF_F_RDONLY = 8, BPF_F_WRONLY = 16) */
static napi_value obj_get(napi_env env, napi_callback_info info)
{
	uint32_t flags = 0;
	char *path;
	int fd;

	SN_ARGS(env, info, 2);
	if (!sn_get_string(env, argv[0], "path", &path) ||
	    !sn_opt_u32(env, argv[1], "fileFlags", &flags)) {
		free(path);
		return NULL;
	}
	LIBBPF_OPTS(bpf_obj_get_opts, opts, .file_flags = flags);
	fd = bpf_obj_get_opts(path, &opts);
	free(path);
	if (fd < 0)
		return sn_throw_errno(env, "bpf_obj_get", -fd);
	return sn_num(env, fd);
}

/* ------------------------------------------------------------------- info */

static napi_value hex(napi_env env, const unsigned char *p, size_t n)
{
	char s[2 * 32 + 1];

	for (size_t i = 0; i < n && i < 32; i++)
		snprintf(s + 2 * i, 3, "%02x", p[i]);
	s[2 * n] = '\0';
	return sn_str(env, s);
}

/* progGetInfo(fd) -> {id, name, type, tag, verifiedInsns, runTimeNs, runCnt, recursionMisses,
 *                     nrMapIds, mapIds, loadTime, createdByUid, btfId, xlatedProgLen, jitedProgLen, gplCompatible} */
static napi_value prog_get_info(napi_env env, napi_callback_info info)
{
	struct bpf_prog_info pi;
	uint32_t len = sizeof(pi), *ids = NULL, nids;
	napi_value r, arr;
	int fd, err;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &fd))
		return NULL;
	memset(&pi, 0, sizeof(pi));
	err = bpf_obj_get_info_by_fd(fd, &pi, &len);
	if (err)
		return sn_throw_errno(env, "bpf_obj_get_info_by_fd", -err);
	nids = pi.nr_map_ids;
	if (nids) {
		/* Second call for the map ids; everything else is read again alongside. */
		ids = calloc(nids, sizeof(*ids));
		if (!ids)
			return sn_throw_errno(env, "calloc", ENOMEM);
		memset(&pi, 0, sizeof(pi));
		pi.nr_map_ids = nids;
		pi.map_ids = (uint64_t)(uintptr_t)ids;
		len = sizeof(pi);
		err = bpf_obj_get_info_by_fd(fd, &pi, &len);
		if (err) {
			free(ids);
			return sn_throw_errno(env, "bpf_obj_get_info_by_fd", -err);
		}
		if (pi.nr_map_ids < nids) /* maps can only go away between the calls */
			nids = pi.nr_map_ids;
	}
	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "id", sn_num(env, pi.id));
	sn_set(env, r, "name", sn_str(env, pi.name));
	sn_set(env, r, "type", sn_num(env, pi.type));
	sn_set(env, r, "tag", hex(env, pi.tag, sizeof(pi.tag)));
	sn_set(env, r, "verifiedInsns", sn_num(env, pi.verified_insns));
	sn_set(env, r, "runTimeNs", sn_num(env, (double)pi.run_time_ns));
	sn_set(env, r, "runCnt", sn_num(env, (double)pi.run_cnt));
	sn_set(env, r, "recursionMisses", sn_num(env, (double)pi.recursion_misses));
	sn_set(env, r, "nrMapIds", sn_num(env, pi.nr_map_ids));
	sn_set(env, r, "loadTime", sn_num(env, (double)pi.load_time));
	sn_set(env, r, "createdByUid", sn_num(env, pi.created_by_uid));
	sn_set(env, r, "btfId", sn_num(env, pi.btf_id));
	sn_set(env, r, "xlatedProgLen", sn_num(env, pi.xlated_prog_len));
	sn_set(env, r, "jitedProgLen", sn_num(env, pi.jited_prog_len));
	sn_set(env, r, "gplCompatible", sn_bool(env, pi.gpl_compatible));
	if (napi_create_array(env, &arr) == napi_ok) {
		for (uint32_t i = 0; i < nids; i++)
			napi_set_element(env, arr, i, sn_num(env, ids[i]));
		sn_set(env, r, "mapIds", arr);
	}
	free(ids);
	return r;
}

/* mapGetInfo(fd) -> {id, name, type, keySize, valueSize, maxEntries, flags, ifindex, btfId, mapExtra} */
static napi_value map_get_info(napi_env env, napi_callback_info info)
{
	struct bpf_map_info mi;
	uint32_t len = sizeof(mi);
	napi_value r;
	int fd, err;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &fd))
		return NULL;
	memset(&mi, 0, sizeof(mi));
	err = bpf_obj_get_info_by_fd(fd, &mi, &len);
	if (err)
		return sn_throw_errno(env, "bpf_obj_get_info_by_fd", -err);
	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "id", sn_num(env, mi.id));
	sn_set(env, r, "name", sn_str(env, mi.name));
	sn_set(env, r, "type", sn_num(env, mi.type));
	sn_set(env, r, "keySize", sn_num(env, mi.key_size));
	sn_set(env, r, "valueSize", sn_num(env, mi.value_size));
	sn_set(env, r, "maxEntries", sn_num(env, mi.max_entries));
	sn_set(env, r, "flags", sn_num(env, mi.map_flags));
	sn_set(env, r, "ifindex", sn_num(env, mi.ifindex));
	sn_set(env, r, "btfId", sn_num(env, mi.btf_id));
	sn_set(env, r, "mapExtra", sn_num(env, (double)mi.map_extra));
	return r;
}

/* linkGetInfo(fd) -> {id, type, progId, ifindex? (XDP links), netnsIno?, attachType?} */
static napi_value link_get_info(napi_env env, napi_callback_info info)
{
	struct bpf_link_info li;
	uint32_t len = sizeof(li);
	napi_value r;
	int fd, err;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &fd))
		return NULL;
	memset(&li, 0, sizeof(li));
	err = bpf_obj_get_info_by_fd(fd, &li, &len);
	if (err)
		return sn_throw_errno(env, "bpf_obj_get_info_by_fd", -err);
	SN_NAPI(env, napi_create_object(env, &r));
	sn_set(env, r, "id", sn_num(env, li.id));
	sn_set(env, r, "type", sn_num(env, li.type));
	sn_set(env, r, "progId", sn_num(env, li.prog_id));
	if (li.type == BPF_LINK_TYPE_XDP) {
		sn_set(env, r, "ifindex", sn_num(env, li.xdp.ifindex));
	} else if (li.type == BPF_LINK_TYPE_NETNS) {
		sn_set(env, r, "netnsIno", sn_num(env, li.netns.netns_ino));
		sn_set(env, r, "attachType", sn_num(env, li.netns.attach_type));
	}
	return r;
}

/* -------------------------------------------------------------------- ids */

typedef int (*id_fn)(uint32_t, uint32_t *);
typedef int (*fd_by_id_fn)(uint32_t);

static napi_value next_id(napi_env env, napi_callback_info info, id_fn fn, const char *op)
{
	uint32_t start = 0, next = 0;
	int err;

	SN_ARGS(env, info, 1);
	if (!sn_opt_u32(env, argv[0], "startId", &start))
		return NULL;
	err = fn(start, &next);
	if (err == -ENOENT)
		return sn_null(env);
	if (err)
		return sn_throw_errno(env, op, -err);
	return sn_num(env, next);
}

static napi_value fd_by_id(napi_env env, napi_callback_info info, fd_by_id_fn fn, const char *op)
{
	uint32_t id;
	int fd;

	SN_ARGS(env, info, 1);
	if (!sn_get_u32(env, argv[0], "id", &id))
		return NULL;
	fd = fn(id);
	if (fd < 0)
		return sn_throw_errno(env, op, -fd);
	return sn_num(env, fd);
}

/* progGetNextId(startId = 0) -> id | null; likewise mapGetNextId, linkGetNextId */
static napi_value prog_get_next_id(napi_env env, napi_callback_info info)
{
	return next_id(env, info, bpf_prog_get_next_id, "bpf_prog_get_next_id");
}

static napi_value map_get_next_id(napi_env env, napi_callback_info info)
{
	return next_id(env, info, bpf_map_get_next_id, "bpf_map_get_next_id");
}

static napi_value link_get_next_id(napi_env env, napi_callback_info info)
{
	return next_id(env, info, bpf_link_get_next_id, "bpf_link_get_next_id");
}

/* progGetFdById(id) -> fd; likewise mapGetFdById, linkGetFdById */
static napi_value prog_get_fd_by_id(napi_env env, napi_callback_info info)
{
	return fd_by_id(env, info, bpf_prog_get_fd_by_id, "bpf_prog_get_fd_by_id");
}

static napi_value map_get_fd_by_id(napi_env env, napi_callback_info info)
{
	return fd_by_id(env, info, bpf_map_get_fd_by_id, "bpf_map_get_fd_by_id");
}

static napi_value link_get_fd_by_id(napi_env env, napi_callback_info info)
{
	return fd_by_id(env, info, bpf_link_get_fd_by_id, "bpf_link_get_fd_by_id");
}

/* ------------------------------------------------------------------ links */

/* linkUpdate(linkFd, newProgFd, oldProgFd = none): with oldProgFd, BPF_F_REPLACE semantics */
static napi_value link_update(napi_env env, napi_callback_info info)
{
	int link, prog, old = -1, err;

	SN_ARGS(env, info, 3);
	if (!get_fd(env, argv[0], &link) || !get_fd(env, argv[1], &prog) ||
	    !sn_opt_i32(env, argv[2], "oldProgFd", &old))
		return NULL;
	LIBBPF_OPTS(bpf_link_update_opts, opts);
	if (old >= 0) {
		opts.flags = BPF_F_REPLACE;
		opts.old_prog_fd = (uint32_t)old;
	}
	err = bpf_link_update(link, prog, &opts);
	if (err)
		return sn_throw_errno(env, "bpf_link_update", -err);
	return sn_undefined(env);
}

/* linkDetach(linkFd): the link stays open but defunct; its program is detached */
static napi_value link_detach(napi_env env, napi_callback_info info)
{
	int link, err;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &link))
		return NULL;
	err = bpf_link_detach(link);
	if (err)
		return sn_throw_errno(env, "bpf_link_detach", -err);
	return sn_undefined(env);
}

/* ----------------------------------------------------------------- misc */

/* closeFd(fd) */
static napi_value close_fd(napi_env env, napi_callback_info info)
{
	int fd;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &fd))
		return NULL;
	/* Linux releases the fd even when close() reports an error; EINTR is no reason to retry. */
	if (close(fd) && errno != EINTR)
		return sn_throw_errno(env, "close", errno);
	return sn_undefined(env);
}

/* dupFd(fd) -> a new close-on-exec fd for the same object */
static napi_value dup_fd(napi_env env, napi_callback_info info)
{
	int fd, nfd;

	SN_ARGS(env, info, 1);
	if (!get_fd(env, argv[0], &fd))
		return NULL;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (nfd < 0)
		return sn_throw_errno(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
	return sn_num(env, nfd);
}

/* numPossibleCpus() */
static napi_value num_possible_cpus(napi_env env, napi_callback_info info)
{
	int n = libbpf_num_possible_cpus();

	if (n < 0)
		return sn_throw_errno(env, "libbpf_num_possible_cpus", -n);
	return sn_num(env, n);
}

/* enableStats(type = BPF_STATS_RUN_TIME) -> fd; statistics stay on while the fd is open */
static napi_value enable_stats(napi_env env, napi_callback_info info)
{
	uint32_t type = BPF_STATS_RUN_TIME;
	int fd;

	SN_ARGS(env, info, 1);
	if (!sn_opt_u32(env, argv[0], "type", &type))
		return NULL;
	fd = bpf_enable_stats((enum bpf_stats_type)type);
	if (fd < 0)
		return sn_throw_errno(env, "bpf_enable_stats", -fd);
	return sn_num(env, fd);
}

void sn_init_syscall(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "mapLookupElem", map_lookup_elem },
		{ "mapUpdateElem", map_update_elem },
		{ "mapDeleteElem", map_delete_elem },
		{ "mapGetNextKey", map_get_next_key },
		{ "mapLookupAndDeleteElem", map_lookup_and_delete_elem },
		{ "mapLookupBatch", map_lookup_batch },
		{ "mapDeleteBatch", map_delete_batch },
		{ "mapUpdateBatch", map_update_batch },
		{ "mapCreate", map_create },
		{ "objPin", obj_pin },
		{ "objGet", obj_get },
		{ "progGetInfo", prog_get_info },
		{ "mapGetInfo", map_get_info },
		{ "linkGetInfo", link_get_info },
		{ "progGetNextId", prog_get_next_id },
		{ "mapGetNextId", map_get_next_id },
		{ "linkGetNextId", link_get_next_id },
		{ "progGetFdById", prog_get_fd_by_id },
		{ "mapGetFdById", map_get_fd_by_id },
		{ "linkGetFdById", link_get_fd_by_id },
		{ "linkUpdate", link_update },
		{ "linkDetach", link_detach },
		{ "closeFd", close_fd },
		{ "dupFd", dup_fd },
		{ "numPossibleCpus", num_possible_cpus },
		{ "enableStats", enable_stats },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
