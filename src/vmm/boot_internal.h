/* Internal interfaces shared by the kernel loaders (src/vmm/boot_*.c).
 *
 * boot_load.c       format detection, file reading, cmdline/initrd placement
 * boot_elf.c        ELF parsing/validation (ELF64 x86-64, ELF32 i386 for PVH), notes, loading
 * boot_bzimage.c    bzImage setup header, host-side payload decompression, in-guest fallback
 * boot_decompress.c gzip/xz/lz4-legacy/zstd decoders with an output cap
 * boot_linux.c      zero page, identity page tables, boot GDT (Linux 64-bit entry)
 * boot_pvh.c        hvm_start_info for PVH guests
 * boot_e820.c       e820 map from the guest memory layout
 *
 * All offsets below are from Linux Documentation/arch/x86/boot.rst and zero-page.rst. */
#ifndef VMSVC_BOOT_INTERNAL_H
#define VMSVC_BOOT_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <vmsvc/boot.h>

/* ---- struct boot_params ("zero page") ---- */
#define ZP_SIZE 4096
#define ZP_ACPI_RSDP_ADDR 0x070    /* u64 */
#define ZP_EXT_RAMDISK_IMAGE 0x0c0 /* u32, high half of ramdisk_image */
#define ZP_EXT_RAMDISK_SIZE 0x0c4
#define ZP_EXT_CMD_LINE_PTR 0x0c8
#define ZP_E820_ENTRIES 0x1e8      /* u8 */
#define ZP_HDR 0x1f1               /* struct setup_header starts here */
#define ZP_HDR_END 0x290           /* ... and its slot in boot_params ends here */
#define ZP_E820_TABLE 0x2d0        /* 128 x { u64 addr, u64 size, u32 type } */
#define ZP_E820_MAX 128

/* ---- setup header (same offsets in a bzImage file and in the zero page) ---- */
#define HDR_SETUP_SECTS 0x1f1      /* u8, 0 means 4 */
#define HDR_SYSSIZE 0x1f4          /* u32, protected-mode size in 16-byte units */
#define HDR_BOOT_FLAG 0x1fe        /* u16 0xaa55 */
#define HDR_JUMP 0x200             /* "jmp short": byte 0x201 = header length - 2 */
#define HDR_HEADER 0x202           /* "HdrS" */
#define HDR_VERSION 0x206          /* u16 protocol version */
#define HDR_KERNEL_VERSION 0x20e   /* u16, pointer to a version string minus 0x200 */
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_CODE32_START 0x214
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_HEAP_END_PTR 0x224
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c  /* highest address the initrd may occupy (inclusive) */
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238     /* max cmdline length without the NUL (2.06+) */
#define HDR_PAYLOAD_OFFSET 0x248   /* 2.08+, relative to the protected-mode code */
#define HDR_PAYLOAD_LENGTH 0x24c
#define HDR_PREF_ADDRESS 0x258     /* 2.10+ */
#define HDR_INIT_SIZE 0x260        /* 2.10+ */

#define LOADFLAG_LOADED_HIGH 0x01
#define LOADFLAG_KASLR 0x02
#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02

#define BOOT_PROTO_MIN 0x0206
#define BOOT_LOW_END 0x100000ULL   /* nothing from a kernel file may land below 1 MiB */
#define BOOT_KERNEL_FILE_MAX (512ULL << 20)
#define BOOT_DECOMPRESS_MAX (512ULL << 20)
#define BOOT_PD_ADDR 0xb000ULL     /* 4 page directories, 0xb000..0xefff */
#define BOOT_PDPT_ADDR 0xa000ULL

/* ---- little-endian field access on host buffers (callers bound-check) ---- */
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p) { return (uint32_t)get_le16(p) | (uint32_t)get_le16(p + 2) << 16; }
static inline uint64_t get_le64(const uint8_t *p) { return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put_le32(uint8_t *p, uint32_t v) { put_le16(p, (uint16_t)v); put_le16(p + 2, (uint16_t)(v >> 16)); }
static inline void put_le64(uint8_t *p, uint64_t v) { put_le32(p, (uint32_t)v); put_le32(p + 4, (uint32_t)(v >> 32)); }

/* ---- ELF ---- */
struct boot_elf {
	bool is64;
	uint64_t entry;        /* e_entry as in the file */
	unsigned nload;        /* PT_LOAD segments with p_memsz > 0 */
	uint64_t lo, hi;       /* physical extent [lo, hi) of those segments */
	bool linux_note;       /* a note named "Linux": this is a Linux kernel */
	bool pvh_note;         /* XEN_ELFNOTE_PHYS32_ENTRY present */
	uint32_t pvh_entry;
};

/* Validate an ELF image (headers, program headers, notes, segment placement in
 * guest RAM) without writing guest memory. `what` names the file in messages. */
int boot_elf_parse(const char *what, const uint8_t *img, size_t size, const struct guest_mem *mem,
		   struct boot_elf *out);
/* Copy PT_LOAD segments to p_paddr and zero their bss parts. Call after parse. */
int boot_elf_load(const char *what, const uint8_t *img, size_t size, struct guest_mem *mem,
		  const struct boot_elf *e);
/* Physical 64-bit entry point of a Linux vmlinux (e_entry, or translated from virtual). */
int boot_elf_linux_entry(const char *what, const uint8_t *img, size_t size, const struct boot_elf *e,
			 uint64_t *rip);
/* ELF image -> loaded guest (PVH or Linux 64-bit), used for plain ELF files. */
int boot_elf_kernel(struct guest_mem *mem, const struct boot_request *req, const uint8_t *img, size_t size,
		    struct boot_entry *out);

/* ---- bzImage ---- */
int boot_bzimage(struct guest_mem *mem, const struct boot_request *req, const uint8_t *img, size_t size,
		 struct boot_entry *out);

/* ---- decompression ---- */
enum boot_comp { COMP_UNKNOWN, COMP_GZIP, COMP_XZ, COMP_LZ4, COMP_ZSTD, COMP_BZIP2, COMP_LZMA, COMP_LZO };
enum boot_comp boot_comp_detect(const uint8_t *p, size_t n);
const char *boot_comp_name(enum boot_comp c);
/* Decompress the first stream of `in` (trailing bytes such as the kernel's 4-byte
 * size trailer are ignored) into a malloc'd buffer of at most `limit` bytes.
 * Returns 0, -ENOTSUP (decoder not built in), -EFBIG (output would exceed limit)
 * or -EINVAL (corrupt/truncated); sets err_msg() without a file name. */
int boot_decompress(enum boot_comp c, const uint8_t *in, size_t n, size_t limit, uint8_t **out, size_t *outlen);

/* ---- Linux 64-bit entry ---- */
struct linux_boot {
	const uint8_t *hdr;    /* bzImage bytes [0x1f1, hdr_end) to start the setup header from, or NULL */
	size_t hdr_len;
	uint64_t kernel_end;   /* first byte above everything the kernel occupies */
	uint64_t initrd_max;   /* initrd must end at or below this (exclusive) */
	uint64_t cmdline_max;  /* max cmdline length without NUL */
	uint64_t rip;
	uint64_t code32_start; /* for the header field, 0 = leave */
};
int boot_linux_setup(struct guest_mem *mem, const struct boot_request *req, const struct linux_boot *lb,
		     struct boot_entry *out);
/* Identity page tables (4 GiB, 2 MiB pages) and boot GDT; exposed for tests. */
int boot_build_page_tables(struct guest_mem *mem);
int boot_build_gdt(struct guest_mem *mem, bool code64, uint64_t *base, uint16_t *limit);

/* ---- PVH ---- */
int boot_pvh_setup(struct guest_mem *mem, const struct boot_request *req, const struct boot_elf *e,
		   struct boot_entry *out);

/* Hand-written hvm_start_info layout (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;   /* version 1 */
	uint32_t memmap_entries; /* version 1 */
	uint32_t reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_table_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};
#define PVH_MODLIST_ADDR (BOOT_START_INFO_ADDR + 0x40)
#define PVH_MEMMAP_ADDR (BOOT_START_INFO_ADDR + 0x80)
#define PVH_MEMMAP_MAX ((0x1000 - 0x80) / sizeof(struct hvm_memmap_table_entry))

/* ---- shared helpers (boot_load.c) ---- */
/* Write the command line at BOOT_CMDLINE_ADDR; max_len excludes the NUL. */
int boot_place_cmdline(struct guest_mem *mem, const struct boot_request *req, uint64_t max_len, uint64_t *len);
/* Read req->initrd_path into guest RAM, page aligned, as high as possible in
 * [lo, hi). *addr = *size = 0 when there is no initrd. */
int boot_place_initrd(struct guest_mem *mem, const struct boot_request *req, uint64_t lo, uint64_t hi,
		      uint64_t *addr, uint64_t *size);
/* End of the RAM region that starts at 0 (the low region). */
uint64_t boot_low_ram_end(const struct guest_mem *mem);

#endif
