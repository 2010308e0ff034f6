/* Disks in a suspend file: a DISKS record naming every disk's kind and image
 * identity, then DISK_EXTENT records with the blocks of every overlay (the
 * guest's writes on top of a base image). On resume the file's blocks are
 * staged in an unnamed temp file while the file is verified, then written into
 * the new VM's overlays before it runs. Layouts: docs/suspend-format.md. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/blk.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vm.h>
#include "services/suspend_internal.h"

static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

/* One disk's entry (SUSPEND_DISK_ENTRY bytes, then path_len path bytes). */
struct disk_entry {
	uint32_t kind, flags;
	uint64_t size, cluster;
	struct blk_identity id;
	uint64_t data_bytes;
	uint32_t path_len;
	const char *path;
};
#define DISK_FLAG_RO 1u

static void entry_put(uint8_t *p, const struct disk_entry *e)
{
	put32(p, e->kind);
	put32(p + 4, e->flags);
	put64(p + 8, e->size);
	put64(p + 16, e->cluster);
	put64(p + 24, e->id.size);
	put64(p + 32, e->id.hash);
	put64(p + 40, e->id.mtime_ns);
	put64(p + 48, e->id.ino);
	put64(p + 56, e->id.dev);
	put64(p + 64, e->data_bytes);
	put32(p + 72, e->path_len);
	put32(p + 76, 0);
	memcpy(p + SUSPEND_DISK_ENTRY, e->path, e->path_len);
}

/* ---- writer ---- */

static int disk_kind(const char *spec_text, bool *ro, char **path)
{
	struct blk_spec spec;
	char *buf;
	int r = virtio_blk_parse_spec(spec_text, &spec, &buf);
	if (r < 0)
		return r;
	*ro = spec.read_only;
	*path = strdup(spec.path);
	int kind = spec.ephemeral ? SUSPEND_DISK_EPHEMERAL : spec.overlay ? SUSPEND_DISK_OVERLAY : SUSPEND_DISK_PLAIN;
	free(buf);
	return *path ? kind : err_set(ENOMEM, "out of memory");
}

static int describe_cb(struct blk *b, void *arg)
{
	struct disk_entry *e = arg;
	e->size = blk_size(b);
	e->cluster = blk_overlay_cluster_size(b);
	int r = blk_identity(b, &e->id);
	if (r < 0)
		return r;
	e->data_bytes = 0;
	if (e->kind == SUSPEND_DISK_PLAIN)
		return 0;
	struct blk_extent x;
	for (uint64_t pos = 0; (r = blk_overlay_next_extent(b, &pos, &x)) == 1;)
		if (x.kind == BLK_EXTENT_DATA)
			e->data_bytes += x.length;
	return r;
}

int suspend_disks_describe(struct vm *vm, uint8_t **rec_out, size_t *len_out, uint64_t *data_bytes)
{
	unsigned n = vm->cfg.ndisks;
	size_t len = SUSPEND_DISKS_HDR + (size_t)n * (SUSPEND_DISK_ENTRY + SUSPEND_DISK_PATH_MAX);
	uint8_t *rec = calloc(1, len);
	if (!rec)
		return err_set(ENOMEM, "out of memory");
	put32(rec, SUSPEND_DISKS_VERSION);
	put32(rec + 4, n);
	size_t at = SUSPEND_DISKS_HDR;
	*data_bytes = 0;
	int r = 0;
	for (unsigned i = 0; i < n && r == 0; i++) {
		struct disk_entry e = { 0 };
		bool ro;
		char *path = NULL;
		if ((r = disk_kind(vm->cfg.disks[i], &ro, &path)) < 0)
			break;
		e.kind = (uint32_t)r;
		e.flags = ro ? DISK_FLAG_RO : 0;
		e.path = path;
		e.path_len = (uint32_t)(strlen(path) < SUSPEND_DISK_PATH_MAX ? strlen(path) : SUSPEND_DISK_PATH_MAX);
		if (e.kind != SUSPEND_DISK_PLAIN && ro)
			r = err_set(ENOTSUP, "suspend: disk %u (%s): read-only overlays cannot be suspended", i,
				    vm->cfg.disks[i]);
		else
			r = virtio_blk_with_backend(vm, i, describe_cb, &e);
		if (r == 0) {
			entry_put(rec + at, &e);
			at += SUSPEND_DISK_ENTRY + e.path_len;
			*data_bytes += e.data_bytes;
		}
		free(path);
	}
	if (r < 0) {
		free(rec);
		return err_prefix(r, "suspend: disk");
	}
	*rec_out = rec;
	*len_out = at;
	return 0;
}

struct export_ctx {
	struct sealed_writer *w;
	uint32_t disk;
	uint64_t expect, written;
	uint8_t *buf;   /* SUSPEND_EXTENT_HDR + SUSPEND_EXTENT_DATA_MAX */
};

static int export_cb(struct blk *b, void *arg)
{
	struct export_ctx *x = arg;
	struct blk_extent e;
	int r;
	for (uint64_t pos = 0; (r = blk_overlay_next_extent(b, &pos, &e)) == 1;) {
		for (uint64_t off = e.offset; off < e.offset + e.length;) {
			uint64_t n = e.offset + e.length - off;
			if (e.kind == BLK_EXTENT_DATA && n > SUSPEND_EXTENT_DATA_MAX)
				n = SUSPEND_EXTENT_DATA_MAX;
			put32(x->buf, x->disk);
			put32(x->buf + 4, e.kind == BLK_EXTENT_DATA ? SUSPEND_EXTENT_DATA : SUSPEND_EXTENT_ZERO);
			put64(x->buf + 8, off);
			put64(x->buf + 16, n);
			put64(x->buf + 24, 0);
			uint64_t body = 0;
			if (e.kind == BLK_EXTENT_DATA) {
				if ((r = blk_overlay_read(b, off, x->buf + SUSPEND_EXTENT_HDR, n)) < 0)
					return r;
				body = n;
				x->written += n;
			}
			if ((r = sealed_write(x->w, SUSPEND_REC_DISK_EXTENT, x->buf, SUSPEND_EXTENT_HDR + body)) < 0)
				return r;
			off += n;
		}
	}
	if (r == 0 && x->written != x->expect)
		return err_set(EAGAIN, "disk %u changed while it was being saved", x->disk);
	return r;
}

int suspend_disks_export(struct vm *vm, struct sealed_writer *w, const uint8_t *rec, size_t len)
{
	unsigned n = get32(rec + 4);
	struct export_ctx x = { .w = w, .buf = malloc(SUSPEND_EXTENT_HDR + SUSPEND_EXTENT_DATA_MAX) };
	if (!x.buf)
		return err_set(ENOMEM, "out of memory");
	int r = 0;
	size_t at = SUSPEND_DISKS_HDR;
	for (unsigned i = 0; i < n && r == 0 && at + SUSPEND_DISK_ENTRY <= len; i++) {
		const uint8_t *p = rec + at;
		at += SUSPEND_DISK_ENTRY + get32(p + 72);
		if (get32(p) == SUSPEND_DISK_PLAIN)
			continue;
		x.disk = i;
		x.expect = get64(p + 64);
		x.written = 0;
		r = virtio_blk_with_backend(vm, i, export_cb, &x);
	}
	free(x.buf);
	return r < 0 ? err_prefix(r, "suspend: overlay") : 0;
}

/* ---- reader ---- */

struct staged_extent {
	uint32_t disk, kind;
	uint64_t off, len, stage_off;
};

struct suspend_disks {
	unsigned n;
	struct {
		uint32_t kind, flags;
		uint64_t size, data_bytes, got, next_off;
		char saved_path[SUSPEND_DISK_PATH_MAX + 1];
		char *spec;   /* rewritten --disk spec (owned), or NULL */
		char *new_overlay;    /* overlay=FILE that resume creates (or fills, if empty) */
		bool overlay_existed; /* ... and it was an empty file already */
	} d[VM_MAX_DISKS];
	int stage_fd;
	uint64_t stage_len;
	struct staged_extent *ext;
	size_t next, cap;
	uint8_t *buf;
};

void suspend_disks_free(struct suspend_disks *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < d->n; i++) {
		free(d->d[i].spec);
		free(d->d[i].new_overlay);
	}
	if (d->stage_fd >= 0)
		close(d->stage_fd);
	free(d->ext);
	free(d->buf);
	free(d);
}

static const char *kind_name(uint32_t k)
{
	return k == SUSPEND_DISK_OVERLAY ? "an overlay" : k == SUSPEND_DISK_EPHEMERAL ? "an ephemeral overlay" : "no overlay";
}

/* The image given for disk i against the one it was suspended with. */
static int check_given(struct suspend_disks *d, unsigned i, const struct disk_entry *e, const char *spec_text,
		       const char *fname)
{
	struct blk_spec spec;
	char *buf;
	int r = virtio_blk_parse_spec(spec_text, &spec, &buf);
	if (r < 0)
		return err_prefix(r, "--disk %s", spec_text);
	struct blk_identity id;
	if ((r = blk_image_identity(spec.path, &id)) < 0)
		goto out;
	const char *saved = d->d[i].saved_path;
	if (id.size != e->id.size) {
		r = err_set(EINVAL, "%s: disk %u: %s is %llu bytes, the image the VM was suspended with (%s) was %llu", fname,
			    i, spec.path, (unsigned long long)id.size, saved, (unsigned long long)e->id.size);
		goto out;
	}
	if (id.hash != e->id.hash) {
		r = err_set(EINVAL, "%s: disk %u: %s is not the image the VM was suspended with (%s): its contents differ",
			    fname, i, spec.path, saved);
		goto out;
	}
	if (id.mtime_ns != e->id.mtime_ns || id.ino != e->id.ino || id.dev != e->id.dev)
		log_warn("%s: disk %u: %s has the same size and sampled contents as %s but another inode or mtime "
			 "(a copy?); using it", fname, i, spec.path, saved);
	if (e->kind != SUSPEND_DISK_PLAIN) {
		struct stat st;
		if (spec.read_only)
			r = err_set(EINVAL, "%s: disk %u had %s; its blocks cannot go into a read-only disk (drop ,ro)", fname, i,
				    kind_name(e->kind));
		else if (spec.overlay && stat(spec.overlay, &st) == 0 && st.st_size > 0)
			r = err_set(EEXIST, "%s: disk %u: overlay %s already exists; resume recreates the overlay from "
				    "the suspend file: give a new path, or ,ephemeral", fname, i, spec.overlay);
		else if (spec.overlay) {
			d->d[i].overlay_existed = stat(spec.overlay, &st) == 0;
			if (!(d->d[i].new_overlay = strdup(spec.overlay)))
				r = err_set(ENOMEM, "out of memory");
		}
	}
out:
	free(buf);
	return r;
}

int suspend_disks_parse(const uint8_t *rec, size_t len, const char *fname, const struct vm_config *cfg,
			struct suspend_disks **out)
{
	if (len < SUSPEND_DISKS_HDR)
		return err_set(EINVAL, "%s: disk record too short (%zu bytes)", fname, len);
	if (get32(rec) != SUSPEND_DISKS_VERSION || get64(rec + 8) != 0)
		return err_set(EINVAL, "%s: disk record version %u not supported", fname, get32(rec));
	unsigned n = get32(rec + 4);
	if (n > VM_MAX_DISKS)
		return err_set(EINVAL, "%s: disk record: %u disks (at most %d)", fname, n, VM_MAX_DISKS);
	if (cfg && n != cfg->ndisks)
		return err_set(EINVAL, "%s: the VM was suspended with %u disk(s); give the same number of --disk options "
			       "(got %u)", fname, n, cfg->ndisks);
	struct suspend_disks *d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(ENOMEM, "out of memory");
	d->stage_fd = -1;
	d->n = n;
	size_t at = SUSPEND_DISKS_HDR;
	int r = 0;
	for (unsigned i = 0; i < n && r == 0; i++) {
		if (len - at < SUSPEND_DISK_ENTRY) {
			r = err_set(EINVAL, "%s: disk record: entry %u truncated", fname, i);
			break;
		}
		const uint8_t *p = rec + at;
		struct disk_entry e = {
			.kind = get32(p), .flags = get32(p + 4), .size = get64(p + 8), .cluster = get64(p + 16),
			.id = { get64(p + 24), get64(p + 32), get64(p + 40), get64(p + 48), get64(p + 56) },
			.data_bytes = get64(p + 64), .path_len = get32(p + 72),
		};
		bool overlaid = e.kind == SUSPEND_DISK_OVERLAY || e.kind == SUSPEND_DISK_EPHEMERAL;
		if (e.kind > SUSPEND_DISK_EPHEMERAL || (e.flags & ~DISK_FLAG_RO) || get32(p + 76) ||
		    (overlaid && (e.flags & DISK_FLAG_RO)) || e.size == 0 || (e.size & (BLK_SECTOR_SIZE - 1)) ||
		    e.size > e.id.size || e.data_bytes > e.size || (!overlaid && (e.cluster || e.data_bytes)) ||
		    (overlaid && (e.cluster < 4096 || e.cluster > (16u << 20) || (e.cluster & (e.cluster - 1)))) ||
		    e.path_len > SUSPEND_DISK_PATH_MAX || e.path_len > len - at - SUSPEND_DISK_ENTRY) {
			r = err_set(EINVAL, "%s: disk record: entry %u is invalid", fname, i);
			break;
		}
		d->d[i].kind = e.kind;
		d->d[i].flags = e.flags;
		d->d[i].size = e.size;
		d->d[i].data_bytes = e.data_bytes;
		memcpy(d->d[i].saved_path, p + SUSPEND_DISK_ENTRY, e.path_len);
		/* For messages only: a hostile path must not carry control characters. */
		for (uint32_t k = 0; k < e.path_len; k++)
			if ((unsigned char)d->d[i].saved_path[k] < 0x20 || d->d[i].saved_path[k] == 0x7f)
				d->d[i].saved_path[k] = '?';
		at += SUSPEND_DISK_ENTRY + e.path_len;
		if (cfg)
			r = check_given(d, i, &e, cfg->disks[i], fname);
	}
	if (r == 0 && at != len)
		r = err_set(EINVAL, "%s: disk record: %zu bytes of trailing data", fname, len - at);
	if (r < 0) {
		suspend_disks_free(d);
		return r;
	}
	*out = d;
	return 0;
}

static int open_stage(struct suspend_disks *d)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/var/tmp";
	d->stage_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (d->stage_fd >= 0)
		return 0;
	char *tmpl;
	if (asprintf(&tmpl, "%s/vmsvc-resume-XXXXXX", dir) < 0)
		return err_set(ENOMEM, "out of memory");
	d->stage_fd = mkostemp(tmpl, O_CLOEXEC);
	int e = errno;
	if (d->stage_fd >= 0)
		unlink(tmpl);
	free(tmpl);
	return d->stage_fd >= 0 ? 0 : err_set(e, "staging disk blocks in %s: %s", dir, strerror(e));
}

int suspend_disks_stage(struct suspend_disks *d, struct sealed_reader *rd, uint64_t len, const char *fname)
{
	if (len < SUSPEND_EXTENT_HDR || len > SUSPEND_EXTENT_HDR + SUSPEND_EXTENT_DATA_MAX)
		return err_set(EINVAL, "%s: disk extent record of %llu bytes", fname, (unsigned long long)len);
	if (!d->buf && !(d->buf = malloc(SUSPEND_EXTENT_HDR + SUSPEND_EXTENT_DATA_MAX)))
		return err_set(ENOMEM, "out of memory");
	int r = sealed_read_body(rd, d->buf, len);
	if (r < 0)
		return r;
	const uint8_t *p = d->buf;
	uint32_t disk = get32(p), kind = get32(p + 4);
	uint64_t off = get64(p + 8), n = get64(p + 16);
	if (disk >= d->n || d->d[disk].kind == SUSPEND_DISK_PLAIN)
		return err_set(EINVAL, "%s: disk extent for disk %u, which has no overlay", fname, disk);
	uint64_t size = d->d[disk].size;
	bool data = kind == SUSPEND_EXTENT_DATA;
	if ((!data && kind != SUSPEND_EXTENT_ZERO) || get64(p + 24) || n == 0 || (off | n) & (BLK_SECTOR_SIZE - 1) ||
	    off > size || n > size - off || off < d->d[disk].next_off || len != SUSPEND_EXTENT_HDR + (data ? n : 0))
		return err_set(EINVAL, "%s: disk %u: invalid extent (kind %u, %llu bytes at %llu)", fname, disk, kind,
			       (unsigned long long)n, (unsigned long long)off);
	if (d->next == SUSPEND_EXTENTS_MAX)
		return err_set(EINVAL, "%s: more than %u disk extents", fname, SUSPEND_EXTENTS_MAX);
	if (d->next == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 256;
		struct staged_extent *x = realloc(d->ext, cap * sizeof(*x));
		if (!x)
			return err_set(ENOMEM, "out of memory");
		d->ext = x;
		d->cap = cap;
	}
	struct staged_extent *x = &d->ext[d->next++];
	*x = (struct staged_extent){ disk, kind, off, n, d->stage_len };
	d->d[disk].next_off = off + n;
	if (!data)
		return 0;
	if ((d->d[disk].got += n) > d->d[disk].data_bytes)
		return err_set(EINVAL, "%s: disk %u: more overlay data than announced (%llu bytes)", fname, disk,
			       (unsigned long long)d->d[disk].data_bytes);
	if (d->stage_fd < 0 && (r = open_stage(d)) < 0)
		return r;
	for (uint64_t done = 0; done < n;) {
		ssize_t k = pwrite(d->stage_fd, p + SUSPEND_EXTENT_HDR + done, n - done, (off_t)(d->stage_len + done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_set(errno, "staging disk blocks: %s", strerror(errno));
		done += (uint64_t)k;
	}
	d->stage_len += n;
	return 0;
}

int suspend_disks_check_complete(const struct suspend_disks *d, const char *fname)
{
	for (unsigned i = 0; i < d->n; i++)
		if (d->d[i].got != d->d[i].data_bytes)
			return err_set(EINVAL, "%s: disk %u: %llu bytes of overlay data, %llu announced", fname, i,
				       (unsigned long long)d->d[i].got, (unsigned long long)d->d[i].data_bytes);
	return 0;
}

int suspend_disks_configure(struct suspend_disks *d, struct vm_config *cfg)
{
	for (unsigned i = 0; i < d->n && i < cfg->ndisks; i++) {
		if (d->d[i].kind == SUSPEND_DISK_PLAIN)
			continue;
		struct blk_spec spec;
		char *buf;
		int r = virtio_blk_parse_spec(cfg->disks[i], &spec, &buf);
		if (r < 0)
			return r;
		bool plain = !spec.overlay && !spec.ephemeral;
		free(buf);
		if (!plain)
			continue;
		/* The base is never written: the saved blocks go into a fresh overlay. */
		if (asprintf(&d->d[i].spec, "%s,ephemeral", cfg->disks[i]) < 0) {
			d->d[i].spec = NULL;
			return err_set(ENOMEM, "out of memory");
		}
		log_info("resume: disk %u had %s: its blocks go into an ephemeral overlay on %s (give "
			 "overlay=FILE to keep them)", i, kind_name(d->d[i].kind), cfg->disks[i]);
		cfg->disks[i] = d->d[i].spec;
	}
	cfg->restore_hook = suspend_disks_apply;
	cfg->restore_hook_arg = d;
	return 0;
}

/* ---- filling the new VM's overlays (restore hook, before anything runs) ---- */

struct apply_ctx {
	struct suspend_disks *d;
	uint32_t disk;
	uint8_t *buf;
};

static void io_done(void *opaque, int status, uint64_t bytes)
{
	(void)bytes;
	*(int *)opaque = status;
}

static int apply_cb(struct blk *b, void *arg)
{
	struct apply_ctx *a = arg;
	struct suspend_disks *d = a->d;
	if (blk_size(b) != d->d[a->disk].size)
		return err_set(EINVAL, "disk %u: %llu bytes, suspended with %llu", a->disk, (unsigned long long)blk_size(b),
			       (unsigned long long)d->d[a->disk].size);
	int r = 0;
	for (size_t i = 0; i < d->next && r == 0; i++) {
		const struct staged_extent *x = &d->ext[i];
		if (x->disk != a->disk)
			continue;
		if (x->kind == SUSPEND_EXTENT_ZERO) {
			int st_ = 1;
			int q = blk_write_zeroes(b, x->off, x->len, io_done, &st_);
			if (q == 0)
				blk_drain(b);
			r = q < 0 ? q : st_;
			if (r == -EOPNOTSUPP || r == -ENOTSUP) {
				/* Zero data instead: reads of the range must give zeros, not the base. */
				memset(a->buf, 0, SUSPEND_EXTENT_DATA_MAX);
				r = 0;
				for (uint64_t o = 0; o < x->len && r == 0;) {
					uint64_t n = x->len - o < SUSPEND_EXTENT_DATA_MAX ? x->len - o : SUSPEND_EXTENT_DATA_MAX;
					struct iovec iov = { a->buf, n };
					st_ = 1;
					q = blk_write(b, x->off + o, &iov, 1, io_done, &st_);
					if (q == 0)
						blk_drain(b);
					r = q < 0 ? q : st_;
					o += n;
				}
			}
		} else {
			for (uint64_t got = 0; got < x->len && r == 0;) {
				ssize_t k = pread(d->stage_fd, a->buf + got, x->len - got, (off_t)(x->stage_off + got));
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0)
					r = k < 0 ? -errno : -EIO;
				else
					got += (uint64_t)k;
			}
			if (r == 0) {
				struct iovec iov = { a->buf, x->len };
				int st_ = 1;
				int q = blk_write(b, x->off, &iov, 1, io_done, &st_);
				if (q == 0)
					blk_drain(b);
				r = q < 0 ? q : st_;
			}
		}
		if (r < 0)
			return err_set(-r, "disk %u: writing %llu bytes at %llu into the overlay: %s", a->disk,
				       (unsigned long long)x->len, (unsigned long long)x->off, strerror(-r));
	}
	/* Durable before the guest runs (named overlays: the table too). */
	int st_ = 1;
	int q = blk_flush(b, io_done, &st_);
	if (q == 0)
		blk_drain(b);
	r = q < 0 ? q : st_;
	return r < 0 ? err_set(-r, "disk %u: flushing the overlay: %s", a->disk, strerror(-r)) : 0;
}

int suspend_disks_apply(struct vm *vm, void *disks)
{
	struct suspend_disks *d = disks;
	struct apply_ctx a = { .d = d };
	if (posix_memalign((void **)&a.buf, 4096, SUSPEND_EXTENT_DATA_MAX))
		return err_set(ENOMEM, "out of memory");
	int r = 0;
	for (unsigned i = 0; i < d->n && r == 0; i++) {
		if (d->d[i].kind == SUSPEND_DISK_PLAIN)
			continue;
		a.disk = i;
		r = virtio_blk_with_backend(vm, i, apply_cb, &a);
	}
	free(a.buf);
	return r < 0 ? err_prefix(r, "resume") : 0;
}

void suspend_disks_discard_new(struct suspend_disks *d)
{
	for (unsigned i = 0; d && i < d->n; i++) {
		const char *f = d->d[i].new_overlay;
		if (!f)
			continue;
		/* Half-filled: it would be refused next time ("already exists"). */
		if (d->d[i].overlay_existed ? truncate(f, 0) : unlink(f))
			log_warn("resume: could not remove the unfinished overlay %s: %s", f, strerror(errno));
	}
}
