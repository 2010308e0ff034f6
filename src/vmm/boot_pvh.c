/* PVH boot (xen/include/public/arch-x86/hvm/start_info.h, docs "x86/pvh"):
 * the guest starts in flat 32-bit protected mode, paging off, at the
 * XEN_ELFNOTE_PHYS32_ENTRY address with EBX = hvm_start_info. Everything the
 * guest needs (memory map, command line, initrd as module 0) hangs off it.
 * Page BOOT_START_INFO_ADDR: start_info @+0, modlist @+0x40, memmap @+0x80. */
#include <errno.h>
#include "boot_internal.h"
#include <vmsvc/err.h>

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");

int boot_pvh_setup(struct guest_mem *mem, const struct boot_request *req, const struct boot_elf *e,
		   struct boot_entry *out)
{
	uint8_t page[4096];
	int ret;
	memset(page, 0, sizeof(page));
	struct hvm_start_info si = { .magic = HVM_START_MAGIC, .version = 1 };

	uint64_t cmdlen;
	if ((ret = boot_place_cmdline(mem, req, BOOT_CMDLINE_MAX - 1, &cmdlen)) < 0)
		return ret;
	si.cmdline_paddr = BOOT_CMDLINE_ADDR;

	/* No header tells us a limit: keep the initrd below 4 GiB (the low region). */
	uint64_t rd_addr, rd_size;
	if ((ret = boot_place_initrd(mem, req, e->hi, MEM_HOLE_START, &rd_addr, &rd_size)) < 0)
		return ret;
	if (rd_size) {
		struct hvm_modlist_entry mod = { .paddr = rd_addr, .size = rd_size };
		memcpy(page + (PVH_MODLIST_ADDR - BOOT_START_INFO_ADDR), &mod, sizeof(mod));
		si.nr_modules = 1;
		si.modlist_paddr = PVH_MODLIST_ADDR;
	}
	si.rsdp_paddr = req->acpi_rsdp;

	struct boot_e820_entry map[PVH_MEMMAP_MAX];
	int n = boot_e820(mem, map, (int)PVH_MEMMAP_MAX);
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		struct hvm_memmap_table_entry me = { .addr = map[i].addr, .size = map[i].size, .type = map[i].type };
		memcpy(page + (PVH_MEMMAP_ADDR - BOOT_START_INFO_ADDR) + (size_t)i * sizeof(me), &me, sizeof(me));
	}
	si.memmap_paddr = PVH_MEMMAP_ADDR;
	si.memmap_entries = (uint32_t)n;
	memcpy(page, &si, sizeof(si));
	if (mem_write(mem, BOOT_START_INFO_ADDR, page, sizeof(page)) < 0)
		return err_set(EFAULT, "guest RAM too small for hvm_start_info");

	/* A GDT matching the state vcpu.c loads (0x08 flat 32-bit code, 0x10 data,
	 * 0x18 TSS), so a guest reloading segment registers gets the same values. */
	if ((ret = boot_build_gdt(mem, false, &out->gdt_base, &out->gdt_limit)) < 0)
		return ret;
	out->mode = BOOT_MODE_PVH32;
	out->rip = e->pvh_entry;
	out->rbx = BOOT_START_INFO_ADDR;
	out->rsi = 0;
	out->cr3 = 0;
	return 0;
}
