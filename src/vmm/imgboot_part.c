/* Partition tables of disk images (MBR with logical partitions, GPT) and the
 * bare-file-system case.  Everything read from the image is hostile: headers
 * are CRC-checked, every partition must lie inside the image and the usable
 * area, and partitions must not overlap.  Sectors are 512 bytes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include <vmsvc/err.h>
#include <vmsvc/imgboot.h>

#define SECTOR ((uint64_t)512)
#define EXT_MAGIC_OFF (1024 + 56)
#define GPT_MAX_ENTRY_BYTES (4u << 20)   /* the array is normally 16 KiB */
#define MBR_MAX_LOGICAL 64

uint32_t imgboot_crc32(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t crc = 0xffffffffu;
	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	return ~crc;
}

int imgboot_version_cmp(const char *a, const char *b)
{
	while (*a && *b) {
		if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
			while (*a == '0') a++;
			while (*b == '0') b++;
			size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
			if (la != lb)
				return la < lb ? -1 : 1;
			int c = strncmp(a, b, la);
			if (c)
				return c < 0 ? -1 : 1;
			a += la, b += lb;
			continue;
		}
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		a++, b++;
	}
	return *a ? 1 : *b ? -1 : 0;
}

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;   /* short: past the end */
		done += (size_t)n;
	}
	return 0;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int add_part(struct imgboot_layout *l, const char *name, int number, uint64_t off, uint64_t size,
		    int prio, bool bootable, const char *type)
{
	if (l->nparts >= IMGBOOT_MAX_PARTS)
		return err_set(EINVAL, "%s: more than %d partitions", name, IMGBOOT_MAX_PARTS);
	struct imgboot_part *p = &l->parts[l->nparts++];
	p->number = number;
	p->offset = off;
	p->size = size;
	p->bootable = bootable;
	p->priority = prio * 2 - (bootable ? 1 : 0);
	snprintf(p->type, sizeof(p->type), "%s", type);
	return 0;
}

static int check_overlaps(const struct imgboot_layout *l, const char *name)
{
	for (int i = 0; i < l->nparts; i++)
		for (int j = i + 1; j < l->nparts; j++) {
			const struct imgboot_part *a = &l->parts[i], *b = &l->parts[j];
			if (a->offset < b->offset + b->size && b->offset < a->offset + a->size)
				return err_set(EINVAL, "%s: partitions %d and %d overlap (bytes %" PRIu64 "+%" PRIu64
					       " and %" PRIu64 "+%" PRIu64 ")", name, a->number, b->number,
					       a->offset, a->size, b->offset, b->size);
		}
	return 0;
}

/* ---------------------------------------------------------------- MBR ---- */

static const char *mbr_type(uint8_t t, int *prio, char *buf, size_t buf_sz)
{
	*prio = 2;
	switch (t) {
	case 0x83: *prio = 1; return "Linux (0x83)";
	case 0x82: *prio = 4; return "Linux swap (0x82)";
	case 0xef: *prio = 3; return "EFI system (0xef)";
	case 0x8e: *prio = 3; return "Linux LVM (0x8e)";
	case 0xfd: *prio = 3; return "Linux RAID (0xfd)";
	case 0x07: *prio = 3; return "NTFS/exFAT (0x07)";
	case 0x0b: case 0x0c: *prio = 3; return "FAT32";
	}
	snprintf(buf, buf_sz, "MBR type 0x%02x", t);
	return buf;
}

static bool mbr_is_extended(uint8_t t) { return t == 0x05 || t == 0x0f || t == 0x85; }

/* Logical partitions: a chain of EBRs inside the extended partition. */
static int mbr_logical(int fd, const char *name, struct imgboot_layout *l, uint64_t ext_lba, uint64_t ext_sectors)
{
	uint64_t ebr_rel = 0;
	for (int n = 0; n < MBR_MAX_LOGICAL; n++) {
		uint64_t ebr_lba = ext_lba + ebr_rel;
		uint8_t s[SECTOR];
		if (ebr_rel >= ext_sectors)
			return err_set(EINVAL, "%s: MBR logical partition chain points outside the extended partition (sector %" PRIu64 ")",
				       name, ebr_lba);
		if (read_at(fd, s, sizeof(s), ebr_lba * SECTOR) < 0 || s[510] != 0x55 || s[511] != 0xaa)
			return err_set(EINVAL, "%s: MBR extended boot record at offset %" PRIu64 " is missing or unreadable",
				       name, ebr_lba * SECTOR);
		const uint8_t *e0 = s + 446, *e1 = s + 462;
		uint64_t start = le32(e0 + 8), count = le32(e0 + 12);
		if (e0[4] != 0 && count != 0) {
			uint64_t abs = ebr_lba + start;
			if (start == 0 || start + count > ext_sectors - ebr_rel)
				return err_set(EINVAL, "%s: MBR logical partition %d (sectors %" PRIu64 "+%" PRIu64
					       ") lies outside its extended partition", name, 5 + n, abs, count);
			if ((abs + count) * SECTOR > l->image_size)
				return err_set(EINVAL, "%s: MBR partition %d (sectors %" PRIu64 "+%" PRIu64
					       ") extends beyond the end of the image (%" PRIu64 " sectors)",
					       name, 5 + n, abs, count, l->image_size / SECTOR);
			int prio;
			char tbuf[24];
			const char *type = mbr_type(e0[4], &prio, tbuf, sizeof(tbuf));
			int r = add_part(l, name, 5 + n, abs * SECTOR, count * SECTOR, prio, e0[0] == 0x80, type);
			if (r < 0)
				return r;
		}
		uint64_t next = le32(e1 + 8);
		if (e1[4] == 0 || next == 0)
			return 0;
		if (next <= ebr_rel)   /* chains only go forward; this also stops loops */
			return err_set(EINVAL, "%s: MBR logical partition chain loops back (EBR at sector %" PRIu64 ")",
				       name, ebr_lba);
		ebr_rel = next;
	}
	return err_set(EINVAL, "%s: MBR has more than %d logical partitions", name, MBR_MAX_LOGICAL);
}

static int read_mbr(int fd, const char *name, const uint8_t *s, struct imgboot_layout *l)
{
	l->table = IMGBOOT_TABLE_MBR;
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = s + 446 + 16 * i;
		uint8_t status = e[0], type = e[4];
		uint64_t start = le32(e + 8), count = le32(e + 12);
		if (status != 0 && status != 0x80)
			return err_set(EINVAL, "%s: MBR entry %d has an invalid status byte 0x%02x (not a partition table?)",
				       name, i + 1, status);
		if (type == 0 || count == 0)
			continue;
		if (start == 0)
			return err_set(EINVAL, "%s: MBR partition %d starts at sector 0 (overlaps the MBR)", name, i + 1);
		if ((start + count) * SECTOR > l->image_size)
			return err_set(EINVAL, "%s: MBR partition %d (sectors %" PRIu64 "+%" PRIu64
				       ") extends beyond the end of the image (%" PRIu64 " sectors)",
				       name, i + 1, start, count, l->image_size / SECTOR);
		if (mbr_is_extended(type)) {
			int r = mbr_logical(fd, name, l, start, count);
			if (r < 0)
				return r;
			continue;
		}
		int prio;
		char tbuf[24];
		const char *tname = mbr_type(type, &prio, tbuf, sizeof(tbuf));
		int r = add_part(l, name, i + 1, start * SECTOR, count * SECTOR, prio, status == 0x80, tname);
		if (r < 0)
			return r;
	}
	return check_overlaps(l, name);
}

/* ---------------------------------------------------------------- GPT ---- */

static const struct { const char *guid, *name; int prio; } gpt_types[] = {
	{ "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)", 0 },
	{ "44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)", 0 },
	{ "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem", 1 },
	{ "BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot", 2 },
	{ "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux /home", 3 },
	{ "3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux /srv", 3 },
	{ "E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM", 3 },
	{ "A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID", 3 },
	{ "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system", 3 },
	{ "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data", 3 },
	{ "21686148-6449-6E6F-744E-656564454649", "BIOS boot", 4 },
	{ "0657FD6D-A4AB-4A1F-8BCC-4F7BB2A4A2B2", "Linux swap", 4 },
};

static void guid_text(const uint8_t *g, char out[37])
{
	snprintf(out, 37, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X",
		 le32(g), le16(g + 4), le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
}

struct gpt_hdr {
	uint64_t my_lba, alt_lba, first_usable, last_usable, entries_lba;
	uint32_t num_entries, entry_size, entries_crc;
};

/* Validate the header at sector lba; on failure *why says what is wrong. */
static bool gpt_header_ok(int fd, uint64_t lba, uint64_t sectors, struct gpt_hdr *h, char *why, size_t why_sz)
{
	uint8_t s[SECTOR];
	uint64_t off = lba * SECTOR;
	if (lba >= sectors || read_at(fd, s, sizeof(s), off) < 0) {
		snprintf(why, why_sz, "no GPT header at offset %" PRIu64 " (past the end of the image)", off);
		return false;
	}
	if (memcmp(s, "EFI PART", 8) != 0) {
		snprintf(why, why_sz, "no GPT header at offset %" PRIu64 " (signature missing)", off);
		return false;
	}
	uint32_t hsize = le32(s + 12);
	if (hsize < 92 || hsize > SECTOR) {
		snprintf(why, why_sz, "GPT header at offset %" PRIu64 " has an invalid size %u", off, hsize);
		return false;
	}
	uint32_t crc = le32(s + 16);
	memset(s + 16, 0, 4);
	if (imgboot_crc32(s, hsize) != crc) {
		snprintf(why, why_sz, "GPT header CRC mismatch at offset %" PRIu64, off);
		return false;
	}
	h->my_lba = le64(s + 24);
	h->alt_lba = le64(s + 32);
	h->first_usable = le64(s + 40);
	h->last_usable = le64(s + 48);
	h->entries_lba = le64(s + 72);
	h->num_entries = le32(s + 80);
	h->entry_size = le32(s + 84);
	h->entries_crc = le32(s + 88);
	if (h->my_lba != lba) {
		snprintf(why, why_sz, "GPT header at offset %" PRIu64 " names itself LBA %" PRIu64, off, h->my_lba);
		return false;
	}
	if (h->entry_size < 128 || h->entry_size > 4096 || h->entry_size % 8 ||
	    h->num_entries == 0 || (uint64_t)h->num_entries * h->entry_size > GPT_MAX_ENTRY_BYTES) {
		snprintf(why, why_sz, "GPT header at offset %" PRIu64 " has an absurd partition array (%u entries of %u bytes)",
			 off, h->num_entries, h->entry_size);
		return false;
	}
	uint64_t arr_sectors = ((uint64_t)h->num_entries * h->entry_size + SECTOR - 1) / SECTOR;
	if (h->first_usable > h->last_usable || h->last_usable >= sectors || h->first_usable < 2) {
		snprintf(why, why_sz, "GPT header at offset %" PRIu64 " has an invalid usable area (LBA %" PRIu64 "..%" PRIu64
			 ", image has %" PRIu64 " sectors)", off, h->first_usable, h->last_usable, sectors);
		return false;
	}
	bool arr_inside = h->entries_lba >= 2 && h->entries_lba < sectors && arr_sectors <= sectors - h->entries_lba;
	bool arr_clear = h->entries_lba + arr_sectors <= h->first_usable || h->entries_lba > h->last_usable;
	if (!arr_inside || !arr_clear || (h->entries_lba <= lba && lba < h->entries_lba + arr_sectors)) {
		snprintf(why, why_sz, "GPT partition array (LBA %" PRIu64 ", %" PRIu64 " sectors) of the header at offset %" PRIu64
			 " lies outside the image or overlaps the usable area", h->entries_lba, arr_sectors, off);
		return false;
	}
	return true;
}

static int read_gpt(int fd, const char *name, struct imgboot_layout *l)
{
	uint64_t sectors = l->image_size / SECTOR;
	struct gpt_hdr h;
	char why[200], why_backup[200];
	l->table = IMGBOOT_TABLE_GPT;
	if (!gpt_header_ok(fd, 1, sectors, &h, why, sizeof(why))) {
		/* The backup header lives in the last sector; partitioning tools fall
		 * back to it, so do we (and say so). */
		if (sectors < 3 || !gpt_header_ok(fd, sectors - 1, sectors, &h, why_backup, sizeof(why_backup)))
			return err_set(EINVAL, "%s: %s; the backup GPT header is unusable too", name, why);
		snprintf(l->note, sizeof(l->note), "%s; using the backup GPT header", why);
	}
	size_t arr_bytes = (size_t)h.num_entries * h.entry_size;
	uint8_t *arr = malloc(arr_bytes);
	if (!arr)
		return err_set(ENOMEM, "%s: out of memory reading the GPT partition array", name);
	int r = read_at(fd, arr, arr_bytes, h.entries_lba * SECTOR);
	if (r < 0) {
		free(arr);
		return err_set(EIO, "%s: cannot read the GPT partition array at offset %" PRIu64, name, h.entries_lba * SECTOR);
	}
	if (imgboot_crc32(arr, arr_bytes) != h.entries_crc) {
		free(arr);
		return err_set(EINVAL, "%s: GPT partition array CRC mismatch at offset %" PRIu64, name, h.entries_lba * SECTOR);
	}
	static const uint8_t zero[16];
	for (uint32_t i = 0; i < h.num_entries && r == 0; i++) {
		const uint8_t *e = arr + (size_t)i * h.entry_size;
		if (memcmp(e, zero, 16) == 0)
			continue;
		uint64_t first = le64(e + 32), last = le64(e + 40), attrs = le64(e + 48);
		int num = (int)i + 1;
		if (first > last)
			r = err_set(EINVAL, "%s: GPT partition %d ends before it starts (LBA %" PRIu64 "..%" PRIu64 ")",
				    name, num, first, last);
		else if (last >= sectors)
			r = err_set(EINVAL, "%s: GPT partition %d (LBA %" PRIu64 "..%" PRIu64
				    ") extends beyond the end of the image (%" PRIu64 " sectors)", name, num, first, last, sectors);
		else if (first < h.first_usable || last > h.last_usable)
			r = err_set(EINVAL, "%s: GPT partition %d (LBA %" PRIu64 "..%" PRIu64
				    ") lies outside the usable area (LBA %" PRIu64 "..%" PRIu64 ")",
				    name, num, first, last, h.first_usable, h.last_usable);
		if (r < 0)
			break;
		char guid[37];
		guid_text(e, guid);
		const char *tname = guid;
		int prio = 2;
		for (size_t t = 0; t < sizeof(gpt_types) / sizeof(gpt_types[0]); t++)
			if (strcasecmp(guid, gpt_types[t].guid) == 0) {
				tname = gpt_types[t].name;
				prio = gpt_types[t].prio;
			}
		r = add_part(l, name, num, first * SECTOR, (last - first + 1) * SECTOR, prio, attrs & 4, tname);
	}
	free(arr);
	return r < 0 ? r : check_overlaps(l, name);
}

/* --------------------------------------------------------------- entry ---- */

static int image_size(int fd, const char *name, uint64_t *size)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return err_set(errno, "%s: %s", name, strerror(errno));
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, size) == 0)
		return 0;
	return err_set(EINVAL, "%s: not a regular file or block device", name);
}

/* Name common non-raw formats in the error, since "convert it" is the fix. */
static const char *sniff_format(const uint8_t *h)
{
	if (memcmp(h, "QFI\xfb", 4) == 0) return " (this is a qcow2 image: convert it with qemu-img convert -O raw)";
	if (memcmp(h, "KDMV", 4) == 0) return " (this is a VMDK image: convert it with qemu-img convert -O raw)";
	if (memcmp(h, "vhdxfile", 8) == 0) return " (this is a VHDX image: convert it with qemu-img convert -O raw)";
	if (memcmp(h, "LUKS\xba\xbe", 6) == 0) return " (this is a LUKS encrypted volume)";
	if (memcmp(h, "XFSB", 4) == 0) return " (this is an XFS file system, not supported)";
	if (memcmp(h, "hsqs", 4) == 0) return " (this is a squashfs image, not supported)";
	if (h[0] == 0x1f && h[1] == 0x8b) return " (this is gzip-compressed: decompress it first)";
	if (memcmp(h, "\xfd" "7zXZ", 6) == 0) return " (this is xz-compressed: decompress it first)";
	if (memcmp(h, "\x28\xb5\x2f\xfd", 4) == 0) return " (this is zstd-compressed: decompress it first)";
	return "";
}

int imgboot_read_layout(int fd, const char *name, struct imgboot_layout *l)
{
	memset(l, 0, sizeof(*l));
	int r = image_size(fd, name, &l->image_size);
	if (r < 0)
		return r;
	if (l->image_size < 2048)
		return err_set(EINVAL, "%s: only %" PRIu64 " bytes, too small for a partition table or an ext2/3/4 file system",
			       name, l->image_size);
	uint8_t head[2048];
	if (read_at(fd, head, sizeof(head), 0) < 0)
		return err_set(EIO, "%s: cannot read the first sectors", name);

	/* GPT first: a GPT disk also carries a (protective) MBR. */
	if (memcmp(head + SECTOR, "EFI PART", 8) == 0)
		return read_gpt(fd, name, l);
	/* A bare file system: nothing else lives at 1024+56 on a partitioned disk
	 * (MBR disks leave sectors 1..2047 empty, GPT's array has no 0xEF53 there
	 * that we would have reached). */
	if (le16(head + EXT_MAGIC_OFF) == 0xef53) {
		l->table = IMGBOOT_TABLE_NONE;
		l->nparts = 1;
		l->parts[0] = (struct imgboot_part){ .number = 0, .offset = 0, .size = l->image_size };
		snprintf(l->parts[0].type, sizeof(l->parts[0].type), "whole image");
		return 0;
	}
	if (head[510] == 0x55 && head[511] == 0xaa) {
		for (int i = 0; i < 4; i++)
			if (head[446 + 16 * i + 4] == 0xee)   /* protective MBR: GPT header missing/damaged */
				return read_gpt(fd, name, l);
		return read_mbr(fd, name, head, l);
	}
	return err_set(EINVAL, "%s: no partition table (MBR or GPT) and no ext2/3/4 file system at offset 0%s",
		       name, sniff_format(head));
}
