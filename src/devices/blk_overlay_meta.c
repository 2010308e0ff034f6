/* Copy-on-write overlay metadata: creating a new overlay, opening and validating
 * an existing one (header, table, base identity), writing the table back at close. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "blk_overlay.h"

/* ---- open / create / validate / close ---- */

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (int)(done == len);
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		done += (size_t)r;
	}
	return 0;
}

/* Identity of an image: its size and a hash of its first and last MiB plus 64
 * samples spread over it. Catches resized, rewritten or different images
 * without reading them whole. `fd` is a buffered (not O_DIRECT) descriptor. */
static int image_hash(int fd, const char *path, uint64_t sz, uint64_t *hash)
{
	char *buf = malloc(OVL_SAMPLE);
	if (!buf)
		return err_set(ENOMEM, "out of memory");
	uint64_t h = blk_hash(BLK_HASH_INIT, &sz, sizeof(sz));
	struct { uint64_t off, len; } parts[2 + OVL_SAMPLES];
	unsigned np = 0;
	parts[np].off = 0;
	parts[np++].len = sz < OVL_SAMPLE ? sz : OVL_SAMPLE;
	if (sz > OVL_SAMPLE) {
		parts[np].off = sz - OVL_SAMPLE;
		parts[np++].len = OVL_SAMPLE;
	}
	for (unsigned i = 1; i <= OVL_SAMPLES && sz > 4096; i++) {
		parts[np].off = (sz / (OVL_SAMPLES + 1) * i) & ~4095ull;
		parts[np++].len = 4096;
	}
	int ret = 0;
	for (unsigned i = 0; i < np && ret == 0; i++) {
		int r = pread_full(fd, buf, parts[i].len, parts[i].off);
		if (r <= 0)
			ret = err_set(r < 0 ? -r : EIO, "%s: reading at offset %llu: %s", path,
				      (unsigned long long)parts[i].off, r < 0 ? strerror(-r) : "short read");
		else
			h = blk_hash(h, buf, parts[i].len);
	}
	free(buf);
	*hash = h;
	return ret;
}

static int base_identity(struct blk *b, uint64_t *hash, uint64_t *mtime_ns)
{
	int fd = open(b->path, O_RDONLY | O_CLOEXEC);   /* b->fd may be O_DIRECT */
	if (fd < 0)
		return err_set(errno, "%s: %s", b->path, strerror(errno));
	struct stat st;
	fstat(fd, &st);
	*mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
	int ret = image_hash(fd, b->path, b->file_size, hash);
	close(fd);
	return ret;
}

int blk_image_identity(const char *path, struct blk_identity *id)
{
	memset(id, 0, sizeof(*id));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", path, strerror(errno));
	struct stat st;
	int ret = 0;
	if (fstat(fd, &st) < 0) {
		ret = err_set(errno, "%s: stat: %s", path, strerror(errno));
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &id->size) < 0)
			ret = err_set(errno, "%s: BLKGETSIZE64: %s", path, strerror(errno));
	} else {
		id->size = (uint64_t)st.st_size;
	}
	if (ret == 0) {
		id->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
		id->ino = (uint64_t)st.st_ino;
		id->dev = (uint64_t)(S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev);
		ret = image_hash(fd, path, id->size, &id->hash);
	}
	close(fd);
	return ret;
}

int blk_identity(const struct blk *b, struct blk_identity *id)
{
	return blk_image_identity(b->path, id);
}

static uint64_t header_hash(struct ovl_header *h)
{
	uint64_t saved = h->header_hash;
	h->header_hash = 0;
	uint64_t v = blk_hash(BLK_HASH_INIT, h, sizeof(*h));
	h->header_hash = saved;
	return v;
}

static void layout(struct ovl *o)
{
	o->csize = 1ull << o->cbits;
	o->nclusters = (o->vsize + o->csize - 1) >> o->cbits;
	o->table_bytes = (o->nclusters * 4 + OVL_PAGE - 1) & ~(uint64_t)(OVL_PAGE - 1);
	o->npages = o->table_bytes / OVL_PAGE;
	o->data_off = (OVL_HEADER_SIZE + o->table_bytes + o->csize - 1) & ~(o->csize - 1);
	/* Keep data clusters at index >= 2 so entries 0 and 1 stay free for BASE/ZERO. */
	if (o->data_off < 2 * o->csize)
		o->data_off = 2 * o->csize;
}

static int ovl_alloc_tables(struct ovl *o)
{
	o->table = calloc(o->nclusters, 4);
	o->snap = aligned_alloc(OVL_PAGE, o->table_bytes);
	size_t words = (o->npages + 63) / 64;
	o->dirty = calloc(words, 8);
	o->snap_dirty = calloc(words, 8);
	if (!o->table || !o->snap || !o->dirty || !o->snap_dirty)
		return err_set(ENOMEM, "overlay %s: out of memory for a %llu-entry table", o->path,
			       (unsigned long long)o->nclusters);
	memset(o->snap, 0, o->table_bytes);
	return 0;
}

static int ovl_create(struct blk *b, struct ovl *o, unsigned cluster_size)
{
	if (!cluster_size)
		cluster_size = 1u << OVL_DEFAULT_BITS;
	if (cluster_size & (cluster_size - 1) || cluster_size < (1u << OVL_MIN_BITS) || cluster_size > (1u << OVL_MAX_BITS))
		return err_set(EINVAL, "overlay %s: cluster size %u is not a power of two in 4 KiB..16 MiB", o->path,
			       cluster_size);
	o->cbits = (unsigned)__builtin_ctz(cluster_size);
	o->vsize = b->file_size & ~(uint64_t)(BLK_SECTOR_SIZE - 1);
	layout(o);
	if (o->nclusters > OVL_MAX_PHYS)
		return err_set(EFBIG, "overlay %s: base too large for cluster size %u", o->path, cluster_size);
	struct ovl_header *h = aligned_alloc(4096, sizeof(*h));
	if (!h)
		return err_set(ENOMEM, "out of memory");
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, OVL_MAGIC, 8);
	h->version = htole32(OVL_VERSION);
	h->header_size = htole32(OVL_HEADER_SIZE);
	h->cluster_bits = htole32(o->cbits);
	h->virtual_size = htole64(o->vsize);
	h->table_offset = htole64(OVL_HEADER_SIZE);
	h->table_entries = htole64(o->nclusters);
	h->data_offset = htole64(o->data_off);
	h->base_size = htole64(b->file_size);
	uint64_t bh, mt;
	int ret = base_identity(b, &bh, &mt);
	if (ret == 0) {
		h->base_hash = htole64(bh);
		h->base_mtime_ns = htole64(mt);
		size_t pl = strlen(b->path);
		if (pl >= sizeof(h->base_path))
			pl = sizeof(h->base_path) - 1;
		memcpy(h->base_path, b->path, pl);
		h->base_path_len = htole32((uint32_t)pl);
		h->header_hash = htole64(header_hash(h));
		ret = pwrite_full(o->fd, h, sizeof(*h), 0);
		if (ret == 0 && ftruncate(o->fd, (off_t)o->data_off) < 0)
			ret = -errno;
		if (ret == 0 && !o->ephemeral && fdatasync(o->fd) < 0)
			ret = -errno;
		if (ret < 0)
			err_set(-ret, "overlay %s: writing header: %s", o->path, strerror(-ret));
	}
	free(h);
	if (ret == 0 && !o->ephemeral) {
		/* Make the new file's directory entry durable too. */
		char *dup = strdup(o->path);
		int dfd = dup ? open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
		free(dup);
	}
	if (ret == 0)
		ret = ovl_alloc_tables(o);
	o->next_phys = o->data_off >> o->cbits;
	return ret;
}


static int ovl_load(struct blk *b, struct ovl *o, uint64_t fsize)
{
	const char *f = o->path;
	if (fsize < OVL_HEADER_SIZE)
		return err_set(EINVAL, "overlay %s: truncated at offset %llu: header needs %u bytes", f,
			       (unsigned long long)fsize, OVL_HEADER_SIZE);
	struct ovl_header *h = aligned_alloc(4096, sizeof(*h));
	if (!h)
		return err_set(ENOMEM, "out of memory");
	int ret = pread_full(o->fd, h, sizeof(*h), 0);
	if (ret <= 0) {
		ret = err_set(ret < 0 ? -ret : EIO, "overlay %s: reading header at offset 0: %s", f,
			      ret < 0 ? strerror(-ret) : "short read");
		goto out;
	}
	ret = -EINVAL;
	if (memcmp(h->magic, OVL_MAGIC, 8)) {
		err_set(EINVAL, "overlay %s: corrupt at offset 0: bad magic (not a vmsvc overlay)", f);
		goto out;
	}
	if (le32toh(h->version) != OVL_VERSION) {
		err_set(EINVAL, "overlay %s: unsupported version %u at offset 8 (want %u)", f, le32toh(h->version), OVL_VERSION);
		goto out;
	}
	if (le64toh(h->header_hash) != header_hash(h)) {
		err_set(EINVAL, "overlay %s: corrupt at offset 80: header checksum mismatch", f);
		goto out;
	}
	o->cbits = le32toh(h->cluster_bits);
	o->vsize = le64toh(h->virtual_size);
	if (le32toh(h->header_size) != OVL_HEADER_SIZE) {
		err_set(EINVAL, "overlay %s: corrupt at offset 12: header size %u", f, le32toh(h->header_size));
		goto out;
	}
	if (o->cbits < OVL_MIN_BITS || o->cbits > OVL_MAX_BITS) {
		err_set(EINVAL, "overlay %s: corrupt at offset 16: cluster bits %u outside %d..%d", f, o->cbits,
			OVL_MIN_BITS, OVL_MAX_BITS);
		goto out;
	}
	if (le32toh(h->flags)) {
		err_set(EINVAL, "overlay %s: unsupported flags 0x%x at offset 20", f, le32toh(h->flags));
		goto out;
	}
	if (o->vsize == 0 || o->vsize % BLK_SECTOR_SIZE || (o->vsize >> o->cbits) >= OVL_MAX_PHYS) {
		err_set(EINVAL, "overlay %s: corrupt at offset 24: virtual size %llu", f, (unsigned long long)o->vsize);
		goto out;
	}
	layout(o);
	if (le64toh(h->table_offset) != OVL_HEADER_SIZE) {
		err_set(EINVAL, "overlay %s: corrupt at offset 32: table offset %llu", f,
			(unsigned long long)le64toh(h->table_offset));
		goto out;
	}
	if (le64toh(h->table_entries) != o->nclusters) {
		err_set(EINVAL, "overlay %s: corrupt at offset 40: %llu table entries for %llu clusters", f,
			(unsigned long long)le64toh(h->table_entries), (unsigned long long)o->nclusters);
		goto out;
	}
	if (le64toh(h->data_offset) != o->data_off) {
		err_set(EINVAL, "overlay %s: corrupt at offset 48: data offset %llu (expected %llu)", f,
			(unsigned long long)le64toh(h->data_offset), (unsigned long long)o->data_off);
		goto out;
	}
	if (fsize < o->data_off) {
		err_set(EINVAL, "overlay %s: truncated at offset %llu: table needs the file to reach %llu", f,
			(unsigned long long)fsize, (unsigned long long)o->data_off);
		goto out;
	}
	/* The base must be the one the overlay was made from. */
	uint64_t want_size = le64toh(h->base_size), bh, mt;
	if (want_size != b->file_size) {
		err_set(EINVAL, "overlay %s: base %s changed: size %llu, overlay expects %llu", f, b->path,
			(unsigned long long)b->file_size, (unsigned long long)want_size);
		goto out;
	}
	if ((ret = base_identity(b, &bh, &mt)) < 0)
		goto out;
	ret = -EINVAL;
	if (bh != le64toh(h->base_hash)) {
		err_set(EINVAL, "overlay %s: base %s changed since the overlay was created (content hash differs)", f, b->path);
		goto out;
	}
	if (mt != le64toh(h->base_mtime_ns))
		log_warn("overlay %s: base %s has a new modification time but the same size and sampled content; using it",
			 f, b->path);
	if (o->vsize != (b->file_size & ~(uint64_t)(BLK_SECTOR_SIZE - 1))) {
		err_set(EINVAL, "overlay %s: corrupt at offset 24: virtual size %llu does not match base", f,
			(unsigned long long)o->vsize);
		goto out;
	}
	if ((ret = ovl_alloc_tables(o)) < 0)
		goto out;
	ret = pread_full(o->fd, o->snap, o->table_bytes, OVL_HEADER_SIZE);
	if (ret <= 0) {
		ret = err_set(ret < 0 ? -ret : EIO, "overlay %s: reading table at offset %u: %s", f, OVL_HEADER_SIZE,
			      ret < 0 ? strerror(-ret) : "short read");
		goto out;
	}
	/* Every entry: BASE, ZERO, or a data cluster inside the file used by no other entry. */
	uint64_t fclusters = fsize >> o->cbits;
	uint64_t *used = calloc((fclusters + 63) / 64 + 1, 8);
	if (!used) {
		ret = err_set(ENOMEM, "out of memory");
		goto out;
	}
	uint64_t first = o->data_off >> o->cbits, max_phys = first;
	ret = 0;
	for (uint64_t i = 0; i < o->nclusters; i++) {
		uint32_t e = le32toh(o->snap[i]);
		o->table[i] = e;
		if (e == OVL_E_BASE || e == OVL_E_ZERO)
			continue;
		unsigned long long at = OVL_HEADER_SIZE + i * 4;
		if (e < first || e >= fclusters || e > OVL_MAX_PHYS) {
			ret = err_set(EINVAL, "overlay %s: corrupt at offset %llu: table entry %llu points to cluster %u, outside the data area (clusters %llu..%llu)",
				      f, at, (unsigned long long)i, e, (unsigned long long)first,
				      (unsigned long long)(fclusters ? fclusters - 1 : 0));
			break;
		}
		if (used[e / 64] & (1ull << (e % 64))) {
			ret = err_set(EINVAL, "overlay %s: corrupt at offset %llu: table entry %llu points to cluster %u, already used by another entry",
				      f, at, (unsigned long long)i, e);
			break;
		}
		used[e / 64] |= 1ull << (e % 64);
		if (e + 1 > max_phys)
			max_phys = e + 1;
	}
	free(used);
	/* New clusters go past everything in the file (clusters leaked by a crash are skipped). */
	o->next_phys = (fsize + o->csize - 1) >> o->cbits;
	if (o->next_phys < max_phys)
		o->next_phys = max_phys;
out:
	free(h);
	return ret;
}

int ovl_open(struct blk *b, const struct blk_spec *spec)
{
	struct ovl *o = calloc(1, sizeof(*o));
	if (!o)
		return err_set(ENOMEM, "out of memory");
	b->ovl = o;
	o->fd = -1;
	o->ro = spec->read_only;
	o->ephemeral = spec->ephemeral;
	o->waiters_tail = &o->waiters;
	o->fl_wait_tail = &o->fl_wait;
	int direct = b->direct ? O_DIRECT : 0;
	if (o->ephemeral) {
		if (o->ro)
			return err_set(EINVAL, "%s: an ephemeral overlay cannot be read-only", b->path);
		const char *dir = spec->overlay_dir ? spec->overlay_dir : getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
		if (asprintf(&o->path, "%s/(ephemeral overlay of %s)", dir, b->path) < 0) {
			o->path = NULL;
			return err_set(ENOMEM, "out of memory");
		}
		o->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC | direct, 0600);
		if (o->fd < 0) {
			/* No O_TMPFILE on this filesystem: a named file unlinked at once. */
			char *tmpl;
			if (asprintf(&tmpl, "%s/vmsvc-overlay-XXXXXX", dir) < 0)
				return err_set(ENOMEM, "out of memory");
			o->fd = mkostemp(tmpl, O_CLOEXEC | direct);
			int e = errno;
			if (o->fd >= 0)
				unlink(tmpl);
			free(tmpl);
			if (o->fd < 0)
				return err_set(e, "ephemeral overlay in %s: %s", dir, strerror(e));
		}
		return ovl_create(b, o, spec->cluster_size);
	}
	o->path = strdup(spec->overlay);
	if (!o->path)
		return err_set(ENOMEM, "out of memory");
	o->fd = open(o->path, (o->ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC | direct, 0644);
	if (o->fd < 0)
		return err_set(errno, "overlay %s: %s", o->path, strerror(errno));
	struct stat st;
	if (fstat(o->fd, &st) < 0)
		return err_set(errno, "overlay %s: stat: %s", o->path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return err_set(EINVAL, "overlay %s: not a regular file", o->path);
	if (st.st_size == 0) {
		if (o->ro)
			return err_set(EINVAL, "overlay %s: empty, and read-only so it cannot be created", o->path);
		return ovl_create(b, o, spec->cluster_size);
	}
	return ovl_load(b, o, (uint64_t)st.st_size);
}

/* Write back every changed table page and sync (clean shutdown). */
static void ovl_sync_table(struct ovl *o)
{
	bool any = false;
	for (uint64_t w = 0; w < (o->npages + 63) / 64; w++)
		any |= o->dirty[w] != 0;
	if (!any)
		return;
	if (fdatasync(o->fd) < 0) {
		log_error("overlay %s: fdatasync: %s", o->path, strerror(errno));
		return;
	}
	ovl_snapshot_dirty(o);
	for (uint64_t pg = 0; pg < o->npages; pg++) {
		if (!(o->snap_dirty[pg / 64] & (1ull << (pg % 64))))
			continue;
		int r = pwrite_full(o->fd, (char *)o->snap + pg * OVL_PAGE, OVL_PAGE, OVL_HEADER_SIZE + pg * OVL_PAGE);
		if (r < 0) {
			log_error("overlay %s: writing table at offset %llu: %s", o->path,
				  (unsigned long long)(OVL_HEADER_SIZE + pg * OVL_PAGE), strerror(-r));
			return;
		}
	}
	if (fdatasync(o->fd) < 0)
		log_error("overlay %s: fdatasync: %s", o->path, strerror(errno));
}

void ovl_close(struct blk *b)
{
	struct ovl *o = b->ovl;
	if (o->fd >= 0 && o->table && !o->ro && !o->ephemeral)
		ovl_sync_table(o);
	if (o->fd >= 0)
		close(o->fd);
	for (struct ovl_piece *p = o->all_pieces, *n; p; p = n) {
		n = p->all_next;
		free(p->iov);
		free(p);
	}
	while (o->bounce_free) {
		void *p = o->bounce_free;
		o->bounce_free = *(void **)p;
		free(p);
	}
	free(o->table);
	free(o->snap);
	free(o->dirty);
	free(o->snap_dirty);
	free(o->path);
	free(o);
	b->ovl = NULL;
}
