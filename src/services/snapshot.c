/* Snapshots: the state file format (header, checked sections, end marker) and the
 * snapshot/restore service. Format: docs/snapshot-format.md. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmstate.h>

#ifndef VMSVC_VERSION
#define VMSVC_VERSION "unknown"
#endif

/* ---- little-endian helpers (the host is x86-64; explicit for the format) ---- */
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- CRC-32C (Castagnoli), reflected, table driven ---- */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t snap_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	const uint8_t *p = buf;
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- header and sections ----
 * header (128 bytes): magic[8] version@8 header_len@12 vmsvc_version[16]@16
 *   created_ns@32 mem_size@40 ncpus@48 nregions@52 region{gpa,size}[2]@56
 *   cpuid_hash@88 flags@96 nsections@100 reserved[20]@104 header_crc@124
 * section header (40 bytes): type@0 id@4 len@8 name[16]@16 payload_crc@32 hdr_crc@36 */
int snap_build(const struct snap_header *h, const struct snap_section *sec, unsigned n, uint8_t **out,
	       size_t *out_len)
{
	if (n > SNAP_MAX_SECTIONS)
		return err_set(EINVAL, "snapshot: too many sections (%u)", n);
	uint64_t total = SNAP_HEADER_LEN + SNAP_SECTION_HDR_LEN + 4;
	for (unsigned i = 0; i < n; i++)
		total += SNAP_SECTION_HDR_LEN + sec[i].len;
	if (total > SNAP_MAX_FILE)
		return err_set(EFBIG, "snapshot: state of %llu bytes is too large", (unsigned long long)total);
	uint8_t *b = calloc(1, total);
	if (!b)
		return err_set(ENOMEM, "snapshot: out of memory");
	memcpy(b, SNAP_MAGIC, 8);
	put32(b + 8, h->version);
	put32(b + 12, SNAP_HEADER_LEN);
	memcpy(b + 16, h->vmsvc_version, strnlen(h->vmsvc_version, 16));
	put64(b + 32, h->created_ns);
	put64(b + 40, h->mem_size);
	put32(b + 48, h->ncpus);
	put32(b + 52, h->nregions);
	for (unsigned i = 0; i < 2; i++) {
		put64(b + 56 + 16 * i, h->region[i].gpa);
		put64(b + 64 + 16 * i, h->region[i].size);
	}
	put64(b + 88, h->cpuid_hash);
	put32(b + 100, n);
	put32(b + 124, snap_crc32c(0, b, 124));
	size_t off = SNAP_HEADER_LEN;
	for (unsigned i = 0; i <= n; i++) {
		uint8_t *s = b + off;
		bool end = i == n;
		uint32_t whole = end ? snap_crc32c(0, b, off) : 0;
		uint8_t endp[4];
		put32(endp, whole);
		const uint8_t *data = end ? endp : sec[i].data;
		uint64_t len = end ? 4 : sec[i].len;
		put32(s, end ? SNAP_SEC_END : sec[i].type);
		put32(s + 4, end ? 0 : sec[i].id);
		put64(s + 8, len);
		if (!end)
			memcpy(s + 16, sec[i].name, strnlen(sec[i].name, SNAP_NAME_LEN));
		put32(s + 32, snap_crc32c(0, data, len));
		put32(s + 36, snap_crc32c(0, s, 36));
		if (len)
			memcpy(s + SNAP_SECTION_HDR_LEN, data, len);
		off += SNAP_SECTION_HDR_LEN + len;
	}
	*out = b;
	*out_len = off;
	return 0;
}


int snap_parse(const uint8_t *buf, size_t len, const char *fname, struct snap_header *h, struct snap_section **sec_out,
	       unsigned *n_out)
{
#define FAIL(off, fmt, ...) \
	do { \
		free(sec); \
		return err_set(EINVAL, "%s: offset %llu: " fmt, fname, (unsigned long long)(off), ##__VA_ARGS__); \
	} while (0)
	struct snap_section *sec = NULL;
	if (len < 8 || memcmp(buf, SNAP_MAGIC, 8) != 0)
		FAIL(0, "not a vmsvc snapshot state file (bad magic)");
	if (len < SNAP_HEADER_LEN)
		FAIL(len, "truncated header (%zu of %u bytes)", len, SNAP_HEADER_LEN);
	memset(h, 0, sizeof(*h));
	h->version = get32(buf + 8);
	if (h->version != SNAP_FORMAT_VERSION)
		FAIL(8, "format version %u not supported (this vmsvc reads version %u)", h->version, SNAP_FORMAT_VERSION);
	if (get32(buf + 12) != SNAP_HEADER_LEN)
		FAIL(12, "header length %u, expected %u", get32(buf + 12), SNAP_HEADER_LEN);
	if (get32(buf + 124) != snap_crc32c(0, buf, 124))
		FAIL(124, "header checksum mismatch");
	memcpy(h->vmsvc_version, buf + 16, 16);
	h->created_ns = get64(buf + 32);
	h->mem_size = get64(buf + 40);
	h->ncpus = get32(buf + 48);
	h->nregions = get32(buf + 52);
	for (unsigned i = 0; i < 2; i++) {
		h->region[i].gpa = get64(buf + 56 + 16 * i);
		h->region[i].size = get64(buf + 64 + 16 * i);
	}
	h->cpuid_hash = get64(buf + 88);
	if (get32(buf + 96) != 0)
		FAIL(96, "unknown header flags %#x", get32(buf + 96));
	uint32_t n = get32(buf + 100);
	if (n > SNAP_MAX_SECTIONS)
		FAIL(100, "%u sections (max %u)", n, SNAP_MAX_SECTIONS);
	if (h->nregions < 1 || h->nregions > 2)
		FAIL(52, "%u memory regions", h->nregions);
	sec = calloc(n ? n : 1, sizeof(*sec));
	if (!sec)
		return err_set(ENOMEM, "%s: out of memory", fname);
	size_t off = SNAP_HEADER_LEN;
	for (uint32_t i = 0;; i++) {
		if (len - off < SNAP_SECTION_HDR_LEN)
			FAIL(off, "truncated: section header %u cut off (file is %zu bytes)", i, len);
		const uint8_t *s = buf + off;
		if (get32(s + 36) != snap_crc32c(0, s, 36))
			FAIL(off, "section %u: header checksum mismatch", i);
		uint32_t type = get32(s);
		uint64_t slen = get64(s + 8);
		size_t poff = off + SNAP_SECTION_HDR_LEN;
		if (slen > len - poff)
			FAIL(off + 8, "section %u: length %llu runs past the end of the file (%zu bytes)", i,
			     (unsigned long long)slen, len);
		if (get32(s + 32) != snap_crc32c(0, buf + poff, slen))
			FAIL(poff, "section %u: payload checksum mismatch", i);
		if (type == SNAP_SEC_END) {
			if (i != n)
				FAIL(off, "end marker after %u sections, header says %u", i, n);
			if (slen != 4)
				FAIL(off + 8, "end marker length %llu", (unsigned long long)slen);
			if (get32(buf + poff) != snap_crc32c(0, buf, off))
				FAIL(poff, "whole-file checksum mismatch");
			if (poff + 4 != len)
				FAIL(poff + 4, "%zu bytes of trailing data after the end marker", len - poff - 4);
			break;
		}
		if (i == n)
			FAIL(off, "no end marker after %u sections", n);
		if (type < SNAP_SEC_CONFIG || type > SNAP_SEC_DEVICE)
			FAIL(off, "section %u: unknown type %u", i, type);
		for (unsigned k = 16; k < 32; k++)
			if (s[k] && (s[k] < 0x20 || s[k] > 0x7e))
				FAIL(off + k, "section %u: name is not printable", i);
		sec[i].type = type;
		sec[i].id = get32(s + 4);
		memcpy(sec[i].name, s + 16, SNAP_NAME_LEN);
		sec[i].name[SNAP_NAME_LEN] = 0;
		sec[i].data = buf + poff;
		sec[i].len = slen;
		sec[i].offset = poff;
		off = poff + slen;
	}
	*sec_out = sec;
	*n_out = n;
	return 0;
#undef FAIL
}

/* ---- config section: "key=value\n" lines ---- */
struct snap_config {
	char *kernel, *cmdline, *cpu_features;
	bool rng, hugepages;
	unsigned ndisks, nnets;
	unsigned ndevices;
};

static void cfg_free(struct snap_config *c)
{
	free(c->kernel);
	free(c->cmdline);
	free(c->cpu_features);
	memset(c, 0, sizeof(*c));
}

static int cfg_parse(const struct snap_section *s, const char *fname, struct snap_config *c)
{
	memset(c, 0, sizeof(*c));
	size_t pos = 0;
	while (pos < s->len) {
		const uint8_t *line = s->data + pos;
		const uint8_t *nl = memchr(line, '\n', s->len - pos);
		if (!nl)
			goto bad;
		size_t ll = (size_t)(nl - line);
		const uint8_t *eq = memchr(line, '=', ll);
		if (!eq || memchr(line, 0, ll))
			goto bad;
		size_t kl = (size_t)(eq - line);
		char *val = strndup((const char *)eq + 1, ll - kl - 1);
		if (!val) {
			cfg_free(c);
			return err_set(ENOMEM, "out of memory");
		}
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(line, k, kl) == 0)
		char **str = KEY("kernel") ? &c->kernel : KEY("cmdline") ? &c->cmdline :
			     KEY("cpu_features") ? &c->cpu_features : NULL;
		if (str) {
			free(*str);
			*str = val;
		} else {
			char *end;
			unsigned long v = strtoul(val, &end, 10);
			/* Only the numeric keys must be numbers: disk=/net= hold specs. */
			bool ok = (*val && !*end && v <= 1000) || KEY("disk") || KEY("net");
			if (KEY("rng"))
				c->rng = v != 0;
			else if (KEY("hugepages"))
				c->hugepages = v != 0;
			else if (KEY("disks"))
				c->ndisks = (unsigned)v, ok = ok && v <= VM_MAX_DISKS;
			else if (KEY("nets"))
				c->nnets = (unsigned)v, ok = ok && v <= VM_MAX_NETS;
			else if (KEY("devices"))
				c->ndevices = (unsigned)v, ok = ok && v <= VM_MAX_DEVICES;
			else
				ok = true;   /* other keys (disk=, net=) are informational, not numbers */
			free(val);
			if (!ok)
				goto bad;
		}
#undef KEY
		pos += ll + 1;
	}
	return 0;
bad:
	cfg_free(c);
	return err_set(EINVAL, "%s: offset %llu: malformed config section", fname,
		       (unsigned long long)(s->offset + pos));
}

static char *cfg_build(const struct vm *vm, size_t *len)
{
	char *buf = NULL;
	size_t sz = 0;
	FILE *f = open_memstream(&buf, &sz);
	if (!f)
		return NULL;
	/* Strings with a newline would break the line format: they are dropped. */
#define STR(k, v) if ((v) && !strchr((v), '\n')) fprintf(f, k "=%s\n", (v))
	STR("kernel", vm->cfg.kernel);
	STR("cmdline", vm->cfg.cmdline);
	STR("cpu_features", vm->cfg.cpu_features);
	fprintf(f, "rng=%d\nhugepages=%d\ndisks=%u\nnets=%u\ndevices=%u\n", vm->cfg.rng ? 1 : 0, vm->cfg.hugepages ? 1 : 0,
		vm->cfg.ndisks, vm->cfg.nnets, vm->ndevices);
	for (unsigned i = 0; i < vm->cfg.ndisks; i++)
		STR("disk", vm->cfg.disks[i]);
	for (unsigned i = 0; i < vm->cfg.nnets; i++)
		STR("net", vm->cfg.nets[i]);
#undef STR
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = sz;
	return buf;
}

/* ---- writing files ---- */
static int write_all(int fd, const void *buf, size_t len, off_t off, const char *path)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t w = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return err_set(w < 0 ? errno : EIO, "writing %s: %s", path, w < 0 ? strerror(errno) : "short write");
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	uint64_t acc = 0;
	for (unsigned i = 0; i < 4096 / 8; i += 8) {
		acc |= q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] | q[i + 7];
		if (acc)
			return false;
	}
	return true;
}

/* Guest RAM into `fd` (already sized): only pages that are allocated in the memfd
 * (SEEK_DATA) and not all zero are written, so the file stays sparse. */
static int write_memory(const struct guest_mem *m, int fd, const char *path, uint64_t *written)
{
	uint64_t size = m->ram_size, off = 0;
	*written = 0;
	while (off < size) {
		uint64_t d = off, h = size;
		if (m->fd >= 0) {
			off_t x = lseek(m->fd, (off_t)off, SEEK_DATA);
			if (x < 0 && errno == ENXIO)
				break;
			if (x >= 0) {
				d = (uint64_t)x;
				off_t y = lseek(m->fd, x, SEEK_HOLE);
				h = y < 0 ? size : (uint64_t)y;
			}
		}
		if (h > size)
			h = size;
		uint64_t run = UINT64_MAX;
		unsigned char resident[512];
		uint64_t win = UINT64_MAX; /* first page of the mincore window in `resident` */
		for (uint64_t p = d & ~4095ULL; p < h; p += 4096) {
			/* Anonymous RAM: a page the guest never touched is not resident and
			 * reads as zero; don't read it (that would map the zero page: about
			 * 0.1 s for 512 MiB). */
			bool zero = false;
			if (m->anon) {
				if (win == UINT64_MAX || p >= win + sizeof(resident) * 4096) {
					win = p;
					uint64_t n = h - p < sizeof(resident) * 4096 ? h - p : sizeof(resident) * 4096;
					if (mincore(m->map + p, n, resident) < 0)
						memset(resident, 1, sizeof(resident));
				}
				zero = !(resident[(p - win) / 4096] & 1);
			}
			zero = zero || page_is_zero(m->map + p);
			if (!zero && run == UINT64_MAX)
				run = p;
			if ((zero || p + 4096 >= h) && run != UINT64_MAX) {
				uint64_t e = zero ? p : p + 4096;
				int r = write_all(fd, m->map + run, e - run, (off_t)run, path);
				if (r < 0)
					return r;
				*written += e - run;
				run = UINT64_MAX;
			}
		}
		off = h;
	}
	return 0;
}

static int write_file_sync(int dfd, const char *name, const char *dir, const void *buf, size_t len, int *fd_out)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(errno, "creating %s: %s", path, strerror(errno));
	if (buf) {
		int r = write_all(fd, buf, len, 0, path);
		if (r < 0 || fsync(fd) < 0) {
			r = r < 0 ? r : err_set(errno, "fsync %s: %s", path, strerror(errno));
			close(fd);
			return r;
		}
	}
	*fd_out = fd;
	return 0;
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

struct captured {
	struct snap_section sec[VM_MAX_CPUS + VM_MAX_DEVICES + 2];
	void *owned[VM_MAX_CPUS + VM_MAX_DEVICES + 2];
	unsigned n;
};

static void captured_free(struct captured *c)
{
	for (unsigned i = 0; i < c->n; i++)
		free(c->owned[i]);
}

static void add_sec(struct captured *c, uint32_t type, uint32_t id, const char *name, void *data, size_t len,
		    bool owned)
{
	struct snap_section *s = &c->sec[c->n];
	*s = (struct snap_section){ .type = type, .id = id, .data = data, .len = len };
	snprintf(s->name, sizeof(s->name), "%s", name);
	c->owned[c->n++] = owned ? data : NULL;
}

/* Everything but memory, with the VM paused. */
static int capture(struct vm *vm, struct captured *c)
{
	size_t len;
	char *cfg = cfg_build(vm, &len);
	if (!cfg)
		return err_set(ENOMEM, "snapshot: out of memory");
	add_sec(c, SNAP_SEC_CONFIG, 0, "config", cfg, len, true);
	int r;
	for (int i = 0; i < vm->ncpus; i++) {
		void *b;
		if ((r = vmstate_vcpu_save(&vm->cpu[i], &b, &len)) < 0)
			return err_prefix(r, "snapshot: vCPU %d", i);
		add_sec(c, SNAP_SEC_VCPU, (uint32_t)i, "vcpu", b, len, true);
	}
	void *b;
	if ((r = vmstate_vm_save(vm, &b, &len)) < 0)
		return err_prefix(r, "snapshot");
	add_sec(c, SNAP_SEC_VM, 0, "kvm", b, len, true);
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct device *d = &vm->devices[i];
		b = NULL;
		len = 0;
		if ((r = d->ops->save(d->dev, &b, &len)) < 0)
			return err_prefix(r, "snapshot: device %s", d->ops->name);
		add_sec(c, SNAP_SEC_DEVICE, i, d->ops->name, b, len, true);
	}
	return 0;
}

static int check_savable(const struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndevices; i++) {
		const struct device *d = &vm->devices[i];
		if (!d->ops->save)
			return err_set(ENOTSUP, "snapshot: device %s (#%u) has no save operation", d->ops->name, i);
	}
	return 0;
}

int snapshot_state_build(struct vm *vm, uint8_t **state_out, size_t *len_out)
{
	int r = check_savable(vm);
	if (r < 0)
		return r;
	if (vm->ending)
		return err_set(EBUSY, "snapshot: the VM is ending");
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct device *d = &vm->devices[i];
		if (d->ops->quiesce) {
			r = d->ops->quiesce(d->dev);
			if (r < 0)
				return err_prefix(r, "snapshot: quiescing device %s", d->ops->name);
		}
	}
	struct captured *c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(ENOMEM, "snapshot: out of memory");
	r = capture(vm, c);
	struct snap_header h = { .version = SNAP_FORMAT_VERSION, .created_ns = now_ns(CLOCK_REALTIME),
				 .mem_size = vm->mem.ram_size, .ncpus = (uint32_t)vm->ncpus,
				 .nregions = vm->mem.nregions };
	snprintf(h.vmsvc_version, sizeof(h.vmsvc_version), "%s", VMSVC_VERSION);
	for (unsigned i = 0; i < vm->mem.nregions && i < 2; i++) {
		h.region[i].gpa = vm->mem.region[i].gpa;
		h.region[i].size = vm->mem.region[i].size;
	}
	if (r == 0)
		r = vmstate_host_cpuid_hash(vm, &h.cpuid_hash);
	if (r == 0)
		r = snap_build(&h, c->sec, c->n, state_out, len_out);
	captured_free(c);
	free(c);
	return r;
}

static int save_paused(struct vm *vm, const char *dir)
{
	uint8_t *state = NULL;
	size_t slen = 0;
	int r = snapshot_state_build(vm, &state, &slen);
	if (r < 0)
		return r;

	/* Files: temp names, fsync, then the commit: remove the old state, rename
	 * memory, rename state, fsync the directory. A crash leaves either the old
	 * snapshot, or no `state` (restore refuses), or the new one. */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		free(state);
		return err_set(errno, "snapshot: %s: %s", dir, strerror(errno));
	}
	int mfd = -1, sfd = -1;
	char mpath[PATH_MAX + 32];
	snprintf(mpath, sizeof(mpath), "%s/.memory.tmp", dir);
	uint64_t written = 0;
	uint64_t t0 = now_ns(CLOCK_MONOTONIC);
	if ((r = write_file_sync(dfd, ".memory.tmp", dir, NULL, 0, &mfd)) < 0)
		goto out;
	if (ftruncate(mfd, (off_t)vm->mem.ram_size) < 0) {
		r = err_set(errno, "sizing %s: %s", mpath, strerror(errno));
		goto out;
	}
	if ((r = write_memory(&vm->mem, mfd, mpath, &written)) < 0)
		goto out;
	if (fsync(mfd) < 0) {
		r = err_set(errno, "fsync %s: %s", mpath, strerror(errno));
		goto out;
	}
	if ((r = write_file_sync(dfd, ".state.tmp", dir, state, slen, &sfd)) < 0)
		goto out;
	if ((unlinkat(dfd, "state", 0) < 0 && errno != ENOENT) || fsync(dfd) < 0 ||
	    renameat(dfd, ".memory.tmp", dfd, "memory") < 0 || renameat(dfd, ".state.tmp", dfd, "state") < 0 ||
	    fsync(dfd) < 0) {
		r = err_set(errno, "snapshot: committing files in %s: %s", dir, strerror(errno));
		goto out;
	}
	log_info("snapshot: %s: %zu bytes of state, %llu of %llu MiB of memory written in %.1f ms", dir, slen,
		 (unsigned long long)(written >> 20), (unsigned long long)(vm->mem.ram_size >> 20),
		 (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e6);
out:
	if (r < 0) {
		unlinkat(dfd, ".memory.tmp", 0);
		unlinkat(dfd, ".state.tmp", 0);
	}
	if (mfd >= 0)
		close(mfd);
	if (sfd >= 0)
		close(sfd);
	close(dfd);
	free(state);
	return r;
}

int snapshot_save(struct vm *vm, const char *dir, bool stop)
{
	/* Refuse before pausing anything if a device cannot be saved. */
	int r = check_savable(vm);
	if (r < 0)
		return r;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return err_set(errno, "snapshot: creating %s: %s", dir, strerror(errno));
	r = vm_pause(vm);
	if (r < 0)
		return err_prefix(r, "snapshot");
	r = save_paused(vm, dir);
	if (r == 0) {   /* still paused: subscribers see the VM as it was saved */
		struct bus_event ev = { .type = BUS_EV_VM_SNAPSHOTTED, .vcpu = -1, .u.snapshot.stop = stop };
		bus_publish(&vm->bus, &ev);
	}
	if (r == 0 && stop)
		vm_request_end(vm, VM_END_USER, 0, "stopped after snapshot");
	vm_resume(vm);
	return r;
}

/* ---- restore ---- */
struct snapshot_restore {
	char dir[PATH_MAX];
	char state_path[PATH_MAX + 32];
	uint8_t *file;
	size_t file_len;
	struct snap_header h;
	struct snap_section *sec;
	unsigned nsec;
	struct snap_config cfg;
	int mem_fd;
	bool mem_shared;   /* mem_fd is a memfd of RAM (resume FILE): map it shared as the VM's memfd */
};

int snap_read_file(const char *path, uint8_t **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SNAP_MAX_FILE) {
		close(fd);
		return err_set(EINVAL, "%s: not a regular file of at most %u bytes", path, SNAP_MAX_FILE);
	}
	uint8_t *b = malloc((size_t)st.st_size + 1);
	if (!b) {
		close(fd);
		return err_set(ENOMEM, "out of memory");
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*out = b;
	*len = got;
	return 0;
}

void snapshot_restore_close(struct vm *vm)
{
	struct snapshot_restore *s = vm->restore;
	if (!s)
		return;
	free(s->file);
	free(s->sec);
	cfg_free(&s->cfg);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	free(s);
	vm->restore = NULL;
}

/* Everything that can be checked without the VM: sections, counts, inner blobs,
 * the memory file, the host. */
static int validate(struct snapshot_restore *s, struct vm *vm)
{
	const char *f = s->state_path;
	struct snap_header *h = &s->h;
	if (h->ncpus < 1 || h->ncpus > VM_MAX_CPUS)
		return err_set(EINVAL, "%s: offset 48: %u vCPUs (1..%d)", f, h->ncpus, VM_MAX_CPUS);
	struct guest_mem lay;
	memset(&lay, 0, sizeof(lay));
	if (h->mem_size < (2ULL << 20) || h->mem_size > (1ULL << 40) || (h->mem_size & 4095))
		return err_set(EINVAL, "%s: offset 40: memory size %llu out of range", f, (unsigned long long)h->mem_size);
	mem_layout(&lay, h->mem_size);
	if (lay.nregions != h->nregions)
		return err_set(EINVAL, "%s: offset 52: memory layout does not match this vmsvc's", f);
	for (unsigned i = 0; i < lay.nregions; i++)
		if (lay.region[i].gpa != h->region[i].gpa || lay.region[i].size != h->region[i].size)
			return err_set(EINVAL, "%s: offset %u: memory region %u does not match this vmsvc's layout", f,
				       56 + 16 * i, i);
	uint64_t host_hash;
	int r = vmstate_host_cpuid_hash(vm, &host_hash);
	if (r < 0)
		return r;
	if (host_hash != h->cpuid_hash)
		return err_set(EINVAL, "%s: taken on a host with different CPU features (CPUID hash %016llx, this host %016llx): refusing to restore",
			       f, (unsigned long long)h->cpuid_hash, (unsigned long long)host_hash);
	bool have_cfg = false, have_vm = false;
	bool cpu_seen[VM_MAX_CPUS] = { false };
	unsigned ncpu = 0, ndev = 0;
	for (unsigned i = 0; i < s->nsec; i++) {
		const struct snap_section *x = &s->sec[i];
		switch (x->type) {
		case SNAP_SEC_CONFIG:
			if (have_cfg)
				return err_set(EINVAL, "%s: offset %llu: second config section", f, (unsigned long long)x->offset);
			have_cfg = true;
			if ((r = cfg_parse(x, f, &s->cfg)) < 0)
				return r;
			break;
		case SNAP_SEC_VCPU:
			if (x->id >= h->ncpus || cpu_seen[x->id])
				return err_set(EINVAL, "%s: offset %llu: unexpected state for vCPU %u", f,
					       (unsigned long long)x->offset, x->id);
			cpu_seen[x->id] = true;
			ncpu++;
			if ((r = vmstate_vcpu_check(x->data, x->len)) < 0)
				return err_prefix(r, "%s: offset %llu", f, (unsigned long long)x->offset);
			break;
		case SNAP_SEC_VM:
			if (have_vm)
				return err_set(EINVAL, "%s: offset %llu: second VM section", f, (unsigned long long)x->offset);
			have_vm = true;
			if ((r = vmstate_vm_check(x->data, x->len)) < 0)
				return err_prefix(r, "%s: offset %llu", f, (unsigned long long)x->offset);
			break;
		case SNAP_SEC_DEVICE:
			if (x->id != ndev++)
				return err_set(EINVAL, "%s: offset %llu: device section %u out of order", f,
					       (unsigned long long)x->offset, x->id);
			break;
		}
	}
	if (!have_cfg || !have_vm || ncpu != h->ncpus)
		return err_set(EINVAL, "%s: incomplete: %s%s%u of %u vCPU sections", f, have_cfg ? "" : "no config, ",
			       have_vm ? "" : "no VM state, ", ncpu, h->ncpus);
	if (ndev != s->cfg.ndevices)
		return err_set(EINVAL, "%s: %u device sections, config says %u", f, ndev, s->cfg.ndevices);
	char mpath[PATH_MAX + 32];
	if (s->mem_shared) {
		snprintf(mpath, sizeof(mpath), "%s: memory", s->dir);
	} else {
		snprintf(mpath, sizeof(mpath), "%s/memory", s->dir);
		s->mem_fd = open(mpath, O_RDONLY | O_CLOEXEC);
		if (s->mem_fd < 0)
			return err_set(errno, "%s: %s", mpath, strerror(errno));
	}
	struct stat st;
	if (fstat(s->mem_fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != h->mem_size)
		return err_set(EINVAL, "%s: %llu bytes, the state says %llu", mpath, (unsigned long long)st.st_size,
			       (unsigned long long)h->mem_size);
	return 0;
}

/* After s->file holds the state image: parse, validate, take the machine shape. */
static int restore_open_common(struct vm *vm, struct snapshot_restore *s)
{
	int r = snap_parse(s->file, s->file_len, s->state_path, &s->h, &s->sec, &s->nsec);
	if (r < 0 || (r = validate(s, vm)) < 0)
		return r;
	struct vm_config *c = &vm->cfg;
	if (c->ndisks != s->cfg.ndisks || c->nnets != s->cfg.nnets)
		return err_set(EINVAL, "%s: the snapshot has %u disk(s) and %u NIC(s); give the same --disk/--net options (got %u and %u)",
			       s->state_path, s->cfg.ndisks, s->cfg.nnets, c->ndisks, c->nnets);
	c->mem_size = s->h.mem_size;
	c->ncpus = (int)s->h.ncpus;
	c->rng = s->cfg.rng;
	c->hugepages = false;
	c->cpu_features = s->cfg.cpu_features;
	c->cmdline = s->cfg.cmdline;
	c->kernel = s->cfg.kernel;
	vm->ncpus = c->ncpus;
	return 0;
}

int snapshot_restore_open(struct vm *vm, const char *dir)
{
	struct snapshot_restore *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(ENOMEM, "out of memory");
	s->mem_fd = -1;
	vm->restore = s;
	if (strlen(dir) >= sizeof(s->dir))
		return err_set(ENAMETOOLONG, "snapshot directory name too long");
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->state_path, sizeof(s->state_path), "%s/state", dir);
	int r = snap_read_file(s->state_path, &s->file, &s->file_len);
	if (r < 0)
		return r;
	return restore_open_common(vm, s);
}

int snapshot_restore_open_buf(struct vm *vm, const uint8_t *state, size_t len, int mem_fd, const char *name)
{
	struct snapshot_restore *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(ENOMEM, "out of memory");
	s->mem_fd = -1;
	vm->restore = s;
	snprintf(s->dir, sizeof(s->dir), "%s", name ? name : "suspended state");
	snprintf(s->state_path, sizeof(s->state_path), "%s: state", s->dir);
	if (len > SNAP_MAX_FILE)
		return err_set(EFBIG, "%s: %zu bytes (max %u)", s->state_path, len, SNAP_MAX_FILE);
	s->file = malloc(len ? len : 1);
	if (!s->file)
		return err_set(ENOMEM, "out of memory");
	memcpy(s->file, state, len);
	s->file_len = len;
	s->mem_fd = fcntl(mem_fd, F_DUPFD_CLOEXEC, 3);
	if (s->mem_fd < 0)
		return err_set(errno, "%s: memory: %s", s->dir, strerror(errno));
	s->mem_shared = true;
	return restore_open_common(vm, s);
}

int snapshot_restore_memory(struct vm *vm)
{
	struct snapshot_restore *s = vm->restore;
	struct guest_mem *m = &vm->mem;
	memset(m, 0, sizeof(*m));
	mem_layout(m, s->h.mem_size);
	/* Private file mapping: pages come from the file on first touch, guest writes
	 * stay in this process (copy-on-write); the snapshot is never modified. */
	if (s->mem_shared) {
		/* A memfd made for this VM (resume FILE): it becomes the VM's RAM memfd,
		 * exactly as mem_init would have made it. */
		void *p = mmap(NULL, m->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, s->mem_fd, 0);
		if (p == MAP_FAILED) {
			m->fd = -1;
			return err_set(errno, "mapping %s: memory: %s", s->dir, strerror(errno));
		}
		m->map = p;
		m->fd = s->mem_fd;
		s->mem_fd = -1;
		for (unsigned i = 0; i < m->nregions; i++)
			m->region[i].hva = m->map + m->region[i].fd_offset;
		return 0;
	}
	void *p = mmap(NULL, m->ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, s->mem_fd, 0);
	if (p == MAP_FAILED) {
		m->fd = -1;
		return err_set(errno, "mapping %s/memory: %s", s->dir, strerror(errno));
	}
	m->map = p;
	m->fd = -1;   /* no memfd: RAM is this private mapping */
	for (unsigned i = 0; i < m->nregions; i++)
		m->region[i].hva = m->map + m->region[i].fd_offset;
	close(s->mem_fd);
	s->mem_fd = -1;
	return 0;
}

int snapshot_restore_state(struct vm *vm)
{
	struct snapshot_restore *s = vm->restore;
	const char *f = s->state_path;
	/* Device list first: a mismatch must fail before any state is applied. */
	if (s->cfg.ndevices != vm->ndevices)
		return err_set(EINVAL, "%s: %u devices saved, this VM has %u", f, s->cfg.ndevices, vm->ndevices);
	for (unsigned i = 0; i < s->nsec; i++) {
		const struct snap_section *x = &s->sec[i];
		if (x->type != SNAP_SEC_DEVICE)
			continue;
		const struct device *d = &vm->devices[x->id];
		if (strncmp(x->name, d->ops->name, SNAP_NAME_LEN) != 0)
			return err_set(EINVAL, "%s: offset %llu: device %u is %s in the snapshot, %s in this VM", f,
				       (unsigned long long)x->offset, x->id, x->name, d->ops->name);
		if (!d->ops->load)
			return err_set(ENOTSUP, "restore: device %s has no load operation", d->ops->name);
	}
	int r;
	/* vCPUs, then the VM-wide chips and clock, then devices (which may drive
	 * interrupt lines of the restored irqchip). */
	for (unsigned i = 0; i < s->nsec; i++)
		if (s->sec[i].type == SNAP_SEC_VCPU &&
		    (r = vmstate_vcpu_load(&vm->cpu[s->sec[i].id], s->sec[i].data, s->sec[i].len)) < 0)
			return err_prefix(r, "restoring vCPU %u", s->sec[i].id);
	if ((r = vm_irqchip_ready(vm)) < 0)
		return r;
	for (unsigned i = 0; i < s->nsec; i++)
		if (s->sec[i].type == SNAP_SEC_VM && (r = vmstate_vm_load(vm, s->sec[i].data, s->sec[i].len)) < 0)
			return err_prefix(r, "restoring VM state");
	for (unsigned i = 0; i < s->nsec; i++) {
		const struct snap_section *x = &s->sec[i];
		if (x->type != SNAP_SEC_DEVICE)
			continue;
		struct device *d = &vm->devices[x->id];
		if ((r = d->ops->load(d->dev, x->data, x->len)) < 0)
			return err_prefix(r, "restoring device %s", d->ops->name);
	}
	return 0;
}

/* ---- control socket command ----
 * {"cmd":"snapshot","dir":"/path","stop":false} -> {"dir":"/path","stopped":false}
 * The handler runs on the control thread (never a vCPU thread), as vm_pause needs. */
#ifdef HAVE_JSONC
#include <json-c/json.h>
#include <vmsvc/control.h>

static int snapshot_cmd(void *opaque, struct json_object *req, struct json_object **result)
{
	struct vm *vm = opaque;
	struct json_object *jd = NULL, *js = NULL;
	if (!json_object_object_get_ex(req, "dir", &jd) || !json_object_is_type(jd, json_type_string))
		return err_set(EINVAL, "snapshot: \"dir\" (a string) is required");
	bool stop = json_object_object_get_ex(req, "stop", &js) && json_object_get_boolean(js);
	const char *dir = json_object_get_string(jd);
	int r = snapshot_save(vm, dir, stop);
	if (r < 0)
		return r;
	struct json_object *o = json_object_new_object();
	if (o) {
		json_object_object_add(o, "dir", json_object_new_string(dir));
		json_object_object_add(o, "stopped", json_object_new_boolean(stop));
	}
	*result = o;
	return 0;
}

int snapshot_control_register(struct control *ctl, struct vm *vm)
{
	return control_register_command(ctl, "snapshot", snapshot_cmd, vm);
}
#endif
