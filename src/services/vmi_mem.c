/* Guest-physical memory for introspection: ELF cores, flat images, live RAM.
 * See include/vmsvc/vmi.h. Image files are hostile: every header field is
 * checked against the file size before use. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

#define VMCOREINFO_MAX (64 * 1024)

/* ELF64 layout (System V gABI), written out here so no host header is needed. */
#define EH_PHOFF 0x20
#define EH_PHENTSIZE 0x36
#define EH_PHNUM 0x38
#define PH_SIZE 56
#define PT_LOAD 1
#define PT_NOTE 4

/* QEMU's per-CPU "QEMU" note (type 0) on x86-64: version, size, 16 GPRs, rip,
 * rflags, 10 segment descriptors of 24 bytes, cr[0..4], kernel_gs_base. We
 * read only the control registers, at their documented place. */
#define QNOTE_CR_OFF (8 + 18 * 8 + 10 * 24)
#define QNOTE_RIP_OFF (8 + 16 * 8)

static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static int range_cmp(const void *a, const void *b)
{
	const struct vmi_range *x = a, *y = b;
	return x->pa < y->pa ? -1 : x->pa > y->pa;
}

static int add_range(struct vmi_mem *m, uint64_t pa, uint64_t len, const uint8_t *host)
{
	if (!len)
		return 0;
	if (pa + len < pa)
		return err_set(EINVAL, "memory range at %#llx wraps around", (unsigned long long)pa);
	if (m->nranges >= VMI_MAX_RANGES)
		return err_set(E2BIG, "more than %d memory ranges", VMI_MAX_RANGES);
	m->range[m->nranges++] = (struct vmi_range){ pa, len, host };
	return 0;
}

static int finish_ranges(struct vmi_mem *m)
{
	qsort(m->range, m->nranges, sizeof(m->range[0]), range_cmp);
	for (unsigned i = 1; i < m->nranges; i++)
		if (m->range[i].pa < m->range[i - 1].pa + m->range[i - 1].len)
			return err_set(EINVAL, "memory ranges overlap at %#llx", (unsigned long long)m->range[i].pa);
	if (!m->nranges)
		return err_set(EINVAL, "no guest memory in the image");
	return 0;
}

static void parse_note(struct vmi_mem *m, const char *name, uint32_t namesz, uint32_t type, const uint8_t *desc,
		       uint32_t descsz)
{
	if (namesz == 5 && !memcmp(name, "QEMU", 5) && type == 0 && descsz >= QNOTE_CR_OFF + 40 &&
	    m->ncpus < VMI_MAX_CPUS) {
		struct pw_regs *r = &m->cpu[m->ncpus++];
		r->cr0 = rd64(desc + QNOTE_CR_OFF);
		r->cr3 = rd64(desc + QNOTE_CR_OFF + 24);
		r->cr4 = rd64(desc + QNOTE_CR_OFF + 32);
		m->cpu_rip[m->ncpus - 1] = rd64(desc + QNOTE_RIP_OFF);
		/* The note has no EFER; CR0.PG + CR4.PAE on a 64-bit kernel means long mode. */
		r->efer = (r->cr0 >> 31) & (r->cr4 >> 5) & 1 ? 0x500 : 0;
	} else if (namesz == 11 && !memcmp(name, "VMCOREINFO", 11) && !m->vmcoreinfo && descsz <= VMCOREINFO_MAX) {
		m->vmcoreinfo = strndup((const char *)desc, descsz);
	}
}

static void parse_notes(struct vmi_mem *m, const uint8_t *p, uint64_t len)
{
	uint64_t off = 0;
	while (len - off >= 12) {
		uint32_t namesz = rd32(p + off), descsz = rd32(p + off + 4), type = rd32(p + off + 8);
		uint64_t name_at = off + 12, desc_at = name_at + ((namesz + 3ULL) & ~3ULL);
		uint64_t next = desc_at + ((descsz + 3ULL) & ~3ULL);
		if (desc_at > len || next > len)
			return; /* truncated note: ignore the rest, notes are only hints */
		parse_note(m, (const char *)p + name_at, namesz, type, p + desc_at, descsz);
		off = next;
	}
}

int vmi_mem_from_elfcore(struct vmi_mem *m, const uint8_t *img, size_t len)
{
	memset(m, 0, sizeof(*m));
	if (len < 64 || memcmp(img, "\177ELF", 4))
		return err_set(EINVAL, "not an ELF file");
	if (img[4] != 2 || img[5] != 1)
		return err_set(EINVAL, "ELF core is not 64-bit little-endian");
	if (rd16(img + 16) != 4 /* ET_CORE */)
		return err_set(EINVAL, "ELF file is not a core dump (e_type %u)", rd16(img + 16));
	uint64_t phoff = rd64(img + EH_PHOFF);
	unsigned phentsize = rd16(img + EH_PHENTSIZE), phnum = rd16(img + EH_PHNUM);
	if (phentsize < PH_SIZE || phoff > len || (uint64_t)phnum * phentsize > len - phoff)
		return err_set(EINVAL, "ELF program headers outside the file");
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = img + phoff + (uint64_t)i * phentsize;
		uint32_t type = rd32(ph);
		uint64_t off = rd64(ph + 8), paddr = rd64(ph + 24), filesz = rd64(ph + 32);
		if (type != PT_LOAD && type != PT_NOTE)
			continue;
		if (off > len || filesz > len - off) {
			vmi_mem_close(m);
			return err_set(EINVAL, "ELF segment %u (offset %#llx, size %#llx) outside the %zu-byte file", i,
				       (unsigned long long)off, (unsigned long long)filesz, len);
		}
		if (type == PT_NOTE) {
			parse_notes(m, img + off, filesz);
			continue;
		}
		/* p_memsz beyond p_filesz would be zeros we do not have: use filesz. */
		int rc = add_range(m, paddr, filesz, img + off);
		if (rc < 0) {
			vmi_mem_close(m);
			return rc;
		}
	}
	int rc = finish_ranges(m);
	if (rc < 0)
		vmi_mem_close(m);
	return rc;
}

int vmi_mem_from_flat(struct vmi_mem *m, const uint8_t *img, size_t len, uint64_t base_pa)
{
	memset(m, 0, sizeof(*m));
	int rc = add_range(m, base_pa, len, img);
	return rc < 0 ? rc : finish_ranges(m);
}

int vmi_mem_from_guest(struct vmi_mem *m, const struct guest_mem *g)
{
	memset(m, 0, sizeof(*m));
	for (unsigned i = 0; i < g->nregions && i < MEM_MAX_REGIONS; i++) {
		int rc = add_range(m, g->region[i].gpa, g->region[i].size, g->region[i].hva);
		if (rc < 0)
			return rc;
	}
	return finish_ranges(m);
}

/* The snapshot directory `path` belongs to, if it is one (the directory, its
 * state file, or a file next to a state file): 1 with dir set, else 0. */
static int snapshot_dir_of(const char *path, char *dir, size_t size)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		snprintf(dir, size, "%s", path);
		return 1;
	}
	const char *slash = strrchr(path, '/');
	int n = slash ? snprintf(dir, size, "%.*s", (int)(slash - path), path) : snprintf(dir, size, ".");
	if (n < 0 || (size_t)n >= size)
		return 0;
	if (!*dir)
		snprintf(dir, size, "/");
	const char *base = slash ? slash + 1 : path;
	if (strcmp(base, "state") && strcmp(base, "memory"))
		return 0;
	char state[4096];
	if (snprintf(state, sizeof(state), "%s/state", dir) >= (int)sizeof(state))
		return 0;
	char magic[8];
	int fd = open(state, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t got = read(fd, magic, sizeof(magic));
	close(fd);
	return got == (ssize_t)sizeof(magic) && !memcmp(magic, "VMSVCSNP", 8);
}

int vmi_mem_open_file(struct vmi_mem *m, const char *path)
{
	memset(m, 0, sizeof(*m));
	char dir[4096];
	if (snapshot_dir_of(path, dir, sizeof(dir)))
		return vmi_mem_open_snapshot(m, dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
		close(fd);
		return err_set(EINVAL, "%s: not a non-empty regular file", path);
	}
	size_t len = (size_t)st.st_size;
	void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (map == MAP_FAILED)
		return err_set(e, "%s: mmap: %s", path, strerror(e));
	int rc = len >= 4 && !memcmp(map, "\177ELF", 4) ? vmi_mem_from_elfcore(m, map, len)
							: vmi_mem_from_flat(m, map, len, 0);
	if (rc < 0) {
		munmap(map, len);
		return err_prefix(rc, "%s: ", path);
	}
	m->map = map;
	m->map_len = len;
	return 0;
}

void vmi_mem_adopt(struct vmi_mem *m, const struct vmi_mem *hints, void *map, size_t map_len)
{
	m->ncpus = hints->ncpus;
	memcpy(m->cpu, hints->cpu, sizeof(m->cpu));
	memcpy(m->cpu_rip, hints->cpu_rip, sizeof(m->cpu_rip));
	m->have_msrs = hints->have_msrs;
	m->msrs = hints->msrs;
	m->map = map;
	m->map_len = map_len;
}

void vmi_mem_close(struct vmi_mem *m)
{
	if (m->map)
		munmap(m->map, m->map_len);
	free(m->buf);
	free(m->vmcoreinfo);
	memset(m, 0, sizeof(*m));
}

/* Index of the range containing pa, or -1 (ranges are few: linear search). */
static int find_range(const struct vmi_mem *m, uint64_t pa)
{
	for (unsigned i = 0; i < m->nranges; i++)
		if (pa >= m->range[i].pa && pa - m->range[i].pa < m->range[i].len)
			return (int)i;
	return -1;
}

const uint8_t *vmi_phys_ptr(const struct vmi_mem *m, uint64_t pa, size_t len)
{
	int i = find_range(m, pa);
	if (i < 0)
		return NULL;
	const struct vmi_range *r = &m->range[i];
	if (len > r->len - (pa - r->pa))
		return NULL;
	return r->host + (pa - r->pa);
}

int vmi_read_phys(const struct vmi_mem *m, uint64_t pa, void *dst, size_t len)
{
	uint8_t *d = dst;
	while (len) {
		int i = find_range(m, pa);
		if (i < 0)
			return -EFAULT;
		const struct vmi_range *r = &m->range[i];
		uint64_t avail = r->len - (pa - r->pa);
		size_t n = len < avail ? len : (size_t)avail;
		memcpy(d, r->host + (pa - r->pa), n);
		d += n;
		pa += n;
		len -= n;
	}
	return 0;
}

int vmi_pw_read(void *opaque, uint64_t pa, void *dst, size_t len)
{
	return vmi_read_phys(opaque, pa, dst, len);
}
