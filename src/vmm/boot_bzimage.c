/* bzImage (Linux boot protocol 2.06+). Preferred: decompress the payload on the
 * host (protocol 2.08+ gives payload_offset/length) and load the vmlinux ELF it
 * contains at its physical addresses, entering startup_64 directly. Fallback for
 * payloads we cannot decode (bzip2, lzma, lzo, corrupt, not ELF): load the
 * protected-mode part and enter its 64-bit entry (load address + 0x200), so the
 * kernel decompresses itself in the guest. Either way the zero page starts from
 * the bzImage's own setup header. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "boot_internal.h"
#include <vmsvc/err.h>

struct bz {
	const char *path;
	const uint8_t *img;
	size_t size;
	uint16_t version;
	size_t hdr_end;     /* first byte after the setup header in the file */
	size_t setup_size;  /* (setup_sects + 1) * 512: start of protected-mode code */
	char kver[32];      /* "6.1.0-18-amd64" or "" (truncated) */
};

/* Header fields beyond the header's own length read as 0 (older protocols). */
static uint32_t hdr32(const struct bz *b, size_t off) { return off + 4 <= b->hdr_end ? get_le32(b->img + off) : 0; }
static uint16_t hdr16(const struct bz *b, size_t off) { return off + 2 <= b->hdr_end ? get_le16(b->img + off) : 0; }
static uint64_t hdr64(const struct bz *b, size_t off) { return off + 8 <= b->hdr_end ? get_le64(b->img + off) : 0; }

static int parse_header(struct bz *b)
{
	const uint8_t *img = b->img;
	if (b->size < 2 * 512)
		return err_set(ENOEXEC, "%s: truncated bzImage (%zu bytes)", b->path, b->size);
	b->version = get_le16(img + HDR_VERSION);
	if (b->version < BOOT_PROTO_MIN)
		return err_set(ENOEXEC, "%s: boot protocol %u.%02u is too old (need 2.06 or later)", b->path,
			       b->version >> 8, b->version & 0xff);
	if (get_le16(img + HDR_BOOT_FLAG) != 0xaa55)
		return err_set(ENOEXEC, "%s: bzImage boot flag is 0x%04x, not 0xaa55", b->path, get_le16(img + HDR_BOOT_FLAG));
	b->hdr_end = 0x202 + (size_t)img[HDR_JUMP + 1];
	if (b->hdr_end < HDR_CMDLINE_SIZE + 4) /* a 2.06 header reaches cmdline_size */
		return err_set(ENOEXEC, "%s: bzImage setup header is too short (%zu bytes)", b->path, b->hdr_end - ZP_HDR);
	unsigned sects = img[HDR_SETUP_SECTS] ? img[HDR_SETUP_SECTS] : 4;
	b->setup_size = (sects + 1) * 512u;
	if (b->setup_size >= b->size || b->hdr_end > b->setup_size)
		return err_set(ENOEXEC, "%s: bzImage setup_sects %u is inconsistent with the file size (%zu bytes)", b->path,
			       img[HDR_SETUP_SECTS], b->size);
	/* Version string for messages: pointer at 0x20e, relative to 0x200. */
	uint16_t kv = hdr16(b, HDR_KERNEL_VERSION);
	b->kver[0] = 0;
	if (kv) {
		size_t off = (size_t)kv + 0x200, i = 0;
		while (off + i < b->setup_size && i + 1 < sizeof(b->kver) && img[off + i] > ' ' && img[off + i] < 0x7f) {
			b->kver[i] = (char)img[off + i];
			i++;
		}
		b->kver[i] = 0;
	}
	return 0;
}

static uint64_t initrd_limit(const struct bz *b)
{
	uint32_t max = hdr32(b, HDR_INITRD_ADDR_MAX);
	return (uint64_t)(max ? max : 0x37ffffffu) + 1;
}

static uint64_t cmdline_limit(const struct bz *b)
{
	uint32_t n = hdr32(b, HDR_CMDLINE_SIZE);
	return n ? n : 255; /* pre-2.06 default; 2.06+ always sets it */
}

static int load_decompressed(struct guest_mem *mem, const struct boot_request *req, const struct bz *b,
			     const uint8_t *elf, size_t n, enum boot_comp comp, struct boot_entry *out)
{
	char what[4200];
	snprintf(what, sizeof(what), "%s (decompressed %s payload)", b->path, boot_comp_name(comp));
	struct boot_elf e;
	int ret = boot_elf_parse(what, elf, n, mem, &e);
	if (ret < 0)
		return ret;
	if (!e.is64)
		return err_set(ENOEXEC, "%s: payload is a 32-bit ELF", what);
	struct linux_boot lb = {
		.hdr = b->img + ZP_HDR,
		.hdr_len = b->hdr_end - ZP_HDR,
		.initrd_max = initrd_limit(b),
		.cmdline_max = cmdline_limit(b),
	};
	/* init_size is the memory the kernel needs from its start during boot. */
	uint64_t init_end = e.lo + hdr32(b, HDR_INIT_SIZE);
	lb.kernel_end = init_end > e.hi ? init_end : e.hi;
	if ((ret = boot_elf_linux_entry(what, elf, n, &e, &lb.rip)) < 0)
		return ret;
	if ((ret = boot_elf_load(what, elf, n, mem, &e)) < 0)
		return ret;
	if ((ret = boot_linux_setup(mem, req, &lb, out)) < 0)
		return ret;
	snprintf(out->kind, sizeof(out->kind), "bzImage %s, %s payload decompressed on host (%u MiB)",
		 b->kver[0] ? b->kver : "(no version)", boot_comp_name(comp), (unsigned)(n >> 20));
	return 0;
}

static bool fits(const struct guest_mem *mem, uint64_t addr, uint64_t len)
{
	return addr >= BOOT_LOW_END && addr < MEM_HOLE_END && len <= MEM_HOLE_END - addr && gpa_to_hva(mem, addr, len);
}

/* In-guest decompression: protected-mode code at pref_address (or relocated),
 * entered at its 64-bit entry point. */
static int load_protected_mode(struct guest_mem *mem, const struct boot_request *req, const struct bz *b,
			       const char *comp, const char *why, struct boot_entry *out)
{
	const uint8_t *pm = b->img + b->setup_size;
	uint64_t pm_size = b->size - b->setup_size;
	if (!(hdr16(b, HDR_XLOADFLAGS) & XLF_KERNEL_64) || b->version < 0x020c)
		return err_set(ENOEXEC, "%s: %s, and the kernel has no 64-bit entry point (XLF_KERNEL_64) to decompress itself",
			       b->path, why);
	if (pm_size <= 0x200)
		return err_set(ENOEXEC, "%s: protected-mode kernel is too small (%llu bytes)", b->path,
			       (unsigned long long)pm_size);
	uint64_t init_size = hdr32(b, HDR_INIT_SIZE);
	if (init_size < pm_size)
		return err_set(ENOEXEC, "%s: bzImage init_size 0x%llx is smaller than the kernel (0x%llx bytes)", b->path,
			       (unsigned long long)init_size, (unsigned long long)pm_size);
	uint64_t load = hdr64(b, HDR_PREF_ADDRESS);
	if (!fits(mem, load, init_size)) {
		uint64_t align = hdr32(b, HDR_KERNEL_ALIGNMENT);
		if (!b->img[HDR_RELOCATABLE])
			return err_set(ENOEXEC, "%s: kernel must be loaded at 0x%llx (+0x%llx bytes), which is not in guest RAM",
				       b->path, (unsigned long long)load, (unsigned long long)init_size);
		if (align < 0x1000 || (align & (align - 1)) || align > (1u << 30))
			align = 2u << 20;
		load = (BOOT_LOW_END + align - 1) & ~(align - 1);
		if (!fits(mem, load, init_size))
			return err_set(ENOEXEC, "%s: kernel needs 0x%llx bytes at 0x%llx, more than guest RAM has", b->path,
				       (unsigned long long)init_size, (unsigned long long)load);
	}
	if (mem_write(mem, load, pm, pm_size) < 0)
		return err_set(EFAULT, "%s: cannot write kernel at 0x%llx", b->path, (unsigned long long)load);
	struct linux_boot lb = {
		.hdr = b->img + ZP_HDR,
		.hdr_len = b->hdr_end - ZP_HDR,
		.kernel_end = load + init_size,
		.initrd_max = initrd_limit(b),
		.cmdline_max = cmdline_limit(b),
		.rip = load + 0x200,
		.code32_start = load,
	};
	int ret = boot_linux_setup(mem, req, &lb, out);
	if (ret < 0)
		return ret;
	snprintf(out->kind, sizeof(out->kind), "bzImage %s, %s payload decompressed in guest",
		 b->kver[0] ? b->kver : "(no version)", comp);
	return 0;
}

int boot_bzimage(struct guest_mem *mem, const struct boot_request *req, const uint8_t *img, size_t size,
		 struct boot_entry *out)
{
	struct bz b = { .path = req->kernel_path, .img = img, .size = size };
	int ret = parse_header(&b);
	if (ret < 0)
		return ret;
	char why[128];
	const char *comp_name = "unknown";
	snprintf(why, sizeof(why), "payload decompressed in guest (protocol %u.%02u has no payload fields)",
		 b.version >> 8, b.version & 0xff);
	if (b.version >= 0x0208) {
		uint64_t pm_size = size - b.setup_size;
		uint64_t poff = hdr32(&b, HDR_PAYLOAD_OFFSET), plen = hdr32(&b, HDR_PAYLOAD_LENGTH);
		if (plen == 0 || poff > pm_size || plen > pm_size - poff)
			return err_set(ENOEXEC, "%s: bzImage payload (offset 0x%llx, length 0x%llx) is outside the kernel (0x%llx bytes)",
				       b.path, (unsigned long long)poff, (unsigned long long)plen, (unsigned long long)pm_size);
		const uint8_t *payload = img + b.setup_size + poff;
		enum boot_comp comp = boot_comp_detect(payload, plen);
		comp_name = boot_comp_name(comp);
		uint64_t limit = mem->ram_size < BOOT_DECOMPRESS_MAX ? mem->ram_size : BOOT_DECOMPRESS_MAX;
		uint8_t *elf = NULL;
		size_t n = 0;
		ret = boot_decompress(comp, payload, plen, limit, &elf, &n);
		if (ret == -EFBIG || ret == -ENOMEM)
			return err_prefix(ret, "%s", b.path);
		if (ret == 0 && n >= 4 && memcmp(elf, ELFMAG, SELFMAG) == 0) {
			ret = load_decompressed(mem, req, &b, elf, n, comp, out);
			free(elf);
			return ret;
		}
		free(elf);
		if (ret == 0)
			snprintf(why, sizeof(why), "%s payload is not an ELF image; decompressing in guest", boot_comp_name(comp));
		else if (ret == -ENOTSUP)
			snprintf(why, sizeof(why), "%s payload decompressed in guest", boot_comp_name(comp));
		else
			snprintf(why, sizeof(why), "%.80s; decompressing in guest", err_msg());
		if (ret != -ENOTSUP)
			log_warn("%s: %s", b.path, why);
	}
	return load_protected_mode(mem, req, &b, comp_name, why, out);
}
