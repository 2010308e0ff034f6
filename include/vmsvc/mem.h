/* Guest physical memory: all of guest RAM in one host mapping, registered with KVM
 * as up to two memslots around the 32-bit PCI hole.
 *
 * Backing (enum mem_backend): by default anonymous memory with transparent huge
 * pages (MADV_HUGEPAGE), like QEMU's default: a guest buffer is then physically
 * contiguous in 2 MiB pieces, so an O_DIRECT disk request on it is one segment
 * instead of one per 4 KiB page (measured here: sequential 128 KiB reads at depth
 * 32 with cache=none, 300 -> 800 MB/s for QEMU itself when moved from a memfd to
 * THP memory). A memfd is used when RAM must be shareable with another process
 * (fd != -1 then); hugetlbfs when asked (--hugepages). shmem (memfd) THP is off on
 * most distributions, so a memfd is 4 KiB pages in practice. */
#ifndef VMSVC_MEM_H
#define VMSVC_MEM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest physical layout. RAM below 4 GiB stops at MEM_HOLE_START; the rest of RAM
 * is placed at 4 GiB. The hole holds PCI BARs, the IOAPIC (0xfec00000) and the
 * LAPIC (0xfee00000). */
#define MEM_HOLE_START 0xC0000000ULL
#define MEM_HOLE_END 0x100000000ULL
#define MEM_MAX_REGIONS 2

struct mem_region {
	uint64_t gpa;       /* first guest physical address */
	uint64_t size;      /* bytes */
	uint64_t fd_offset; /* offset of this region in the memfd */
	uint8_t *hva;       /* host mapping of the region */
};

struct guest_mem {
	int fd;             /* memfd backing all of RAM, or -1 (anonymous / private mapping) */
	uint8_t *map;       /* host mapping of all of RAM (offsets = fd_offset) */
	uint64_t ram_size;  /* total bytes of RAM */
	bool hugepages;
	bool anon;          /* anonymous memory: pages never touched are not resident (mincore) */
	unsigned nregions;
	struct mem_region region[MEM_MAX_REGIONS];
};

enum mem_backend {
	MEM_BACKEND_ANON,    /* anonymous, transparent huge pages where the host allows */
	MEM_BACKEND_MEMFD,   /* shareable memfd (4 KiB shmem pages unless shmem THP is on) */
	MEM_BACKEND_HUGETLB, /* memfd on hugetlbfs: 2 MiB pages, must be reserved */
};
/* Create the backing and mapping and compute the layout; does not talk to KVM. */
int mem_init(struct guest_mem *m, uint64_t ram_size, enum mem_backend backend);
/* Lay out regions for ram_size without allocating (used by mem_init and unit tests). */
void mem_layout(struct guest_mem *m, uint64_t ram_size);
void mem_free(struct guest_mem *m);

/* The one bounds-checked translation every device uses: host pointer for
 * [gpa, gpa+len) or NULL if any byte of it is not guest RAM (or len overflows). */
void *gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copy helpers that may cross region boundaries; 0 or -EFAULT. */
int mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, size_t len);
int mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, size_t len);
/* Highest guest physical address + 1 that is RAM. */
uint64_t mem_top(const struct guest_mem *m);

#endif
