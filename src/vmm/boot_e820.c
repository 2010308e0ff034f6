/* e820 map derived from the guest memory layout: the low region is split around
 * the EBDA/BIOS area (0x9fc00..1 MiB, reserved: ACPI tables live at 0xe0000),
 * everything else is plain RAM. The PCI hole is absent (guests treat it as free
 * address space for MMIO) except for the PCI ECAM window, reserved: Linux uses
 * the ACPI MCFG region only when it is reserved (here or by a PNP0C02 device). */
#include <errno.h>
#include "boot_internal.h"
#include <vmsvc/err.h>
#include <vmsvc/pci.h>

#define E820_RAM 1
#define E820_RESERVED 2

static int add(struct boot_e820_entry *out, int max, int *n, uint64_t addr, uint64_t size, uint32_t type)
{
	if (!size)
		return 0;
	if (*n >= max)
		return err_set(ENOSPC, "e820 map needs more than %d entries", max);
	out[*n] = (struct boot_e820_entry){ .addr = addr, .size = size, .type = type };
	(*n)++;
	return 0;
}

int boot_e820(const struct guest_mem *mem, struct boot_e820_entry *out, int max)
{
	int n = 0, ret;
	bool ecam_done = false;
	for (unsigned i = 0; i < mem->nregions && i < MEM_MAX_REGIONS; i++) {
		const struct mem_region *r = &mem->region[i];
		uint64_t start = r->gpa, end = r->gpa + r->size;
		if (!r->size)
			continue;
		/* In address order: the ECAM window sits in the hole, between regions. */
		if (!ecam_done && start >= PCI_ECAM_BASE) {
			if ((ret = add(out, max, &n, PCI_ECAM_BASE, PCI_ECAM_SIZE, E820_RESERVED)) < 0)
				return ret;
			ecam_done = true;
		}
		if (start < BOOT_LOW_END) {
			/* Conventional memory up to the EBDA, then the reserved BIOS area. */
			uint64_t ram_end = end < BOOT_EBDA_START ? end : BOOT_EBDA_START;
			if (start < ram_end && (ret = add(out, max, &n, start, ram_end - start, E820_RAM)) < 0)
				return ret;
			uint64_t rs = start > BOOT_EBDA_START ? start : BOOT_EBDA_START;
			if ((ret = add(out, max, &n, rs, BOOT_LOW_END - rs, E820_RESERVED)) < 0)
				return ret;
			start = BOOT_LOW_END;
			if (end <= start)
				continue;
		}
		if ((ret = add(out, max, &n, start, end - start, E820_RAM)) < 0)
			return ret;
	}
	if (!ecam_done && (ret = add(out, max, &n, PCI_ECAM_BASE, PCI_ECAM_SIZE, E820_RESERVED)) < 0)
		return ret;
	return n;
}
