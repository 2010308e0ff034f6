/* Suspend to / resume from an encrypted file: the snapshot state image and guest
 * RAM as records of a sealed container. Layout: include/vmsvc/suspend.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmstate.h>
#include "services/suspend_internal.h"

#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)

/* Test hook: VMSVC_TEST_SUSPEND_SLOW_MS=N sleeps N ms after each memory record,
 * so a test can kill vmsvc in the middle of writing a small guest. */
static void test_slowdown(void)
{
	const char *v = getenv("VMSVC_TEST_SUSPEND_SLOW_MS");
	long ms = v ? strtol(v, NULL, 10) : 0;
	if (ms > 0 && ms <= 10000)
		usleep((useconds_t)ms * 1000);
}

static int write_paused(struct vm *vm, struct sealed_writer *w, const uint8_t *disks, size_t disks_len)
{
	uint8_t *state = NULL;
	size_t slen = 0;
	int r = snapshot_state_build(vm, &state, &slen);
	if (r < 0)
		return err_prefix(r, "suspend");
	r = sealed_write(w, SUSPEND_REC_STATE, state, slen);
	free(state);
	if (r == 0)
		r = sealed_write(w, SUSPEND_REC_DISKS, disks, disks_len);
	/* RAM in file order (the memfd's), one record per sealed_write. */
	for (uint64_t off = 0; r == 0 && off < vm->mem.ram_size; off += SUSPEND_MEM_RECORD_MAX) {
		uint64_t n = vm->mem.ram_size - off;
		if (n > SUSPEND_MEM_RECORD_MAX)
			n = SUSPEND_MEM_RECORD_MAX;
		/* A memfd's holes and anonymous RAM's untouched pages are skipped unread;
		 * a private file mapping (restored snapshot) has every page scanned. All
		 * of RAM stays unchanged (paused) until the commit or abort below, so the
		 * writer compresses it in place. */
		int fd = vm->mem.fd >= 0 ? vm->mem.fd : vm->mem.anon ? SEALED_FD_ANON : -1;
		r = sealed_write_mapped(w, SUSPEND_REC_MEMORY, vm->mem.map + off, n, fd, fd >= 0 ? off : 0);
		test_slowdown();
	}
	if (r == 0)
		r = suspend_disks_export(vm, w, disks, disks_len);
	return r;
}

int suspend_to_file(struct vm *vm, const char *path, const struct sealed_key *key, const struct sealed_opts *opts)
{
	struct timespec t0;
	struct rusage ru0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	getrusage(RUSAGE_SELF, &ru0);
	sealed_clean_temps(path);
	struct sealed_opts o = opts ? *opts : (struct sealed_opts){ 0 };
	struct sealed_writer *w = NULL;
	/* Created (and the key derived) before pausing: the guest stops only for the copy. */
	int r = sealed_create(path, key, &o, &w);
	if (r < 0)
		return r;
	if ((r = vm_pause(vm)) < 0) {
		sealed_abort(w);
		return err_prefix(r, "suspend");
	}
	uint8_t *disks = NULL;
	size_t disks_len = 0;
	uint64_t disk_bytes = 0;
	r = suspend_disks_describe(vm, &disks, &disks_len, &disk_bytes);
	if (r == 0) {
		/* State is at most SNAP_MAX_FILE; RAM and overlay blocks dominate the total. */
		sealed_set_progress_total(w, vm->mem.ram_size + disk_bytes);
		r = write_paused(vm, w, disks, disks_len);
	}
	free(disks);
	if (r == 0) {
		r = sealed_commit(w);   /* frees w, also on failure */
		w = NULL;
	}
	if (r < 0) {
		sealed_abort(w);
		vm_resume(vm);         /* nothing lost: the VM keeps running */
		return r;
	}
	struct bus_event ev = { .type = BUS_EV_VM_SNAPSHOTTED, .vcpu = -1, .u.snapshot = { .stop = true, .suspend = true } };
	bus_publish(&vm->bus, &ev);   /* committed, still paused */
	char msg[160];
	snprintf(msg, sizeof(msg), "suspended to %.120s", path);
	vm_request_end(vm, VM_END_USER, 0, msg);
	vm_resume(vm);
	/* Wall and CPU time (every thread of the process: zstd workers included);
	 * scripts/bench/state.sh parses this line. */
	struct timespec t1;
	struct rusage ru1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru1);
	double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	log_info("suspend: %s: %llu MiB of memory, %llu MiB of overlay blocks written in %.1f ms, %.1f CPU-ms", path,
		 (unsigned long long)(vm->mem.ram_size >> 20), (unsigned long long)(disk_bytes >> 20), wall * 1e3, cpu * 1e3);
	return 0;
}

/* The state image's memory size, checked like restore will (the full validation
 * happens in vm_create once the file is authenticated). */
static int state_mem_size(const uint8_t *state, size_t len, const char *path, uint64_t *size)
{
	struct snap_header h;
	struct snap_section *sec = NULL;
	unsigned n;
	int r = snap_parse(state, len, path, &h, &sec, &n);
	free(sec);
	if (r < 0)
		return r;
	if (h.mem_size < (2ULL << 20) || h.mem_size > (1ULL << 40) || (h.mem_size & 4095))
		return err_set(EINVAL, "%s: memory size %llu out of range", path, (unsigned long long)h.mem_size);
	*size = h.mem_size;
	return 0;
}

struct load {
	const char *path;
	const struct vm_config *cfg;
	uint8_t *state;
	size_t slen;
	int fd;
	uint8_t *map;
	uint64_t size;
	struct suspend_disks *disks;
};

static int read_disks_record(struct sealed_reader *rd, struct load *l)
{
	uint32_t type;
	uint64_t len;
	int r = sealed_next(rd, &type, &len);
	if (r < 0)
		return r;
	if (r == 0 || type != SUSPEND_REC_DISKS || len > SUSPEND_DISKS_HDR + VM_MAX_DISKS * (SUSPEND_DISK_ENTRY + SUSPEND_DISK_PATH_MAX))
		return err_set(EINVAL, "%s: the disk record is missing or too large", l->path);
	uint8_t *rec = malloc(len ? len : 1);
	if (!rec)
		return err_set(ENOMEM, "out of memory");
	r = sealed_read_body(rd, rec, len);
	if (r == 0)
		r = suspend_disks_parse(rec, (size_t)len, l->path, l->cfg, &l->disks);
	free(rec);
	return r;
}

static int read_records(struct sealed_reader *rd, struct load *l)
{
	const char *path = l->path;
	uint32_t type;
	uint64_t len;
	int r = sealed_next(rd, &type, &len);
	if (r < 0)
		return r;
	if (r == 0 || type != SUSPEND_REC_STATE || len > SNAP_MAX_FILE)
		return err_set(EINVAL, "%s: not a vmsvc suspend file (first record: %s)", path,
			       r == 0 ? "none" : type != SUSPEND_REC_STATE ? "not the state" : "state too large");
	if (!(l->state = malloc(len ? len : 1)))
		return err_set(ENOMEM, "out of memory");
	l->slen = (size_t)len;
	if ((r = sealed_read_body(rd, l->state, len)) < 0)
		return r;
	uint64_t size = 0;
	if ((r = state_mem_size(l->state, (size_t)len, path, &size)) < 0)
		return r;
	/* Disks before memory: a wrong --disk fails before 512 MiB are read. */
	if ((r = read_disks_record(rd, l)) < 0)
		return r;
	int fd = memfd_create("vmsvc-guest-ram", MFD_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "memfd_create: %s", strerror(errno));
	l->fd = fd;
	if (ftruncate(fd, (off_t)size) < 0)
		return err_set(errno, "sizing guest memory (%llu bytes): %s", (unsigned long long)size, strerror(errno));
	uint8_t *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (map == MAP_FAILED)
		return err_set(errno, "mapping guest memory: %s", strerror(errno));
	l->map = map;
	l->size = size;
	uint64_t off = 0;
	while ((r = sealed_next(rd, &type, &len)) == 1) {
		if (type == SUSPEND_REC_DISK_EXTENT && off == size) {
			if ((r = suspend_disks_stage(l->disks, rd, len, path)) < 0)
				return r;
			continue;
		}
		if (type != SUSPEND_REC_MEMORY || len > SUSPEND_MEM_RECORD_MAX || len > size - off)
			return err_set(EINVAL, "%s: unexpected record (type %u, %llu bytes) at memory offset %llu", path,
				       type, (unsigned long long)len, (unsigned long long)off);
		if ((r = sealed_read_body(rd, map + off, len)) < 0)
			return r;
		off += len;
	}
	if (r < 0)
		return r;
	if (off != size)
		return err_set(EINVAL, "%s: %llu bytes of memory, the state says %llu", path, (unsigned long long)off,
			       (unsigned long long)size);
	return suspend_disks_check_complete(l->disks, path);
}

int suspend_load_file(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		      const struct vm_config *cfg, struct suspend_image *img)
{
	*img = (struct suspend_image){ .mem_fd = -1 };
	struct sealed_opts o = opts ? *opts : (struct sealed_opts){ 0 };
	o.buf_prezeroed = 1;   /* fresh memfd: zero runs stay holes */
	o.populate = 1;        /* its pages are allocated on a second core */
	struct sealed_reader *rd = NULL;
	int r = sealed_open(path, key, &o, &rd);
	if (r < 0)
		return r;
	struct load l = { .path = path, .cfg = cfg, .fd = -1 };
	r = read_records(rd, &l);
	/* Nothing read counts until every byte is authenticated. On an earlier error,
	 * that error's message is the one to keep (sealed_close sets its own). */
	char first[256] = "";
	if (r < 0)
		snprintf(first, sizeof(first), "%s", err_msg());
	int rc = sealed_close(rd);
	if (r == 0)
		r = rc;
	else
		err_set(-r, "%s", first);
	if (l.map)
		munmap(l.map, l.size);
	if (r < 0) {
		free(l.state);
		if (l.fd >= 0)
			close(l.fd);
		suspend_disks_free(l.disks);
		return r;
	}
	img->state = l.state;
	img->state_len = l.slen;
	img->mem_fd = l.fd;
	img->disks = l.disks;
	return 0;
}

int suspend_image_configure(struct suspend_image *img, struct vm_config *cfg)
{
	return suspend_disks_configure(img->disks, cfg);
}

void suspend_image_discard_new_overlays(struct suspend_image *img)
{
	suspend_disks_discard_new(img->disks);
}

void suspend_image_free(struct suspend_image *img)
{
	free(img->state);
	if (img->mem_fd >= 0)
		close(img->mem_fd);
	suspend_disks_free(img->disks);
	*img = (struct suspend_image){ .mem_fd = -1 };
}

#else /* no libsodium/libzstd */

int suspend_to_file(struct vm *vm, const char *path, const struct sealed_key *key, const struct sealed_opts *opts)
{
	(void)vm, (void)path, (void)key, (void)opts;
	return err_set(ENOTSUP, "suspend: built without libsodium/libzstd");
}
int suspend_load_file(const char *path, const struct sealed_key *key, const struct sealed_opts *opts,
		      const struct vm_config *cfg, struct suspend_image *img)
{
	(void)path, (void)key, (void)opts, (void)cfg;
	*img = (struct suspend_image){ .mem_fd = -1 };
	return err_set(ENOTSUP, "resume: built without libsodium/libzstd");
}
int suspend_image_configure(struct suspend_image *img, struct vm_config *cfg)
{
	(void)img, (void)cfg;
	return err_set(ENOTSUP, "resume: built without libsodium/libzstd");
}
void suspend_image_free(struct suspend_image *img)
{
	(void)img;
}
void suspend_image_discard_new_overlays(struct suspend_image *img)
{
	(void)img;
}
#endif

/* ---- control socket command ----
 * {"cmd":"suspend","file":"/abs","key_file":"/abs"} -> {"file":"/abs"}; the VM ends
 * after the reply's file is committed. Runs on the control thread, as vm_pause needs. */
#ifdef HAVE_JSONC
#include <time.h>
#include <json-c/json.h>
#include <vmsvc/control.h>

static const char *abs_string(struct json_object *req, const char *key)
{
	struct json_object *v = NULL;
	if (!json_object_object_get_ex(req, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Progress lines to the client at most every 100 ms (it draws a bar on a terminal). */
struct progress_state {
	uint64_t last_ns;
};

static void send_progress(uint64_t done, uint64_t total, void *arg)
{
	struct progress_state *ps = arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (done < total && now - ps->last_ns < 100000000ull)
		return;
	ps->last_ns = now;
	struct json_object *o = json_object_new_object();
	if (!o)
		return;
	json_object_object_add(o, "done", json_object_new_int64((int64_t)done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)total));
	control_progress(o);
}

static int suspend_cmd(void *opaque, struct json_object *req, struct json_object **result)
{
	struct vm *vm = opaque;
	const char *file = abs_string(req, "file");
	const char *pass = abs_string(req, "passphrase_file"), *keyf = abs_string(req, "key_file");
	if (!file || file[0] != '/')
		return err_set(EINVAL, "suspend: \"file\" (an absolute path) is required");
	if (!pass == !keyf)
		return err_set(EINVAL, "suspend: exactly one of \"passphrase_file\" and \"key_file\" is required");
	if ((pass ? pass : keyf)[0] != '/')
		return err_set(EINVAL, "suspend: key file paths must be absolute");
	struct sealed_opts opts = { .progress = send_progress };
	struct progress_state ps = { 0 };
	opts.progress_arg = &ps;
	struct json_object *lv = NULL;
	if (json_object_object_get_ex(req, "zstd_level", &lv)) {
		if (!json_object_is_type(lv, json_type_int) || json_object_get_int(lv) < -7 || json_object_get_int(lv) > 19 ||
		    json_object_get_int(lv) == 0)
			return err_set(EINVAL, "suspend: \"zstd_level\" must be an integer in -7..-1 or 1..19");
		opts.zstd_level = json_object_get_int(lv);
	}
	struct sealed_key *key = NULL;
	int r = pass ? sealed_key_from_passphrase_file(pass, &key) : sealed_key_from_key_file(keyf, &key);
	if (r < 0)
		return r;
	r = suspend_to_file(vm, file, key, &opts);
	sealed_key_free(key);
	if (r < 0)
		return r;
	struct json_object *o = json_object_new_object();
	if (o)
		json_object_object_add(o, "file", json_object_new_string(file));
	*result = o;
	return 0;
}

int suspend_control_register(struct control *ctl, struct vm *vm)
{
	return control_register_command(ctl, "suspend", suspend_cmd, vm);
}
#endif
