/* ELF kernels: x86-64 vmlinux (Linux 64-bit entry) and PVH guests (ELF64 x86-64
 * or ELF32 i386 with a XEN_ELFNOTE_PHYS32_ENTRY note).
 *
 * Which boot path an ELF gets:
 *   - a note named "Linux" (every vmlinux since 4.19 carries the build-salt note)
 *     means "this is Linux": Linux 64-bit entry with a zero page, even when the
 *     kernel also has a PVH note (the direct 64-bit entry skips the 32-bit PVH stub);
 *   - otherwise a PVH note means "PVH guest": 32-bit entry with hvm_start_info;
 *   - otherwise an ELF64 is entered like a vmlinux (older kernels had no Linux note;
 *     freestanding 64-bit test guests simply ignore RSI).
 * Everything is loaded at p_paddr, which must be at or above 1 MiB (below that is
 * the loader's own layout) and inside guest RAM. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include "boot_internal.h"
#include <vmsvc/err.h>

#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct seg {
	uint32_t type;
	uint64_t offset, vaddr, paddr, filesz, memsz, align;
};

struct ehdr {
	bool is64;
	uint64_t entry, phoff;
	uint16_t phentsize, phnum;
};

static int read_ehdr(const char *what, const uint8_t *img, size_t size, struct ehdr *h)
{
	if (size < EI_NIDENT)
		return err_set(ENOEXEC, "%s: truncated ELF header (%zu bytes)", what, size);
	if (img[EI_DATA] != ELFDATA2LSB)
		return err_set(ENOEXEC, "%s: ELF is not little-endian", what);
	if (img[EI_VERSION] != EV_CURRENT)
		return err_set(ENOEXEC, "%s: unsupported ELF version %u", what, img[EI_VERSION]);
	uint16_t type, machine;
	if (img[EI_CLASS] == ELFCLASS64) {
		Elf64_Ehdr e;
		if (size < sizeof(e))
			return err_set(ENOEXEC, "%s: truncated ELF header (%zu bytes)", what, size);
		memcpy(&e, img, sizeof(e));
		type = e.e_type;
		machine = e.e_machine;
		*h = (struct ehdr){ true, e.e_entry, e.e_phoff, e.e_phentsize, e.e_phnum };
		if (machine != EM_X86_64)
			return err_set(ENOEXEC, "%s: ELF64 for machine %u, not x86-64", what, machine);
		if (h->phentsize != sizeof(Elf64_Phdr))
			return err_set(ENOEXEC, "%s: bad ELF program header size %u", what, h->phentsize);
	} else if (img[EI_CLASS] == ELFCLASS32) {
		Elf32_Ehdr e;
		if (size < sizeof(e))
			return err_set(ENOEXEC, "%s: truncated ELF header (%zu bytes)", what, size);
		memcpy(&e, img, sizeof(e));
		type = e.e_type;
		machine = e.e_machine;
		*h = (struct ehdr){ false, e.e_entry, e.e_phoff, e.e_phentsize, e.e_phnum };
		if (machine != EM_386)
			return err_set(ENOEXEC, "%s: ELF32 for machine %u, not i386", what, machine);
		if (h->phentsize != sizeof(Elf32_Phdr))
			return err_set(ENOEXEC, "%s: bad ELF program header size %u", what, h->phentsize);
	} else {
		return err_set(ENOEXEC, "%s: bad ELF class %u", what, img[EI_CLASS]);
	}
	if (type != ET_EXEC && type != ET_DYN)
		return err_set(ENOEXEC, "%s: ELF type %u is not an executable", what, type);
	if (h->phnum == 0 || h->phnum == PN_XNUM)
		return err_set(ENOEXEC, "%s: ELF has no usable program headers (e_phnum %u)", what, h->phnum);
	uint64_t need = (uint64_t)h->phnum * h->phentsize;
	if (h->phoff > size || need > size - h->phoff)
		return err_set(ENOEXEC, "%s: ELF program headers (offset %llu, %u entries) extend beyond the end of the file",
			       what, (unsigned long long)h->phoff, h->phnum);
	return 0;
}

/* Program header i, already known to lie inside the image. */
static struct seg get_seg(const uint8_t *img, const struct ehdr *h, unsigned i)
{
	const uint8_t *p = img + h->phoff + (uint64_t)i * h->phentsize;
	if (h->is64) {
		Elf64_Phdr ph;
		memcpy(&ph, p, sizeof(ph));
		return (struct seg){ ph.p_type, ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_align };
	}
	Elf32_Phdr ph;
	memcpy(&ph, p, sizeof(ph));
	return (struct seg){ ph.p_type, ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_align };
}

static bool in_file(const struct seg *s, size_t size)
{
	return s->offset <= size && s->filesz <= size - s->offset;
}

static bool name_is(const uint8_t *name, uint32_t namesz, const char *want)
{
	size_t n = strlen(want);
	/* namesz counts the NUL; tolerate producers that leave it out. */
	return (namesz == n + 1 && memcmp(name, want, n + 1) == 0) || (namesz == n && memcmp(name, want, n) == 0);
}

static int parse_notes(const char *what, const uint8_t *img, const struct seg *s, unsigned idx, struct boot_elf *e)
{
	uint64_t align = s->align == 8 ? 8 : 4;
	const uint8_t *p = img + s->offset;
	uint64_t off = 0, end = s->filesz;
	while (end - off >= 12) {
		uint32_t namesz = get_le32(p + off), descsz = get_le32(p + off + 4), type = get_le32(p + off + 8);
		off += 12;
		uint64_t name_pad = ((uint64_t)namesz + align - 1) & ~(align - 1);
		uint64_t desc_pad = ((uint64_t)descsz + align - 1) & ~(align - 1);
		if (name_pad > end - off || descsz > end - off - name_pad)
			return err_set(ENOEXEC, "%s: malformed ELF note in segment %u (name size %u, desc size %u, %llu bytes left)",
				       what, idx, namesz, descsz, (unsigned long long)(end - off));
		const uint8_t *name = p + off, *desc = p + off + name_pad;
		off += name_pad;
		off += desc_pad < end - off ? desc_pad : end - off; /* last note's padding may be cut */
		if (name_is(name, namesz, "Linux")) {
			e->linux_note = true;
		} else if (name_is(name, namesz, "Xen") && type == XEN_ELFNOTE_PHYS32_ENTRY) {
			uint64_t entry;
			if (descsz == 4)
				entry = get_le32(desc);
			else if (descsz == 8)
				entry = get_le64(desc);
			else
				return err_set(ENOEXEC, "%s: PVH entry note has bad size %u", what, descsz);
			if (entry >= (1ULL << 32))
				return err_set(ENOEXEC, "%s: PVH entry 0x%llx is not a 32-bit address", what,
					       (unsigned long long)entry);
			e->pvh_note = true;
			e->pvh_entry = (uint32_t)entry;
		}
	}
	return 0;
}

int boot_elf_parse(const char *what, const uint8_t *img, size_t size, const struct guest_mem *mem, struct boot_elf *e)
{
	struct ehdr h;
	int ret = read_ehdr(what, img, size, &h);
	if (ret < 0)
		return ret;
	memset(e, 0, sizeof(*e));
	e->is64 = h.is64;
	e->entry = h.entry;
	e->lo = UINT64_MAX;
	for (unsigned i = 0; i < h.phnum; i++) {
		struct seg s = get_seg(img, &h, i);
		if (s.type == PT_NOTE) {
			if (!in_file(&s, size))
				return err_set(ENOEXEC, "%s: ELF note segment %u extends beyond the end of the file", what, i);
			if ((ret = parse_notes(what, img, &s, i, e)) < 0)
				return ret;
			continue;
		}
		if (s.type != PT_LOAD || s.memsz == 0)
			continue;
		if (s.filesz > s.memsz)
			return err_set(ENOEXEC, "%s: ELF segment %u has p_filesz %llu > p_memsz %llu", what, i,
				       (unsigned long long)s.filesz, (unsigned long long)s.memsz);
		if (!in_file(&s, size))
			return err_set(ENOEXEC, "%s: ELF segment %u (offset %llu, %llu bytes) extends beyond the end of the file (%zu bytes)",
				       what, i, (unsigned long long)s.offset, (unsigned long long)s.filesz, size);
		if (s.paddr < BOOT_LOW_END)
			return err_set(ENOEXEC, "%s: ELF segment %u at 0x%llx overlaps the loader's area below 1 MiB",
				       what, i, (unsigned long long)s.paddr);
		/* Below 4 GiB: PVH runs without paging, the Linux entry maps only 4 GiB. */
		if (s.paddr >= MEM_HOLE_END || s.memsz > MEM_HOLE_END - s.paddr || !gpa_to_hva(mem, s.paddr, s.memsz))
			return err_set(ENOEXEC, "%s: ELF segment %u [0x%llx, +0x%llx) is outside guest RAM (%llu MiB)", what, i,
				       (unsigned long long)s.paddr, (unsigned long long)s.memsz,
				       (unsigned long long)(mem->ram_size >> 20));
		e->nload++;
		if (s.paddr < e->lo)
			e->lo = s.paddr;
		if (s.paddr + s.memsz > e->hi)
			e->hi = s.paddr + s.memsz;
	}
	if (!e->nload)
		return err_set(ENOEXEC, "%s: ELF has no loadable segments", what);
	return 0;
}

int boot_elf_load(const char *what, const uint8_t *img, size_t size, struct guest_mem *mem, const struct boot_elf *e)
{
	struct ehdr h;
	int ret = read_ehdr(what, img, size, &h);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < h.phnum; i++) {
		struct seg s = get_seg(img, &h, i);
		if (s.type != PT_LOAD || s.memsz == 0)
			continue;
		/* Re-checked so this function is safe on its own, not only after parse. */
		uint8_t *dst = s.filesz <= s.memsz && in_file(&s, size) ? gpa_to_hva(mem, s.paddr, s.memsz) : NULL;
		if (!dst || s.paddr < BOOT_LOW_END)
			return err_set(ENOEXEC, "%s: ELF segment %u cannot be loaded", what, i);
		memcpy(dst, img + s.offset, s.filesz);
		memset(dst + s.filesz, 0, s.memsz - s.filesz);
	}
	return 0;
}

int boot_elf_linux_entry(const char *what, const uint8_t *img, size_t size, const struct boot_elf *e, uint64_t *rip)
{
	struct ehdr h;
	int ret = read_ehdr(what, img, size, &h);
	if (ret < 0)
		return ret;
	/* x86-64 vmlinux: e_entry is already physical (phys_startup_64). */
	for (unsigned i = 0; i < h.phnum; i++) {
		struct seg s = get_seg(img, &h, i);
		if (s.type == PT_LOAD && s.memsz && e->entry >= s.paddr && e->entry - s.paddr < s.memsz) {
			*rip = e->entry;
			return 0;
		}
	}
	/* Otherwise a virtual entry: translate through the segment that holds it. */
	for (unsigned i = 0; i < h.phnum; i++) {
		struct seg s = get_seg(img, &h, i);
		if (s.type == PT_LOAD && s.memsz && e->entry >= s.vaddr && e->entry - s.vaddr < s.memsz) {
			*rip = e->entry - s.vaddr + s.paddr;
			return 0;
		}
	}
	return err_set(ENOEXEC, "%s: ELF entry point 0x%llx is not inside any loaded segment", what,
		       (unsigned long long)e->entry);
}

static bool entry_loaded(const uint8_t *img, size_t size, uint64_t entry)
{
	struct ehdr h;
	if (read_ehdr("", img, size, &h) < 0)
		return false;
	for (unsigned i = 0; i < h.phnum; i++) {
		struct seg s = get_seg(img, &h, i);
		if (s.type == PT_LOAD && s.memsz && entry >= s.paddr && entry - s.paddr < s.memsz)
			return true;
	}
	return false;
}

int boot_elf_kernel(struct guest_mem *mem, const struct boot_request *req, const uint8_t *img, size_t size,
		    struct boot_entry *out)
{
	const char *what = req->kernel_path;
	struct boot_elf e;
	int ret = boot_elf_parse(what, img, size, mem, &e);
	if (ret < 0)
		return ret;
	if (e.pvh_note && !e.linux_note) {
		if (!entry_loaded(img, size, e.pvh_entry))
			return err_set(ENOEXEC, "%s: PVH entry point 0x%x is not inside any loaded segment", what, e.pvh_entry);
		if ((ret = boot_elf_load(what, img, size, mem, &e)) < 0)
			return ret;
		if ((ret = boot_pvh_setup(mem, req, &e, out)) < 0)
			return ret;
		snprintf(out->kind, sizeof(out->kind), "ELF%d PVH guest (%llu KiB)", e.is64 ? 64 : 32,
			 (unsigned long long)((e.hi - e.lo) >> 10));
		return 0;
	}
	if (!e.is64)
		return err_set(ENOEXEC, "%s: 32-bit ELF without a PVH entry note cannot be booted", what);
	struct linux_boot lb = {
		.kernel_end = e.hi,
		.initrd_max = 0x37ffffffULL + 1, /* the conservative default initrd_addr_max */
		.cmdline_max = BOOT_CMDLINE_MAX - 1,
	};
	if ((ret = boot_elf_linux_entry(what, img, size, &e, &lb.rip)) < 0)
		return ret;
	if ((ret = boot_elf_load(what, img, size, mem, &e)) < 0)
		return ret;
	if ((ret = boot_linux_setup(mem, req, &lb, out)) < 0)
		return ret;
	snprintf(out->kind, sizeof(out->kind), "ELF vmlinux%s, 64-bit entry (%llu KiB)",
		 e.linux_note ? "" : " (no Linux note)", (unsigned long long)((e.hi - e.lo) >> 10));
	return 0;
}
