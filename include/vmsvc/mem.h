/* Guest physical memory: one memfd holding all of guest RAM, mapped once into the
 * VMM and registered with KVM as up to two memslots around the 32-bit PCI hole. */
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
	int fd;             /* memfd backing all of RAM (shared with clones later) */
	uint8_t *map;       /* host mapping of the whole memfd */
	uint64_t ram_size;  /* total bytes of RAM */
	bool hugepages;
	unsigned nregions;
	struct mem_region region[MEM_MAX_REGIONS];
};

/* Create the memfd and mapping and compute the layout; does not talk to KVM. */
int mem_init(struct guest_mem *m, uint64_t ram_size, bool hugepages);
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
