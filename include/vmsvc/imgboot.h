/* Booting a disk image without firmware or bootloader: find the kernel and the
 * initrd inside the image itself (`vmsvc run guest.img`).
 *
 * Supported layouts: a bare ext2/3/4 file system at offset 0, or an MBR
 * (primary + logical partitions) or GPT partitioned disk with 512-byte sectors
 * whose partitions hold ext2/3/4 file systems (read with libext2fs).
 * Inside the file system: the /vmlinuz symlink convention, /boot/vmlinuz, else the
 * highest-versioned /boot/vmlinuz-*; the initrd with the same version
 * (/boot/initrd.img-V, /boot/initramfs-V.img, /boot/initrd-V) or the /initrd.img
 * symlink that pairs with /vmlinuz.  The image is hostile input: every offset,
 * size and symlink is checked; see docs/disk-images.md. */
#ifndef VMSVC_IMGBOOT_H
#define VMSVC_IMGBOOT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMGBOOT_KERNEL_MAX (256ULL << 20)   /* larger "kernels" are refused */
#define IMGBOOT_INITRD_MAX (1024ULL << 20)

struct imgboot_result {
	/* Paths boot_request can use ("/proc/self/fd/N" of an anonymous memfd holding
	 * the extracted file); valid until imgboot_release().  initrd_path is "" when
	 * the image has no matching initrd. */
	char kernel_path[32];
	char initrd_path[32];
	int kernel_fd, initrd_fd;          /* -1 when absent */
	char kernel_file[256];             /* where it was inside the fs: "/boot/vmlinuz-6.1.0-18-cloud-amd64" */
	char initrd_file[256];             /* "" when none */
	char version[128];                 /* "6.1.0-18-cloud-amd64", "" if the name carries none */
	int partition;                     /* 1-based partition number (vdaN), 0 = bare file system */
	uint64_t fs_offset;                /* byte offset of the file system in the image */
	char table[8];                     /* "none", "MBR" or "GPT" */
	char fs_type[8];                   /* "ext2", "ext3" or "ext4" */
	/* Root device suggestions.  root_dev ("/dev/vda" or "/dev/vdaN") needs no
	 * initramfs and is what the CLI should pass as root= (the image is attached as
	 * the first virtio-blk disk); root_uuid ("UUID=...") only works when an
	 * initramfs resolves it. */
	char root_dev[24];
	char root_uuid[48];
};

/* Find and extract the kernel (+ initrd) of the disk image at image_path.
 * Returns 0 and fills *out, or a negative errno with a one-line err_msg()
 * starting with the image path ("guest.img: no kernel found (looked for ...)").
 * On error *out holds no open descriptors. */
int imgboot_find(const char *image_path, struct imgboot_result *out);
/* Close the descriptors of a result (idempotent). */
void imgboot_release(struct imgboot_result *r);

/* ---- partition table layer (exposed for tests and diagnostics) ---- */
#define IMGBOOT_MAX_PARTS 128

enum imgboot_table_kind { IMGBOOT_TABLE_NONE, IMGBOOT_TABLE_MBR, IMGBOOT_TABLE_GPT };

struct imgboot_part {
	int number;               /* Linux numbering: GPT entry index + 1; MBR 1-4, logical 5+; 0 = whole image */
	uint64_t offset, size;    /* bytes, validated to lie inside the image */
	int priority;             /* lower is tried first (root / Linux / bootable before others) */
	bool bootable;            /* MBR 0x80 flag or GPT legacy-BIOS-bootable attribute */
	char type[40];            /* "Linux filesystem", "EFI system", "MBR type 0x83", or the GUID */
};

struct imgboot_layout {
	enum imgboot_table_kind table;
	uint64_t image_size;
	int nparts;
	struct imgboot_part parts[IMGBOOT_MAX_PARTS];  /* in table order */
	char note[256];           /* non-fatal findings ("primary GPT header damaged, using the backup") */
};

/* Read the partition table of an open image (name is used in messages).  A bare
 * file system gives table NONE with one part (number 0) covering the image. */
int imgboot_read_layout(int fd, const char *name, struct imgboot_layout *out);
/* "sort -V" style comparison: digit runs compare numerically. */
int imgboot_version_cmp(const char *a, const char *b);
/* CRC-32 (IEEE 802.3, as used by GPT). */
uint32_t imgboot_crc32(const void *buf, size_t len);

#endif
