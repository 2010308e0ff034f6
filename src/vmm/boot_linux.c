/* Linux 64-bit boot protocol entry (Documentation/arch/x86/boot.rst, "64-bit
 * BOOT PROTOCOL"): zero page with setup header + e820, identity page tables
 * covering the first 4 GiB, and a flat GDT. The kernel is already in memory. */
#include <errno.h>
#include "boot_internal.h"
#include <vmsvc/err.h>

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL
#define DEFAULT_KERNEL_ALIGNMENT 0x1000000u

int boot_build_page_tables(struct guest_mem *mem)
{
	uint8_t page[4096];
	int ret = 0;
	memset(page, 0, sizeof(page));
	put_le64(page, BOOT_PDPT_ADDR | PTE_P | PTE_RW);
	ret |= mem_write(mem, BOOT_PML4_ADDR, page, sizeof(page));
	memset(page, 0, sizeof(page));
	for (unsigned i = 0; i < 4; i++)
		put_le64(page + 8 * i, (BOOT_PD_ADDR + 0x1000ULL * i) | PTE_P | PTE_RW);
	ret |= mem_write(mem, BOOT_PDPT_ADDR, page, sizeof(page));
	for (unsigned i = 0; i < 4; i++) {
		for (unsigned j = 0; j < 512; j++)
			put_le64(page + 8 * j, ((uint64_t)(i * 512 + j) << 21) | PTE_P | PTE_RW | PTE_PS);
		ret |= mem_write(mem, BOOT_PD_ADDR + 0x1000ULL * i, page, sizeof(page));
	}
	return ret ? err_set(EFAULT, "guest RAM too small for the boot page tables") : 0;
}

/* null, 0x08 code (64-bit, or 32-bit for PVH), 0x10 data, 0x18 busy TSS (16 bytes). */
int boot_build_gdt(struct guest_mem *mem, bool code64, uint64_t *base, uint16_t *limit)
{
	uint8_t gdt[5 * 8];
	memset(gdt, 0, sizeof(gdt));
	put_le64(gdt + 0x08, code64 ? 0x00af9b000000ffffULL : 0x00cf9b000000ffffULL);
	put_le64(gdt + 0x10, 0x00cf93000000ffffULL);
	put_le64(gdt + 0x18, 0x00008b0000000067ULL); /* base 0, limit 0x67, type 11, present */
	if (mem_write(mem, BOOT_GDT_ADDR, gdt, sizeof(gdt)) < 0)
		return err_set(EFAULT, "guest RAM too small for the boot GDT");
	*base = BOOT_GDT_ADDR;
	*limit = sizeof(gdt) - 1;
	return 0;
}

int boot_linux_setup(struct guest_mem *mem, const struct boot_request *req, const struct linux_boot *lb,
		     struct boot_entry *out)
{
	static const size_t hdr_room = ZP_HDR_END - ZP_HDR;
	uint8_t zp[ZP_SIZE];
	int ret;
	memset(zp, 0, sizeof(zp));
	if (lb->hdr) {
		/* Start from the kernel's own header: it tells the kernel about itself. */
		memcpy(zp + ZP_HDR, lb->hdr, lb->hdr_len < hdr_room ? lb->hdr_len : hdr_room);
	} else {
		put_le16(zp + HDR_BOOT_FLAG, 0xaa55);
		memcpy(zp + HDR_HEADER, "HdrS", 4);
		put_le16(zp + HDR_VERSION, 0x020f);
		put_le32(zp + HDR_KERNEL_ALIGNMENT, DEFAULT_KERNEL_ALIGNMENT);
		put_le32(zp + HDR_CMDLINE_SIZE, (uint32_t)lb->cmdline_max);
	}
	zp[HDR_TYPE_OF_LOADER] = 0xff; /* undefined loader */
	/* KASLR_FLAG is the decompressor's report; nothing randomized us. */
	zp[HDR_LOADFLAGS] = (uint8_t)((zp[HDR_LOADFLAGS] | LOADFLAG_LOADED_HIGH) & ~(LOADFLAG_KASLR | LOADFLAG_CAN_USE_HEAP));
	if (lb->code32_start)
		put_le32(zp + HDR_CODE32_START, (uint32_t)lb->code32_start);

	uint64_t cmdlen;
	if ((ret = boot_place_cmdline(mem, req, lb->cmdline_max, &cmdlen)) < 0)
		return ret;
	put_le32(zp + HDR_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_ADDR);
	put_le32(zp + ZP_EXT_CMD_LINE_PTR, (uint32_t)(BOOT_CMDLINE_ADDR >> 32));

	uint64_t rd_addr, rd_size;
	if ((ret = boot_place_initrd(mem, req, lb->kernel_end, lb->initrd_max, &rd_addr, &rd_size)) < 0)
		return ret;
	put_le32(zp + HDR_RAMDISK_IMAGE, (uint32_t)rd_addr);
	put_le32(zp + HDR_RAMDISK_SIZE, (uint32_t)rd_size);
	put_le32(zp + ZP_EXT_RAMDISK_IMAGE, (uint32_t)(rd_addr >> 32));
	put_le32(zp + ZP_EXT_RAMDISK_SIZE, (uint32_t)(rd_size >> 32));

	if (req->acpi_rsdp)
		put_le64(zp + ZP_ACPI_RSDP_ADDR, req->acpi_rsdp);

	struct boot_e820_entry map[ZP_E820_MAX];
	int n = boot_e820(mem, map, ZP_E820_MAX);
	if (n < 0)
		return n;
	_Static_assert(sizeof(struct boot_e820_entry) == 20, "e820 entry is 20 bytes in boot_params");
	memcpy(zp + ZP_E820_TABLE, map, (size_t)n * sizeof(map[0]));
	zp[ZP_E820_ENTRIES] = (uint8_t)n;

	if (mem_write(mem, BOOT_ZERO_PAGE_ADDR, zp, sizeof(zp)) < 0)
		return err_set(EFAULT, "guest RAM too small for the zero page");
	if ((ret = boot_build_page_tables(mem)) < 0)
		return ret;
	if ((ret = boot_build_gdt(mem, true, &out->gdt_base, &out->gdt_limit)) < 0)
		return ret;
	out->mode = BOOT_MODE_LINUX64;
	out->rip = lb->rip;
	out->rsi = BOOT_ZERO_PAGE_ADDR;
	out->rbx = 0;
	out->cr3 = BOOT_PML4_ADDR;
	return 0;
}
