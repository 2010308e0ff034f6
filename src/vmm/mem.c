/* Guest RAM: anonymous THP memory or a memfd (include/vmsvc/mem.h), mapped once.
 * Below 4 GiB RAM stops at the PCI hole; the remainder lives above 4 GiB. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/mem.h>

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

void mem_layout(struct guest_mem *m, uint64_t ram_size)
{
	uint64_t low = ram_size < MEM_HOLE_START ? ram_size : MEM_HOLE_START;
	m->ram_size = ram_size;
	m->nregions = 1;
	m->region[0] = (struct mem_region){ .gpa = 0, .size = low, .fd_offset = 0 };
	if (ram_size > low) {
		m->region[1] = (struct mem_region){ .gpa = MEM_HOLE_END, .size = ram_size - low, .fd_offset = low };
		m->nregions = 2;
	}
}

int mem_init(struct guest_mem *m, uint64_t ram_size, enum mem_backend backend)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	bool hugepages = backend == MEM_BACKEND_HUGETLB;
	if (ram_size < (2ULL << 20) || ram_size > (1ULL << 40) || (ram_size & 0xfff))
		return err_set(EINVAL, "memory size %llu bytes out of range (2 MiB .. 1 TiB, page multiple)",
			       (unsigned long long)ram_size);
	if (hugepages && (ram_size & ((2ULL << 20) - 1)))
		return err_set(EINVAL, "with hugepages the memory size must be a multiple of 2 MiB");
	mem_layout(m, ram_size);
	m->hugepages = hugepages;
	void *p;
	if (backend == MEM_BACKEND_ANON) {
		/* Huge pages need 2 MiB-aligned virtual addresses: over-map, then trim. */
		const size_t align = 2ULL << 20;
		uint8_t *raw = mmap(NULL, ram_size + align, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (raw == MAP_FAILED)
			return err_set(errno, "mapping guest RAM: %s", strerror(errno));
		uint8_t *aligned = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
		if (aligned > raw)
			munmap(raw, (size_t)(aligned - raw));
		if (aligned + ram_size < raw + ram_size + align)
			munmap(aligned + ram_size, (size_t)(raw + ram_size + align - (aligned + ram_size)));
		p = aligned;
		m->anon = true;
		/* Both are advice: a host without THP still works, with 4 KiB pages.
		 * DONTFORK: a fork of the VMM (background teardown) must not copy or
		 * share guest RAM. */
		(void)madvise(p, ram_size, MADV_HUGEPAGE);
		(void)madvise(p, ram_size, MADV_DONTFORK);
	} else {
		m->fd = memfd_create("vmsvc-ram", MFD_CLOEXEC | (hugepages ? MFD_HUGETLB : 0));
		if (m->fd < 0)
			return err_set(errno, "memfd_create for guest RAM: %s", strerror(errno));
		if (ftruncate(m->fd, (off_t)ram_size) < 0) {
			int e = errno;
			close(m->fd);
			m->fd = -1;
			return err_set(e, "sizing guest RAM to %llu bytes: %s", (unsigned long long)ram_size,
				       strerror(e));
		}
		p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
		if (p == MAP_FAILED) {
			int e = errno;
			close(m->fd);
			m->fd = -1;
			return err_set(e, "mapping guest RAM: %s%s", strerror(e),
				       hugepages ? " (are hugepages reserved? see /proc/sys/vm/nr_hugepages)" : "");
		}
		if (!hugepages)
			(void)madvise(p, ram_size, MADV_HUGEPAGE); /* effective only with shmem THP */
	}
	m->map = p;
	for (unsigned i = 0; i < m->nregions; i++)
		m->region[i].hva = m->map + m->region[i].fd_offset;
	return 0;
}

void mem_free(struct guest_mem *m)
{
	if (m->map)
		munmap(m->map, m->ram_size);
	if (m->fd >= 0)
		close(m->fd);
	m->map = NULL;
	m->fd = -1;
}

void *gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct mem_region *r = &m->region[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->hva ? r->hva + (gpa - r->gpa) : NULL;
	}
	return NULL;
}

static int mem_copy(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len, bool write)
{
	uint8_t *p = buf;
	while (len) {
		/* Largest chunk inside one region. */
		size_t chunk = 0;
		uint8_t *hva = NULL;
		for (unsigned i = 0; i < m->nregions; i++) {
			const struct mem_region *r = &m->region[i];
			if (gpa >= r->gpa && gpa - r->gpa < r->size) {
				uint64_t left = r->size - (gpa - r->gpa);
				chunk = len < left ? len : left;
				hva = r->hva + (gpa - r->gpa);
				break;
			}
		}
		if (!hva)
			return -EFAULT;
		if (write)
			memcpy(hva, p, chunk);
		else
			memcpy(p, hva, chunk);
		p += chunk;
		gpa += chunk;
		len -= chunk;
	}
	return 0;
}

int mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, size_t len)
{
	return mem_copy(m, gpa, dst, len, false);
}
int mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, size_t len)
{
	return mem_copy(m, gpa, (void *)src, len, true);
}

uint64_t mem_top(const struct guest_mem *m)
{
	const struct mem_region *r = &m->region[m->nregions - 1];
	return r->gpa + r->size;
}
