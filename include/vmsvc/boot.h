/* Kernel loading: Linux x86 boot protocol (bzImage, ELF vmlinux) with a direct
 * 64-bit entry, and PVH (ELF note XEN_ELFNOTE_PHYS32_ENTRY + hvm_start_info).
 * The loader writes everything it needs into guest memory and describes the
 * initial vCPU state in struct boot_entry; src/vmm/vcpu.c applies it.
 *
 * Fixed low-memory layout (guest physical):
 *   0x00500  boot GDT (Linux 64-bit entry)       0x06000  PVH hvm_start_info + memmap + modules
 *   0x07000  Linux zero page (boot_params)       0x09000  PML4, 0x0a000 PDPT, 0x0b000-0x0efff PDs
 *   0x20000  kernel command line (<= 64 KiB)     0x9fc00-0xfffff reserved (EBDA, ACPI/MP tables at 0xe0000)
 *   kernel at 1 MiB (or the ELF's physical addresses); initrd as high as allowed below the hole. */
#ifndef VMSVC_BOOT_H
#define VMSVC_BOOT_H
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/mem.h>

#define BOOT_GDT_ADDR 0x500ULL
#define BOOT_START_INFO_ADDR 0x6000ULL
#define BOOT_ZERO_PAGE_ADDR 0x7000ULL
#define BOOT_PML4_ADDR 0x9000ULL
#define BOOT_CMDLINE_ADDR 0x20000ULL
#define BOOT_CMDLINE_MAX 0x10000ULL
#define BOOT_EBDA_START 0x9fc00ULL
#define BOOT_ACPI_ADDR 0xe0000ULL   /* platform tables (RSDP first), up to 0xfffff */

enum boot_mode {
	BOOT_MODE_LINUX64, /* 64-bit mode, paging on, RSI = zero page, segments flat */
	BOOT_MODE_PVH32,   /* 32-bit protected mode, paging off, EBX = hvm_start_info */
};

struct boot_request {
	const char *kernel_path;
	const char *initrd_path;  /* NULL = none */
	const char *cmdline;      /* NULL = "" */
	uint64_t acpi_rsdp;       /* guest address of the RSDP, 0 = none */
};

struct boot_entry {
	enum boot_mode mode;
	uint64_t rip;
	uint64_t rsi;             /* LINUX64: zero page address */
	uint64_t rbx;             /* PVH32: hvm_start_info address */
	uint64_t cr3;             /* LINUX64: page tables the loader built (identity, 4 GiB) */
	uint64_t gdt_base;        /* LINUX64: GDT the loader built: 0x08 code64, 0x10 data, 0x18 tss */
	uint16_t gdt_limit;
	char kind[96];            /* what was loaded, for messages: "bzImage 6.1.0 (xz payload decompressed on host)" */
};

/* Load kernel (+ initrd, cmdline) into guest memory. A file that is none of the
 * supported formats, truncated or inconsistent gives -EINVAL/-ENOEXEC with a
 * one-line err_msg() naming the file and what is wrong. */
int boot_load(struct guest_mem *mem, const struct boot_request *req, struct boot_entry *out);

/* e820 map for a memory layout (RAM, EBDA/BIOS reserved, the PCI hole excluded). */
struct boot_e820_entry {
	uint64_t addr, size;
	uint32_t type;  /* 1 RAM, 2 reserved, 3 ACPI */
} __attribute__((packed));
int boot_e820(const struct guest_mem *mem, struct boot_e820_entry *out, int max);

#endif
