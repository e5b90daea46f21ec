// SPDX-License-Identifier: GPL-2.0-only
/*
 * bpf_object: open, inspect, adjust before load, load on a worker thread.
 *
 * A failed bpf_object__load cannot be retried on the same object, and libbpf
 * 1.1 cannot tell how large a verifier log would be (a too-small buffer only
 * makes the load fail with ENOSPC). So the handle remembers the path and every
 * adjustment made to it, and can re-open the file and replay them: for a retry
 * with a larger log buffer, and to load the same spec again later.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

enum sn_setting_kind {
	SET_MAX_ENTRIES,
	SET_INITIAL_VALUE,
	SET_AUTOLOAD,
	SET_PROG_TYPE,
	SET_EXPECTED_ATTACH,
	SET_REUSE_FD,
};

struct sn_setting {
	enum sn_setting_kind kind;
	char *name; /* map or program name */
	uint32_t val;     /* SET_REUSE_FD: our own duplicate of the map fd */
	void *data; /* SET_INITIAL_VALUE */
	size_t len;
};

enum sn_obj_state {
	OBJ_CLOSED, /* no bpf_object; re-opened on demand */
	OBJ_OPEN,   /* opened and adjusted, not loaded */
	OBJ_LOADED, /* loaded: programs and maps have fds */
	OBJ_SPENT,  /* a load failed; only a re-open helps */
};

struct sn_object {
	struct bpf_object *obj;
	char *path;
	enum sn_obj_state state;
	bool busy; /* an async load owns the object */
	struct sn_setting *set;
	size_t nset, capset;
};

static const napi_type_tag obj_tag = { 0x736c75696365ULL, 0x6f626a6563740001ULL };

/* ---------------------------------------------------------------- settings */

static int apply_setting(struct bpf_object *obj, const struct sn_setting *s)
{
	struct bpf_program *prog;
	struct bpf_map *map;

	switch (s->kind) {
	case SET_MAX_ENTRIES:
	case SET_INITIAL_VALUE:
	case SET_REUSE_FD:
		map = bpf_object__find_map_by_name(obj, s->name);
		if (!map)
			return -ENOENT;
		if (s->kind == SET_MAX_ENTRIES)
			return bpf_map__set_max_entries(map, s->val);
		if (s->kind == SET_REUSE_FD)
			return bpf_map__reuse_fd(map, (int)s->val);
		return bpf_map__set_initial_value(map, s->data, s->len);
	case SET_AUTOLOAD:
	case SET_PROG_TYPE:
	case SET_EXPECTED_ATTACH:
		prog = bpf_object__find_program_by_name(obj, s->name);
		if (!prog)
			return -ENOENT;
		if (s->kind == SET_AUTOLOAD)
			return bpf_program__set_autoload(prog, s->val != 0);
		if (s->kind == SET_PROG_TYPE)
			return bpf_program__set_type(prog, (enum bpf_prog_type)s->val);
		return bpf_program__set_expected_attach_type(prog, (enum bpf_attach_type)s->val);
	}
	return -EINVAL;
}

static void free_settings(struct sn_object *h)
{
	for (size_t i = 0; i < h->nset; i++) {
		if (h->set[i].kind == SET_REUSE_FD)
			close((int)h->set[i].val);
		free(h->set[i].name);
		free(h->set[i].data);
	}
	free(h->set);
	h->set = NULL;
	h->nset = h->capset = 0;
}

/* Close whatever bpf_object the handle has, open the file afresh and replay. */
static int reopen(struct sn_object *h)
{
	struct bpf_object *obj;

	if (h->obj)
		bpf_object__close(h->obj);
	h->obj = NULL;
	h->state = OBJ_CLOSED;
	obj = bpf_object__open_file(h->path, NULL);
	if (!obj)
		return errno ? errno : EINVAL;
	for (size_t i = 0; i < h->nset; i++) {
		int err = apply_setting(obj, &h->set[i]);

		if (err) {
			bpf_object__close(obj);
			return -err;
		}
	}
	h->obj = obj;
	h->state = OBJ_OPEN;
	return 0;
}

/* An object that can still be adjusted and loaded. Returns 0 or a positive errno. */
static int ensure_fresh(struct sn_object *h)
{
	return h->state == OBJ_OPEN ? 0 : reopen(h);
}

/* Any object to inspect (names and sizes are the same before and after load). */
static int ensure_any(struct sn_object *h)
{
	return h->state == OBJ_CLOSED ? reopen(h) : 0;
}

static void handle_finalize(napi_env env, void *data, void *hint)
{
	struct sn_object *h = data;

	if (h->obj)
		bpf_object__close(h->obj);
	free_settings(h);
	free(h->path);
	free(h);
}

/* Unwrap argument v as an object handle; throws and returns NULL when it is not one. */
static struct sn_object *get_handle(napi_env env, napi_value v)
{
	struct sn_object *h = NULL;
	bool ok = false;
	napi_valuetype t;

	if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
	    napi_check_object_type_tag(env, v, &obj_tag, &ok) != napi_ok || !ok) {
		sn_throw_type(env, "handle must be a handle returned by objectOpenFile");
		return NULL;
	}
	napi_get_value_external(env, v, (void **)&h);
	if (h->busy) {
		sn_throw_errno(env, "bpf_object (a load is in progress)", EBUSY);
		return NULL;
	}
	if (!h->path) {
		sn_throw_errno(env, "bpf_object (handle was closed)", EBADF);
		return NULL;
	}
	return h;
}

/* Apply a setting to the open object, then remember it for re-opens. */
static napi_value add_setting(napi_env env, struct sn_object *h, struct sn_setting s,
			      const char *op)
{
	struct sn_setting *grown;
	int err;

	sn_log_begin();
	err = ensure_fresh(h);
	if (err)
		goto fail;
	err = -apply_setting(h->obj, &s);
	if (err)
		goto fail;
	if (h->nset == h->capset) {
		size_t cap = h->capset ? h->capset * 2 : 8;

		grown = realloc(h->set, cap * sizeof(*grown));
		if (!grown) {
			err = ENOMEM;
			goto fail;
		}
		h->set = grown;
		h->capset = cap;
	}
	h->set[h->nset++] = s;
	return sn_undefined(env);
fail:
	if (s.kind == SET_REUSE_FD)
		close((int)s.val);
	free(s.name);
	free(s.data);
	return sn_throw_errno(env, op, err);
}

/* ------------------------------------------------------------ open / close */

/* A fault to inject, for the test of the failure path below: the next tagging fails. */
static bool fail_next_tag;

static napi_status tag_handle(napi_env env, napi_value ext)
{
	if (fail_next_tag) {
		fail_next_tag = false;
		return napi_generic_failure;
	}
	return napi_type_tag_object(env, ext, &obj_tag);
}

/* testFailNextTag(): make the next objectOpenFile fail as if napi_type_tag_object had (tests only) */
static napi_value test_fail_next_tag(napi_env env, napi_callback_info info)
{
	(void)info;
	fail_next_tag = true;
	return sn_undefined(env);
}

/* objectOpenFile(path) -> handle */
static napi_value object_open_file(napi_env env, napi_callback_info info)
{
	struct sn_object *h;
	napi_value ext;
	char *path;
	int err;

	SN_ARGS(env, info, 1);
	if (!sn_get_string(env, argv[0], "path", &path))
		return NULL;
	h = calloc(1, sizeof(*h));
	if (!h) {
		free(path);
		return sn_throw_errno(env, "calloc", ENOMEM);
	}
	h->path = path;
	sn_log_begin();
	err = reopen(h);
	if (err) {
		free(path);
		free(h);
		return sn_throw_errno(env, "bpf_object__open_file", err);
	}
	if (napi_create_external(env, h, handle_finalize, NULL, &ext) != napi_ok) {
		bpf_object__close(h->obj);
		free(path);
		free(h);
		sn_throw_napi(env, "napi_create_external");
		return NULL;
	}
	/*
	 * From here the external owns h: its finalizer frees it when the external is
	 * collected, so a failure must not free it too. The object is closed now,
	 * and the handle, never tagged, is refused by get_handle.
	 */
	if (tag_handle(env, ext) != napi_ok) {
		bpf_object__close(h->obj);
		h->obj = NULL;
		h->state = OBJ_CLOSED;
		sn_throw_napi(env, "napi_type_tag_object");
		return NULL;
	}
	return ext;
}

/* Close the handle's bpf_object, if open; the handle keeps its path and settings. */
static void close_object(struct sn_object *h)
{
	if (h->obj)
		bpf_object__close(h->obj);
	h->obj = NULL;
	h->state = OBJ_CLOSED;
}

/*
 * objectClose(handle): close the bpf_object (and with it the fds of a loaded
 * object). The handle keeps its path and settings and re-opens on next use.
 */
static napi_value object_close(napi_env env, napi_callback_info info)
{
	struct sn_object *h;

	SN_ARGS(env, info, 1);
	h = get_handle(env, argv[0]);
	if (!h)
		return NULL;
	close_object(h);
	return sn_undefined(env);
}

/*
 * objectFree(handle): close the bpf_object and drop the settings now, with the
 * duplicates of the map fds that mapReuseFd keeps (adopted maps stay open
 * until then). The handle is spent: any further use is EBADF. Its memory goes
 * with the garbage collector.
 */
static napi_value object_free(napi_env env, napi_callback_info info)
{
	struct sn_object *h;

	SN_ARGS(env, info, 1);
	h = get_handle(env, argv[0]);
	if (!h)
		return NULL;
	close_object(h);
	free_settings(h);
	free(h->path);
	h->path = NULL;
	return sn_undefined(env);
}

/* --------------------------------------------------------------- inspection */

/* objectPrograms(handle) -> [{name, section, type, expectedAttachType, autoload, insnCount}] */
static napi_value object_programs(napi_env env, napi_callback_info info)
{
	struct bpf_program *prog;
	struct sn_object *h;
	napi_value arr;
	uint32_t i = 0;
	int err;

	SN_ARGS(env, info, 1);
	h = get_handle(env, argv[0]);
	if (!h)
		return NULL;
	sn_log_begin();
	err = ensure_any(h);
	if (err)
		return sn_throw_errno(env, "bpf_object__open_file", err);
	SN_NAPI(env, napi_create_array(env, &arr));
	bpf_object__for_each_program(prog, h->obj) {
		napi_value o;

		SN_NAPI(env, napi_create_object(env, &o));
		sn_set(env, o, "name", sn_str(env, bpf_program__name(prog)));
		sn_set(env, o, "section", sn_str(env, bpf_program__section_name(prog)));
		sn_set(env, o, "type", sn_num(env, bpf_program__type(prog)));
		sn_set(env, o, "expectedAttachType",
		       sn_num(env, bpf_program__expected_attach_type(prog)));
		sn_set(env, o, "autoload", sn_bool(env, bpf_program__autoload(prog)));
		sn_set(env, o, "insnCount", sn_num(env, (double)bpf_program__insn_cnt(prog)));
		napi_set_element(env, arr, i++, o);
	}
	return arr;
}

/* objectMaps(handle) -> [{name, type, keySize, valueSize, maxEntries, flags, internal, initialValueSize}] */
static napi_value object_maps(napi_env env, napi_callback_info info)
{
	struct sn_object *h;
	struct bpf_map *map;
	napi_value arr;
	uint32_t i = 0;
	int err;

	SN_ARGS(env, info, 1);
	h = get_handle(env, argv[0]);
	if (!h)
		return NULL;
	sn_log_begin();
	err = ensure_any(h);
	if (err)
		return sn_throw_errno(env, "bpf_object__open_file", err);
	SN_NAPI(env, napi_create_array(env, &arr));
	bpf_object__for_each_map(map, h->obj) {
		size_t isize = 0;
		napi_value o;

		SN_NAPI(env, napi_create_object(env, &o));
		bpf_map__initial_value(map, &isize);
		sn_set(env, o, "name", sn_str(env, bpf_map__name(map)));
		sn_set(env, o, "type", sn_num(env, bpf_map__type(map)));
		sn_set(env, o, "keySize", sn_num(env, bpf_map__key_size(map)));
		sn_set(env, o, "valueSize", sn_num(env, bpf_map__value_size(map)));
		sn_set(env, o, "maxEntries", sn_num(env, bpf_map__max_entries(map)));
		sn_set(env, o, "flags", sn_num(env, bpf_map__map_flags(map)));
		sn_set(env, o, "internal", sn_bool(env, bpf_map__is_internal(map)));
		sn_set(env, o, "initialValueSize", sn_num(env, (double)isize));
		napi_set_element(env, arr, i++, o);
	}
	return arr;
}

/*
 * objectDatasec(handle, section) -> [{name, offset, size}]: the variables of a
 * data section (".rodata", ".bss", ".data") from the object's BTF, so that a
 * caller can place constants into the section's initial value by name.
 */
static napi_value object_datasec(napi_env env, napi_callback_info info)
{
	const struct btf_var_secinfo *vsi;
	const struct btf_type *t;
	struct sn_object *h;
	const struct btf *btf;
	napi_value arr;
	char *sec;
	int id, err;

	SN_ARGS(env, info, 2);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_string(env, argv[1], "section", &sec))
		return NULL;
	sn_log_begin();
	err = ensure_any(h);
	if (err) {
		free(sec);
		return sn_throw_errno(env, "bpf_object__open_file", err);
	}
	btf = bpf_object__btf(h->obj);
	if (!btf) {
		free(sec);
		return sn_throw_errno(env, "bpf_object__btf", ENOENT);
	}
	id = btf__find_by_name_kind(btf, sec, BTF_KIND_DATASEC);
	free(sec);
	if (id < 0)
		return sn_throw_errno(env, "btf__find_by_name_kind", -id);
	t = btf__type_by_id(btf, id);
	SN_NAPI(env, napi_create_array(env, &arr));
	vsi = btf_var_secinfos(t);
	for (uint32_t i = 0; i < btf_vlen(t); i++, vsi++) {
		const struct btf_type *var = btf__type_by_id(btf, vsi->type);
		napi_value o;

		SN_NAPI(env, napi_create_object(env, &o));
		sn_set(env, o, "name", sn_str(env, btf__name_by_offset(btf, var->name_off)));
		sn_set(env, o, "offset", sn_num(env, vsi->offset));
		sn_set(env, o, "size", sn_num(env, vsi->size));
		napi_set_element(env, arr, i, o);
	}
	return arr;
}

/* mapInitialValue(handle, mapName) -> Buffer | null (maps without initial value) */
static napi_value map_initial_value(napi_env env, napi_callback_info info)
{
	struct sn_object *h;
	struct bpf_map *map;
	size_t size = 0;
	char *name;
	const void *data;
	int err;

	SN_ARGS(env, info, 2);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_string(env, argv[1], "mapName", &name))
		return NULL;
	sn_log_begin();
	err = ensure_any(h);
	if (err) {
		free(name);
		return sn_throw_errno(env, "bpf_object__open_file", err);
	}
	map = bpf_object__find_map_by_name(h->obj, name);
	free(name);
	if (!map)
		return sn_throw_errno(env, "bpf_object__find_map_by_name", ENOENT);
	data = bpf_map__initial_value(map, &size);
	return data ? sn_buffer_copy(env, data, size) : sn_null(env);
}

/* ------------------------------------------------------------- adjustments */

static napi_value set_named(napi_env env, napi_callback_info info, enum sn_setting_kind kind,
			    const char *what, const char *op)
{
	struct sn_setting s = { .kind = kind };
	struct sn_object *h;
	bool b;

	SN_ARGS(env, info, 3);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_string(env, argv[1], what, &s.name))
		return NULL;
	if (kind == SET_AUTOLOAD) {
		if (!sn_get_bool(env, argv[2], "autoload", &b))
			goto bad;
		s.val = b;
	} else if (!sn_get_u32(env, argv[2], "value", &s.val)) {
		goto bad;
	}
	return add_setting(env, h, s, op);
bad:
	free(s.name);
	return NULL;
}

/* mapSetMaxEntries(handle, mapName, n) */
static napi_value map_set_max_entries(napi_env env, napi_callback_info info)
{
	return set_named(env, info, SET_MAX_ENTRIES, "mapName", "bpf_map__set_max_entries");
}

/*
 * mapReuseFd(handle, mapName, fd): the object uses this existing map (e.g. a pinned one) instead
 * of creating its own. The handle keeps a duplicate of fd for as long as it may replay settings.
 */
static napi_value map_reuse_fd(napi_env env, napi_callback_info info)
{
	struct sn_setting s = { .kind = SET_REUSE_FD };
	struct sn_object *h;
	int32_t fd;
	int dup_fd;

	SN_ARGS(env, info, 3);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_i32(env, argv[2], "fd", &fd) || !sn_get_string(env, argv[1], "mapName", &s.name))
		return NULL;
	dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0) {
		free(s.name);
		return sn_throw_errno(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
	}
	s.val = (uint32_t)dup_fd;
	return add_setting(env, h, s, "bpf_map__reuse_fd");
}

/* programSetAutoload(handle, progName, bool) */
static napi_value program_set_autoload(napi_env env, napi_callback_info info)
{
	return set_named(env, info, SET_AUTOLOAD, "progName", "bpf_program__set_autoload");
}

/* programSetType(handle, progName, type) */
static napi_value program_set_type(napi_env env, napi_callback_info info)
{
	return set_named(env, info, SET_PROG_TYPE, "progName", "bpf_program__set_type");
}

/* programSetExpectedAttachType(handle, progName, attachType) */
static napi_value program_set_expected_attach_type(napi_env env, napi_callback_info info)
{
	return set_named(env, info, SET_EXPECTED_ATTACH, "progName",
			 "bpf_program__set_expected_attach_type");
}

/* mapSetInitialValue(handle, mapName, bytes): bytes must match the map's value size */
static napi_value map_set_initial_value(napi_env env, napi_callback_info info)
{
	struct sn_setting s = { .kind = SET_INITIAL_VALUE };
	struct sn_object *h;
	void *data;
	size_t len;

	SN_ARGS(env, info, 3);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_bytes(env, argv[2], "bytes", &data, &len) ||
	    !sn_get_string(env, argv[1], "mapName", &s.name))
		return NULL;
	s.data = malloc(len ? len : 1);
	if (!s.data) {
		free(s.name);
		return sn_throw_errno(env, "malloc", ENOMEM);
	}
	memcpy(s.data, data, len);
	s.len = len;
	return add_setting(env, h, s, "bpf_map__set_initial_value");
}

/* --------------------------------------------------------------------- load */

struct load_work {
	napi_async_work work;
	napi_deferred deferred;
	napi_ref handle_ref;
	struct sn_object *h;
	uint32_t log_level;
	size_t log_size, log_size_max;
	/* results */
	int err;
	bool log_truncated;
	char *failed_prog;
	char *vlog;
	char *libbpf_log;
};

/* The program libbpf names in "prog 'NAME': BPF program load failed", if any. */
static char *failed_prog_from_libbpf(const char *log)
{
	static const char *const marks[] = { "': BPF program load failed", "': failed to load" };

	for (size_t m = 0; log && m < SN_ARRAY_SIZE(marks); m++) {
		const char *end = strstr(log, marks[m]), *start;

		if (!end)
			continue;
		for (start = end; start > log && start[-1] != '\''; start--)
			;
		if (start > log)
			return strndup(start, (size_t)(end - start));
	}
	return NULL;
}

static void load_execute(napi_env env, void *data)
{
	struct load_work *w = data;
	struct sn_object *h = w->h;
	size_t size = w->log_size;

	sn_log_begin();
	for (;;) {
		struct bpf_program *prog, *chosen = NULL;
		char **bufs = NULL;
		size_t n = 0, i = 0;
		int err;

		err = ensure_fresh(h);
		if (err) {
			w->err = err;
			break;
		}
		bpf_object__for_each_program(prog, h->obj)
			n++;
		bufs = calloc(n ? n : 1, sizeof(*bufs));
		if (!bufs) {
			w->err = ENOMEM;
			break;
		}
		bpf_object__for_each_program(prog, h->obj) {
			/* Only programs that get loaded need a log; zeroed so "empty" means "not reached". */
			if (bpf_program__autoload(prog) && (bufs[i] = calloc(1, size))) {
				bpf_program__set_log_buf(prog, bufs[i], size);
				bpf_program__set_log_level(prog, w->log_level);
			}
			i++;
		}
		sn_log_begin(); /* keep libbpf's output of the last attempt only */
		err = bpf_object__load(h->obj);
		h->state = err ? OBJ_SPENT : OBJ_LOADED;
		if (err == -ENOSPC && size < w->log_size_max) {
			for (i = 0; i < n; i++)
				free(bufs[i]);
			free(bufs);
			size = size * 4 < w->log_size_max ? size * 4 : w->log_size_max;
			continue;
		}
		if (err) {
			w->err = -err;
			w->log_truncated = err == -ENOSPC;
			w->libbpf_log = sn_log_current()->len ? strdup(sn_log_current()->buf) : NULL;
			w->failed_prog = failed_prog_from_libbpf(w->libbpf_log);
			/*
			 * The log of the program libbpf named; else the last program that
			 * wrote a log, which is the one being loaded when the load failed.
			 */
			i = 0;
			bpf_object__for_each_program(prog, h->obj) {
				bool named = w->failed_prog &&
					     !strcmp(w->failed_prog, bpf_program__name(prog));

				if (bufs[i] && bufs[i][0] && (named || !w->failed_prog)) {
					free(w->vlog);
					w->vlog = strdup(bufs[i]);
					chosen = prog;
					if (named)
						break;
				}
				i++;
			}
			if (!w->failed_prog && chosen)
				w->failed_prog = strdup(bpf_program__name(chosen));
		}
		/* libbpf keeps the pointers but reads them only during load. */
		for (i = 0; i < n; i++)
			free(bufs[i]);
		free(bufs);
		break;
	}
}

static void load_complete(napi_env env, napi_status status, void *data)
{
	struct load_work *w = data;
	napi_value e;

	w->h->busy = false;
	if (status != napi_ok && !w->err)
		w->err = ECANCELED;
	if (w->err) {
		e = sn_errno_error(env, "bpf_object__load", w->err,
				   w->failed_prog ? w->failed_prog : NULL, w->libbpf_log);
		if (e) {
			sn_set(env, e, "log", sn_str(env, w->vlog ? w->vlog : ""));
			if (w->failed_prog)
				sn_set(env, e, "program", sn_str(env, w->failed_prog));
			sn_set(env, e, "logTruncated", sn_bool(env, w->log_truncated));
			napi_reject_deferred(env, w->deferred, e);
		}
	} else {
		napi_resolve_deferred(env, w->deferred, sn_undefined(env));
	}
	napi_delete_async_work(env, w->work);
	napi_delete_reference(env, w->handle_ref);
	free(w->failed_prog);
	free(w->vlog);
	free(w->libbpf_log);
	free(w);
}

/*
 * objectLoad(handle, {logLevel = 1, logSize = 1 MiB, logSizeMax = 64 MiB}) -> Promise<void>
 * Rejects with an errno Error carrying `log` (the verifier log of the failing
 * program), `program`, `logTruncated` and `libbpfLog`.
 */
static napi_value object_load(napi_env env, napi_callback_info info)
{
	uint32_t level = 1, size = 1u << 20, max = 64u << 20;
	struct load_work *w;
	struct sn_object *h;
	napi_value promise;

	SN_ARGS(env, info, 2);
	h = get_handle(env, argv[0]);
	if (!h || !sn_opt_u32(env, sn_prop(env, argv[1], "logLevel"), "logLevel", &level) ||
	    !sn_opt_u32(env, sn_prop(env, argv[1], "logSize"), "logSize", &size) ||
	    !sn_opt_u32(env, sn_prop(env, argv[1], "logSizeMax"), "logSizeMax", &max))
		return NULL;
	if (size < 256 || max < size)
		return sn_throw_type(env, "logSize must be >= 256 and <= logSizeMax");
	w = calloc(1, sizeof(*w));
	if (!w)
		return sn_throw_errno(env, "calloc", ENOMEM);
	w->h = h;
	w->log_level = level;
	w->log_size = size;
	w->log_size_max = max;
	if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
	    napi_create_reference(env, argv[0], 1, &w->handle_ref) != napi_ok ||
	    napi_create_async_work(env, NULL, sn_str(env, "sluice:objectLoad"), load_execute,
				   load_complete, w, &w->work) != napi_ok ||
	    napi_queue_async_work(env, w->work) != napi_ok) {
		free(w);
		sn_throw_napi(env, "objectLoad");
		return NULL;
	}
	h->busy = true;
	return promise;
}

/* ------------------------------------------------------------ loaded fds */

static napi_value loaded_fd(napi_env env, napi_callback_info info, bool is_prog)
{
	struct sn_object *h;
	char *name;
	int fd;

	SN_ARGS(env, info, 2);
	h = get_handle(env, argv[0]);
	if (!h || !sn_get_string(env, argv[1], "name", &name))
		return NULL;
	if (h->state != OBJ_LOADED) {
		free(name);
		return sn_throw_errno(env, is_prog ? "bpf_program__fd (object not loaded)"
						   : "bpf_map__fd (object not loaded)", EINVAL);
	}
	if (is_prog) {
		struct bpf_program *p = bpf_object__find_program_by_name(h->obj, name);

		fd = p ? bpf_program__fd(p) : -ENOENT;
	} else {
		struct bpf_map *m = bpf_object__find_map_by_name(h->obj, name);

		fd = m ? bpf_map__fd(m) : -ENOENT;
	}
	free(name);
	if (fd < 0)
		return sn_throw_errno(env, is_prog ? "bpf_program__fd" : "bpf_map__fd", -fd);
	return sn_num(env, fd);
}

/* programFd(handle, name) -> fd owned by the object (dup it to keep it past objectClose) */
static napi_value program_fd(napi_env env, napi_callback_info info)
{
	return loaded_fd(env, info, true);
}

/* mapFd(handle, name) -> fd owned by the object */
static napi_value map_fd(napi_env env, napi_callback_info info)
{
	return loaded_fd(env, info, false);
}

void sn_init_object(napi_env env, napi_value exports)
{
	static const struct sn_fn fns[] = {
		{ "objectOpenFile", object_open_file },
		{ "objectClose", object_close },
		{ "objectPrograms", object_programs },
		{ "objectMaps", object_maps },
		{ "objectDatasec", object_datasec },
		{ "objectLoad", object_load },
		{ "mapInitialValue", map_initial_value },
		{ "mapSetInitialValue", map_set_initial_value },
		{ "mapSetMaxEntries", map_set_max_entries },
		{ "mapReuseFd", map_reuse_fd },
		{ "programSetAutoload", program_set_autoload },
		{ "programSetType", program_set_type },
		{ "programSetExpectedAttachType", program_set_expected_attach_type },
		{ "programFd", program_fd },
		{ "mapFd", map_fd },
		{ "testFailNextTag", test_fail_next_tag },
		{ "objectFree", object_free },
	};

	sn_register(env, exports, fns, SN_ARRAY_SIZE(fns));
}
