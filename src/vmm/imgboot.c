/* `vmsvc run guest.img`: find the kernel and initrd inside an ext2/3/4 file
 * system of a disk image (see include/vmsvc/imgboot.h) and extract them into
 * memfds that boot_load() can open as /proc/self/fd/N.
 *
 * The file system is read with libext2fs (read-only, through the unix I/O
 * manager at the partition's byte offset).  Path lookup is done here, not with
 * ext2fs_namei, so that we know the canonical name of what a symlink points to
 * (the kernel version is in that name) and can bound the work: at most 40
 * symlinks per lookup, ".." never climbs above the file system root, and
 * absolute targets restart at the file system root, never the host's. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmsvc/err.h>
#include <vmsvc/imgboot.h>

#ifdef HAVE_EXT2FS
#include <ext2fs/ext2fs.h>
#endif

void imgboot_release(struct imgboot_result *r)
{
	if (r->kernel_fd >= 0)
		close(r->kernel_fd);
	if (r->initrd_fd >= 0)
		close(r->initrd_fd);
	r->kernel_fd = r->initrd_fd = -1;
	r->kernel_path[0] = r->initrd_path[0] = 0;
}

#ifdef HAVE_EXT2FS

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void human_size(uint64_t b, char *out, size_t n)
{
	if (b >= (10ULL << 30))
		snprintf(out, n, "%" PRIu64 " GiB", b >> 30);
	else if (b >= (10ULL << 20))
		snprintf(out, n, "%" PRIu64 " MiB", b >> 20);
	else
		snprintf(out, n, "%" PRIu64 " KiB", b >> 10);
}

/* Raw ext superblock facts, read before libext2fs touches anything. */
struct ext_sb {
	bool is_ext;
	char type[8];
	uint8_t uuid[16];
	uint64_t fs_bytes;
};

static void probe_ext(int fd, uint64_t off, struct ext_sb *sb)
{
	uint8_t s[1024];
	memset(sb, 0, sizeof(*sb));
	if (read_at(fd, s, sizeof(s), off + 1024) < 0 || s[56] != 0x53 || s[57] != 0xef)
		return;
	uint32_t compat = le32(s + 0x5c), incompat = le32(s + 0x60), ro_compat = le32(s + 0x64);
	uint32_t log_bs = le32(s + 0x18);
	if (log_bs > 6)   /* block size above 64 KiB: not a file system we can read */
		return;
	sb->is_ext = true;
	uint64_t blocks = le32(s + 0x04);
	if (incompat & 0x80)   /* 64bit */
		blocks |= (uint64_t)le32(s + 0x150) << 32;
	sb->fs_bytes = blocks << (10 + log_bs);
	memcpy(sb->uuid, s + 0x68, 16);
	/* ext4-only features: extents, 64bit, flex_bg, mmp, inline data / huge_file,
	 * gdt_csum, dir_nlink, extra_isize, metadata_csum. */
	if ((incompat & (0x40 | 0x80 | 0x200 | 0x100 | 0x8000)) || (ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400)))
		snprintf(sb->type, sizeof(sb->type), "ext4");
	else if (compat & 0x4)   /* has_journal */
		snprintf(sb->type, sizeof(sb->type), "ext3");
	else
		snprintf(sb->type, sizeof(sb->type), "ext2");
}

/* What a non-ext partition holds, for the "no ext2/3/4 file system" message. */
static const char *probe_other(int fd, uint64_t off, uint64_t size)
{
	uint8_t s[4096];
	if (size < sizeof(s) || read_at(fd, s, sizeof(s), off) < 0)
		return "unreadable";
	if (memcmp(s + 82, "FAT32", 5) == 0 || memcmp(s + 54, "FAT", 3) == 0)
		return "vfat";
	if (memcmp(s + 4086, "SWAPSPACE2", 10) == 0)
		return "swap";
	if (memcmp(s, "XFSB", 4) == 0)
		return "xfs";
	if (memcmp(s, "LUKS\xba\xbe", 6) == 0)
		return "LUKS";
	if (memcmp(s + 512, "LABELONE", 8) == 0)
		return "LVM PV";
	if (memcmp(s, "hsqs", 4) == 0)
		return "squashfs";
	uint8_t b[8];
	if (size > 0x10048 && read_at(fd, b, sizeof(b), off + 0x10040) == 0 && memcmp(b, "_BHRfS_M", 8) == 0)
		return "btrfs";
	for (size_t i = 0; i < sizeof(s); i++)
		if (s[i])
			return "unknown contents";
	return "empty";
}

static const char *table_name(enum imgboot_table_kind t)
{
	return t == IMGBOOT_TABLE_GPT ? "GPT" : t == IMGBOOT_TABLE_MBR ? "MBR" : "none";
}

/* Bounded "; "-separated list of findings for the final message. */
struct notes {
	char buf[320];
};

static void note_add(struct notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(struct notes *n, const char *fmt, ...)
{
	size_t len = strlen(n->buf);
	if (len + 8 >= sizeof(n->buf))
		return;
	if (len)
		len += (size_t)snprintf(n->buf + len, sizeof(n->buf) - len, "; ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(n->buf + len, sizeof(n->buf) - len, fmt, ap);
	va_end(ap);
}

#define MAX_LINKS 40
#define MAX_DEPTH 64
#define MAX_CANDIDATES 256
#define MAX_DIR_ENTRIES 100000
#define PATH_BUF 4096

static const char *ext_err(errcode_t e, char *buf, size_t n)
{
	switch (e) {
	case EXT2_ET_BAD_MAGIC: return "bad superblock magic";
	case EXT2_ET_UNSUPP_FEATURE: return "uses an incompatible feature libext2fs does not support";
	case EXT2_ET_RO_UNSUPP_FEATURE: return "uses a read-only feature libext2fs does not support";
	case EXT2_ET_SHORT_READ: return "short read (truncated image?)";
	case EXT2_ET_CORRUPT_SUPERBLOCK: return "corrupt superblock";
	case EXT2_ET_SB_CSUM_INVALID: return "superblock checksum error";
	case EXT2_ET_GDESC_BAD_BLOCK_MAP: case EXT2_ET_GDESC_BAD_INODE_MAP:
	case EXT2_ET_GDESC_BAD_INODE_TABLE: return "bad group descriptors";
	case EXT2_ET_DIR_CORRUPTED: return "corrupted directory";
	case EXT2_ET_DIR_CSUM_INVALID: return "directory checksum error";
	case EXT2_ET_INODE_CSUM_INVALID: return "inode checksum error";
	case EXT2_ET_EXTENT_HEADER_BAD: case EXT2_ET_EXTENT_CSUM_INVALID: return "corrupt extent tree";
	case EXT2_ET_BAD_INODE_NUM: return "bad inode number";
	}
	if (e > 0 && e < 4096)
		return strerror((int)e);
	snprintf(buf, n, "libext2fs error %ld", (long)e);
	return buf;
}

struct fsctx {
	ext2_filsys fs;
	const char *img;
	const char *where;   /* "partition 2" or "the file system" for messages */
	struct notes *notes;
};

/* Symlink target into buf (NUL-terminated); 0 or a negative errno. */
static int read_link(struct fsctx *c, ext2_ino_t ino, struct ext2_inode *inode, char *buf, size_t n)
{
	uint64_t size = EXT2_I_SIZE(inode);
	if (size == 0 || size >= n)
		return -ENAMETOOLONG;
	if (ext2fs_is_fast_symlink(inode)) {
		memcpy(buf, inode->i_block, size);
	} else {
		ext2_file_t f;
		unsigned int got = 0;
		if (ext2fs_file_open(c->fs, ino, 0, &f))
			return -EIO;
		errcode_t e = ext2fs_file_read(f, buf, (unsigned int)size, &got);
		ext2fs_file_close(f);
		if (e || got != size)
			return -EIO;
	}
	buf[size] = 0;
	if (strlen(buf) != size)   /* embedded NUL */
		return -EINVAL;
	return 0;
}

/* Look path up from the file system root, following symlinks (see the top of
 * the file for the rules).  On success: *ino, *inode and the canonical path.
 * Errors: -ENOENT (silently; *dangling set when a symlink led nowhere), other
 * problems also add a note. */
static int fs_resolve(struct fsctx *c, const char *path, ext2_ino_t *ino, struct ext2_inode *inode,
		      char *canon, size_t canon_sz)
{
	char rem[2 * PATH_BUF], tmp[2 * PATH_BUF], target[PATH_BUF];
	ext2_ino_t stack[MAX_DEPTH + 1];
	size_t canon_len[MAX_DEPTH + 1];
	int depth = 0, links = 0;
	const char *why = NULL;
	stack[0] = EXT2_ROOT_INO;
	canon_len[0] = 0;
	canon[0] = 0;
	if (strlen(path) >= sizeof(rem))
		return -ENAMETOOLONG;
	strcpy(rem, path);
	char *p = rem;
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, "/");
		char *next = p + len;
		if (len == 1 && p[0] == '.') {
			p = next;
			continue;
		}
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (depth > 0)
				depth--;
			canon[canon_len[depth]] = 0;
			p = next;
			continue;
		}
		struct ext2_inode dir;
		if (len > 255) { why = "name too long"; goto fail; }
		if (ext2fs_read_inode(c->fs, stack[depth], &dir)) { why = "unreadable inode"; goto fail; }
		if (!LINUX_S_ISDIR(dir.i_mode)) { why = "a path component is not a directory"; goto fail; }
		ext2_ino_t child;
		errcode_t e = ext2fs_lookup(c->fs, stack[depth], p, (int)len, NULL, &child);
		if (e == EXT2_ET_FILE_NOT_FOUND) {
			if (links)
				note_add(c->notes, "%s: dangling symlink", path);
			return -ENOENT;
		}
		if (e) {
			char eb[48];
			note_add(c->notes, "%s: %s", path, ext_err(e, eb, sizeof(eb)));
			return -EIO;
		}
		struct ext2_inode ci;
		if (child < EXT2_ROOT_INO || child > c->fs->super->s_inodes_count || ext2fs_read_inode(c->fs, child, &ci)) {
			why = "unreadable inode";
			goto fail;
		}
		if (LINUX_S_ISLNK(ci.i_mode)) {
			if (++links > MAX_LINKS) { why = "symlink loop (more than 40 links)"; goto fail; }
			if (read_link(c, child, &ci, target, sizeof(target)) < 0) { why = "unreadable symlink"; goto fail; }
			if (strlen(target) + strlen(next) + 1 >= sizeof(tmp)) { why = "symlink target too long"; goto fail; }
			snprintf(tmp, sizeof(tmp), "%s%s", target, next);
			strcpy(rem, tmp);
			p = rem;
			if (target[0] == '/') {
				depth = 0;
				canon[0] = 0;
			}
			continue;
		}
		if (depth == MAX_DEPTH) { why = "path too deep"; goto fail; }
		if (canon_len[depth] + 1 + len + 1 > canon_sz) { why = "path too long"; goto fail; }
		size_t cl = canon_len[depth];
		canon[cl] = '/';
		memcpy(canon + cl + 1, p, len);
		canon[cl + 1 + len] = 0;
		depth++;
		stack[depth] = child;
		canon_len[depth] = cl + 1 + len;
		p = next;
	}
	if (!canon[0])
		snprintf(canon, canon_sz, "/");
	*ino = stack[depth];
	if (ext2fs_read_inode(c->fs, *ino, inode)) { why = "unreadable inode"; goto fail; }
	return 0;
fail:
	note_add(c->notes, "%s: %s", path, why);
	return -ELOOP;
}

struct found {
	ext2_ino_t ino;
	uint64_t size;
	char path[256];
	char version[128];
};

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* Resolve path to a regular file. */
static int try_file(struct fsctx *c, const char *path, struct found *f)
{
	struct ext2_inode inode;
	int r = fs_resolve(c, path, &f->ino, &inode, f->path, sizeof(f->path));
	if (r < 0)
		return r;
	if (!LINUX_S_ISREG(inode.i_mode)) {
		note_add(c->notes, "%s: not a regular file", path);
		return -EINVAL;
	}
	f->size = EXT2_I_SIZE(&inode);
	return 0;
}

/* Names like vmlinuz-6.1.0.dpkg-old or vmlinuz-X.bak are leftovers, not kernels. */
static bool leftover_name(const char *n)
{
	size_t l = strlen(n);
	static const char *const sfx[] = { ".old", ".bak", "~", ".dpkg-old", ".dpkg-new", ".dpkg-tmp", ".dpkg-dist", ".sig" };
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		size_t s = strlen(sfx[i]);
		if (l > s && strcmp(n + l - s, sfx[i]) == 0)
			return true;
	}
	return false;
}

struct listing {
	char (*names)[256];
	int n;
	unsigned seen;
	bool truncated;
};

static int list_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *d, int off, int bs, char *buf, void *priv)
{
	struct listing *l = priv;
	if (++l->seen > MAX_DIR_ENTRIES) {
		l->truncated = true;
		return DIRENT_ABORT;
	}
	int len = ext2fs_dirent_name_len(d);
	if (len <= 8 || memcmp(d->name, "vmlinuz-", 8) != 0)
		return 0;
	if (l->n >= MAX_CANDIDATES) {
		l->truncated = true;
		return 0;
	}
	memcpy(l->names[l->n], d->name, (size_t)len);
	l->names[l->n][len] = 0;
	if (!leftover_name(l->names[l->n]) && strchr(l->names[l->n], '/') == NULL)
		l->n++;
	return 0;
}

static int cmp_desc(const void *a, const void *b)
{
	return -imgboot_version_cmp(a, b);
}

static void set_version(struct found *f, const char *prefix)
{
	const char *b = base_name(f->path);
	size_t pl = strlen(prefix);
	f->version[0] = 0;
	if (strncmp(b, prefix, pl) == 0 && b[pl])
		snprintf(f->version, sizeof(f->version), "%s", b + pl);
}

/* The kernel: /vmlinuz, /boot/vmlinuz, else the highest /boot/vmlinuz-*.
 * *via is the symlink convention used ("/vmlinuz", "/boot/vmlinuz") or NULL. */
static int find_kernel(struct fsctx *c, struct found *k, const char **via)
{
	static const char *const links[] = { "/vmlinuz", "/boot/vmlinuz" };
	for (size_t i = 0; i < 2; i++)
		if (try_file(c, links[i], k) == 0) {
			*via = links[i];
			set_version(k, "vmlinuz-");
			return 0;
		}
	*via = NULL;
	ext2_ino_t boot;
	struct ext2_inode bi;
	char canon[256];
	if (fs_resolve(c, "/boot", &boot, &bi, canon, sizeof(canon)) < 0 || !LINUX_S_ISDIR(bi.i_mode))
		return -ENOENT;
	struct listing l = { .names = calloc(MAX_CANDIDATES, sizeof(*l.names)) };
	if (!l.names)
		return -ENOMEM;
	errcode_t e = ext2fs_dir_iterate2(c->fs, boot, 0, NULL, list_cb, &l);
	if (e) {
		char eb[48];
		note_add(c->notes, "/boot: %s", ext_err(e, eb, sizeof(eb)));
	}
	if (l.truncated)
		note_add(c->notes, "/boot: too many entries, only part of it was searched");
	qsort(l.names, (size_t)l.n, sizeof(*l.names), cmp_desc);
	int r = -ENOENT;
	for (int i = 0; i < l.n && r < 0; i++) {
		char path[300];
		snprintf(path, sizeof(path), "/boot/%s", l.names[i]);
		if (try_file(c, path, k) == 0) {
			set_version(k, "vmlinuz-");
			r = 0;
		}
	}
	free(l.names);
	return r;
}

/* The version an initrd's file name carries, "" if none. */
static void initrd_version(const char *path, char *out, size_t n)
{
	const char *b = base_name(path);
	static const char *const pfx[] = { "initrd.img-", "initramfs-", "initrd-" };
	out[0] = 0;
	for (size_t i = 0; i < 3; i++) {
		size_t pl = strlen(pfx[i]);
		if (strncmp(b, pfx[i], pl) == 0 && b[pl]) {
			snprintf(out, n, "%s", b + pl);
			size_t l = strlen(out);
			if (l > 4 && strcmp(out + l - 4, ".img") == 0)
				out[l - 4] = 0;
			return;
		}
	}
}

static int find_initrd(struct fsctx *c, const struct found *k, const char *via, struct found *rd)
{
	const char *v = k->version;
	if (v[0]) {
		static const char *const fmts[] = { "/boot/initrd.img-%s", "/boot/initramfs-%s.img", "/boot/initrd-%s",
						    "/boot/initrd-%s.img" };
		for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
			char path[300];
			if ((size_t)snprintf(path, sizeof(path), fmts[i], v) < sizeof(path) && try_file(c, path, rd) == 0)
				return 0;
		}
	}
	/* The symlink that pairs with the kernel's symlink (or either, for an
	 * unversioned kernel); a link to another version's initrd is skipped. */
	const char *cands[2];
	int n = 0;
	if (via)
		cands[n++] = strcmp(via, "/vmlinuz") == 0 ? "/initrd.img" : "/boot/initrd.img";
	for (int i = 0; i < n; i++) {
		if (try_file(c, cands[i], rd) < 0)
			continue;
		char rv[128];
		initrd_version(rd->path, rv, sizeof(rv));
		if (v[0] && rv[0] && strcmp(rv, v) != 0) {
			note_add(c->notes, "%s is for kernel %s, not %s: ignored", cands[i], rv, v);
			continue;
		}
		return 0;
	}
	return -ENOENT;
}

/* Copy a file out of the file system into a new memfd. */
static int extract(struct fsctx *c, const struct found *f, uint64_t cap, const char *what, int *fd_out)
{
	char sz[32], capsz[32];
	if (f->size == 0)
		return err_set(EINVAL, "%s: %s %s in %s is empty", c->img, what, f->path, c->where);
	if (f->size > cap) {
		human_size(f->size, sz, sizeof(sz));
		human_size(cap, capsz, sizeof(capsz));
		return err_set(EFBIG, "%s: %s %s in %s is %s, more than the %s limit", c->img, what, f->path, c->where,
			       sz, capsz);
	}
	int fd = memfd_create(what, MFD_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: memfd_create: %s", c->img, strerror(errno));
	ext2_file_t file;
	errcode_t e = ext2fs_file_open(c->fs, f->ino, 0, &file);
	char eb[48];
	if (e) {
		close(fd);
		return err_set(EIO, "%s: cannot open %s in %s: %s", c->img, f->path, c->where, ext_err(e, eb, sizeof(eb)));
	}
	const size_t chunk = 1 << 20;
	char *buf = malloc(chunk);
	uint64_t total = 0;
	int r = buf ? 0 : err_set(ENOMEM, "%s: out of memory", c->img);
	while (r == 0 && total < f->size) {
		unsigned int want = (unsigned int)(f->size - total < chunk ? f->size - total : chunk), got = 0;
		e = ext2fs_file_read(file, buf, want, &got);
		if (e || got == 0) {
			r = err_set(EIO, "%s: reading %s in %s failed after %" PRIu64 " of %" PRIu64 " bytes: %s", c->img,
				    f->path, c->where, total, f->size, e ? ext_err(e, eb, sizeof(eb)) : "short read");
			break;
		}
		for (size_t done = 0; done < got;) {
			ssize_t w = write(fd, buf + done, got - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				r = err_set(EIO, "%s: writing the extracted %s: %s", c->img, what, strerror(errno));
				break;
			}
			done += (size_t)w;
		}
		total += got;
	}
	free(buf);
	ext2fs_file_close(file);
	if (r < 0) {
		close(fd);
		return r;
	}
	*fd_out = fd;
	return 0;
}

/* Open the ext file system at off and look for a kernel.  Returns 1 when found
 * (out filled), 0 when this file system has none, negative on a fatal error. */
static int search_fs(const char *img, const struct imgboot_part *p, const struct ext_sb *sb, struct notes *notes,
		     struct imgboot_result *out)
{
	char where[32], opts[48], eb[48];
	if (p->number)
		snprintf(where, sizeof(where), "partition %d", p->number);
	else
		snprintf(where, sizeof(where), "the file system");
	if (sb->fs_bytes > p->size) {
		note_add(notes, "%s (%s): file system larger than its %s", where, sb->type, p->number ? "partition" : "image");
		return 0;
	}
	snprintf(opts, sizeof(opts), "offset=%" PRIu64, p->offset);
	ext2_filsys fs = NULL;
	errcode_t e = ext2fs_open2(img, opts, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0, unix_io_manager, &fs);
	if (e) {
		note_add(notes, "%s (%s): cannot open: %s", where, sb->type, ext_err(e, eb, sizeof(eb)));
		return 0;
	}
	struct fsctx c = { .fs = fs, .img = img, .where = where, .notes = notes };
	struct found k, rd;
	const char *via;
	int r = find_kernel(&c, &k, &via);
	if (r < 0) {
		ext2fs_close_free(&fs);
		return r == -ENOMEM ? err_set(ENOMEM, "%s: out of memory", img) : 0;
	}
	r = extract(&c, &k, IMGBOOT_KERNEL_MAX, "kernel", &out->kernel_fd);
	if (r == 0 && find_initrd(&c, &k, via, &rd) == 0) {
		r = extract(&c, &rd, IMGBOOT_INITRD_MAX, "initrd", &out->initrd_fd);
		if (r == 0)
			snprintf(out->initrd_file, sizeof(out->initrd_file), "%s", rd.path);
	}
	ext2fs_close_free(&fs);
	if (r < 0)
		return r;
	snprintf(out->kernel_file, sizeof(out->kernel_file), "%s", k.path);
	snprintf(out->version, sizeof(out->version), "%s", k.version);
	return 1;
}

/* Partitions in the order to search: priority, then table order. */
static void search_order(const struct imgboot_layout *l, int *idx)
{
	for (int i = 0; i < l->nparts; i++) {
		int j = i;
		while (j > 0 && l->parts[idx[j - 1]].priority > l->parts[i].priority) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = i;
	}
}

#endif /* HAVE_EXT2FS */

int imgboot_find(const char *img, struct imgboot_result *out)
{
	memset(out, 0, sizeof(*out));
	out->kernel_fd = out->initrd_fd = -1;
#ifndef HAVE_EXT2FS
	return err_set(ENOTSUP, "%s: cannot look inside disk images: vmsvc was built without libext2fs "
		       "(install libext2fs-dev and rebuild), use --kernel", img);
#else
	int fd = open(img, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", img, strerror(errno));
	struct imgboot_layout *l = malloc(sizeof(*l));
	if (!l) {
		close(fd);
		return err_set(ENOMEM, "%s: out of memory", img);
	}
	int r = imgboot_read_layout(fd, img, l);
	if (r < 0)
		goto done;
	if (l->note[0])
		log_warn("%s: %s", img, l->note);

	int idx[IMGBOOT_MAX_PARTS];
	search_order(l, idx);
	struct notes notes = { "" }, searched = { "" }, others = { "" };
	int n_ext = 0;
	r = 0;
	for (int i = 0; i < l->nparts && r == 0; i++) {
		const struct imgboot_part *p = &l->parts[idx[i]];
		struct ext_sb sb;
		char sz[32];
		probe_ext(fd, p->offset, &sb);
		human_size(p->size, sz, sizeof(sz));
		if (!sb.is_ext) {
			note_add(&others, "%d %s %s %s", p->number, p->type, probe_other(fd, p->offset, p->size), sz);
			continue;
		}
		n_ext++;
		if (p->number)
			note_add(&searched, "partition %d (%s)", p->number, sb.type);
		else
			note_add(&searched, "the %s file system at offset 0", sb.type);
		r = search_fs(img, p, &sb, &notes, out);
		if (r == 1) {
			out->partition = p->number;
			out->fs_offset = p->offset;
			snprintf(out->table, sizeof(out->table), "%s", table_name(l->table));
			snprintf(out->fs_type, sizeof(out->fs_type), "%s", sb.type);
			if (p->number)
				snprintf(out->root_dev, sizeof(out->root_dev), "/dev/vda%d", p->number);
			else
				snprintf(out->root_dev, sizeof(out->root_dev), "/dev/vda");
			const uint8_t *u = sb.uuid;
			snprintf(out->root_uuid, sizeof(out->root_uuid),
				 "UUID=%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
				 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
				 u[14], u[15]);
			snprintf(out->kernel_path, sizeof(out->kernel_path), "/proc/self/fd/%d", out->kernel_fd);
			if (out->initrd_fd >= 0)
				snprintf(out->initrd_path, sizeof(out->initrd_path), "/proc/self/fd/%d", out->initrd_fd);
			r = 0;
			goto done;
		}
	}
	if (r < 0)
		goto done;
	if (n_ext == 0)
		r = err_set(ENOENT, "%s: no ext2/3/4 filesystem found (partition table: %s, %d partition%s%s%s)", img,
			    table_name(l->table), l->nparts, l->nparts == 1 ? "" : "s", l->nparts ? ": " : "", others.buf);
	else
		r = err_set(ENOENT, "%s: no kernel found (looked for /vmlinuz, /boot/vmlinuz, /boot/vmlinuz-* in %s%s%s)",
			    img, searched.buf, notes.buf[0] ? "; " : "", notes.buf);
done:
	if (r < 0)
		imgboot_release(out);
	free(l);
	close(fd);
	return r;
#endif
}
