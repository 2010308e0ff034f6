/* Fixtures for the kernel-loader tests: a fake guest RAM, a temp directory, and
 * builders for synthetic ELF kernels and bzImages (all made at test time; no
 * binary fixtures in the tree). Header-only: included by test_boot*.c. */
#ifndef TEST_BOOT_FIXTURES_H
#define TEST_BOOT_FIXTURES_H
#include <elf.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "vmm/boot_internal.h"
#include <vmsvc/err.h>

/* ---- guest RAM: mem_layout() + lazily allocated anonymous mappings ---- */
static inline struct guest_mem *guest_new(uint64_t ram)
{
	struct guest_mem *m = calloc(1, sizeof(*m));
	m->fd = -1;
	mem_layout(m, ram);
	for (unsigned i = 0; i < m->nregions; i++) {
		void *p = mmap(NULL, m->region[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (p == MAP_FAILED)
			abort();
		m->region[i].hva = p;
	}
	return m;
}

static inline void guest_free(struct guest_mem *m)
{
	for (unsigned i = 0; i < m->nregions; i++)
		munmap(m->region[i].hva, m->region[i].size);
	free(m);
}

static inline uint8_t *gp(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *p = gpa_to_hva(m, gpa, len);
	if (!p)
		abort();
	return p;
}

/* ---- temp dir with fixture files ---- */
static char tmpdir[64];

static inline void tmp_setup(void)
{
	if (tmpdir[0])
		return;
	strcpy(tmpdir, "/tmp/vmsvc-boot-XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
}

static inline int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

/* Paths handed out by tmp_file(), freed by tmp_cleanup(). */
static char *tmp_paths[256];
static unsigned tmp_npaths;

static inline void tmp_cleanup(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = 0;
	for (unsigned i = 0; i < tmp_npaths; i++)
		free(tmp_paths[i]);
	tmp_npaths = 0;
}

/* Write data to tmpdir/name; the path stays valid until tmp_cleanup(). */
static inline const char *tmp_file(const char *name, const void *data, size_t len)
{
	tmp_setup();
	char *path = malloc(strlen(tmpdir) + strlen(name) + 2);
	sprintf(path, "%s/%s", tmpdir, name);
	if (tmp_npaths >= sizeof(tmp_paths) / sizeof(tmp_paths[0]))
		abort();
	tmp_paths[tmp_npaths++] = path;
	FILE *f = fopen(path, "wb");
	if (!f || (len && fwrite(data, 1, len, f) != len))
		abort();
	fclose(f);
	return path;
}

/* ---- growable byte buffer ---- */
struct buf {
	uint8_t *p;
	size_t len;
};

static inline void buf_put_at(struct buf *b, size_t off, const void *d, size_t n)
{
	if (off + n > b->len) {
		b->p = realloc(b->p, off + n);
		memset(b->p + b->len, 0, off + n - b->len);
		b->len = off + n;
	}
	memcpy(b->p + off, d, n);
}

/* ---- ELF builder ---- */
struct elf_seg_opt {
	uint64_t paddr, vaddr, filesz, memsz;
	uint8_t fill;         /* file bytes are fill, fill+1, ... */
	uint64_t offset;      /* 0 = automatic */
};

struct elf_opt {
	bool elf32;
	uint64_t entry;
	unsigned nsegs;
	struct elf_seg_opt seg[4];
	bool linux_note;
	bool pvh_note;
	uint64_t pvh_entry;
	uint32_t pvh_descsz;  /* 0 = 8 for ELF64, 4 for ELF32 */
	uint32_t bad_namesz;  /* nonzero: corrupt the first note's namesz */
	uint16_t phnum_override;
};

static inline void note_put(struct buf *b, size_t *off, const char *name, uint32_t type, const void *desc, uint32_t descsz,
		     uint32_t namesz_override)
{
	uint32_t namesz = (uint32_t)strlen(name) + 1;
	uint32_t hdr[3] = { namesz_override ? namesz_override : namesz, descsz, type };
	buf_put_at(b, *off, hdr, 12);
	*off += 12;
	buf_put_at(b, *off, name, namesz);
	*off += (namesz + 3) & ~3u;
	buf_put_at(b, *off, desc, descsz);
	*off += (descsz + 3) & ~3u;
	if (*off > b->len) { /* keep padding inside the buffer */
		uint8_t z[4] = { 0 };
		buf_put_at(b, b->len, z, *off - b->len);
	}
}

static inline struct buf build_elf(const struct elf_opt *o)
{
	struct buf b = { 0 };
	size_t ehsize = o->elf32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
	size_t phsize = o->elf32 ? sizeof(Elf32_Phdr) : sizeof(Elf64_Phdr);
	bool notes = o->linux_note || o->pvh_note;
	unsigned phnum = o->nsegs + (notes ? 1 : 0);
	size_t off = ehsize + phnum * phsize;
	/* notes */
	size_t note_off = off, note_len = 0;
	if (notes) {
		size_t p = note_off;
		if (o->linux_note) {
			uint32_t salt = 0x12345678;
			note_put(&b, &p, "Linux", 0x100, &salt, 4, o->bad_namesz);
		}
		if (o->pvh_note) {
			uint32_t dsz = o->pvh_descsz ? o->pvh_descsz : (o->elf32 ? 4 : 8);
			uint8_t desc[16] = { 0 };
			uint64_t e = o->pvh_entry;
			memcpy(desc, &e, 8);
			note_put(&b, &p, "Xen", 18, desc, dsz, o->linux_note ? 0 : o->bad_namesz);
		}
		note_len = p - note_off;
		off = p;
	}
	/* segment data, each at a 4 KiB aligned file offset */
	uint64_t seg_off[4];
	for (unsigned i = 0; i < o->nsegs; i++) {
		off = (off + 0xfff) & ~(size_t)0xfff;
		seg_off[i] = o->seg[i].offset ? o->seg[i].offset : off;
		if (!o->seg[i].offset) {
			uint8_t *d = malloc(o->seg[i].filesz + 1);
			for (uint64_t k = 0; k < o->seg[i].filesz; k++)
				d[k] = (uint8_t)(o->seg[i].fill + k);
			buf_put_at(&b, off, d, o->seg[i].filesz);
			free(d);
			off += o->seg[i].filesz;
		}
	}
	if (b.len < ehsize + phnum * phsize) {
		uint8_t z = 0;
		buf_put_at(&b, ehsize + phnum * phsize - 1, &z, 1);
	}
	uint16_t phnum_hdr = o->phnum_override ? o->phnum_override : (uint16_t)phnum;
	if (o->elf32) {
		Elf32_Ehdr e = { .e_type = ET_EXEC, .e_machine = EM_386, .e_version = EV_CURRENT,
				 .e_entry = (uint32_t)o->entry, .e_phoff = (uint32_t)ehsize, .e_ehsize = (uint16_t)ehsize,
				 .e_phentsize = (uint16_t)phsize, .e_phnum = phnum_hdr };
		memcpy(e.e_ident, ELFMAG, SELFMAG);
		e.e_ident[EI_CLASS] = ELFCLASS32;
		e.e_ident[EI_DATA] = ELFDATA2LSB;
		e.e_ident[EI_VERSION] = EV_CURRENT;
		buf_put_at(&b, 0, &e, sizeof(e));
	} else {
		Elf64_Ehdr e = { .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT, .e_entry = o->entry,
				 .e_phoff = ehsize, .e_ehsize = (uint16_t)ehsize, .e_phentsize = (uint16_t)phsize,
				 .e_phnum = phnum_hdr };
		memcpy(e.e_ident, ELFMAG, SELFMAG);
		e.e_ident[EI_CLASS] = ELFCLASS64;
		e.e_ident[EI_DATA] = ELFDATA2LSB;
		e.e_ident[EI_VERSION] = EV_CURRENT;
		buf_put_at(&b, 0, &e, sizeof(e));
	}
	size_t ph = ehsize;
	for (unsigned i = 0; i < phnum; i++, ph += phsize) {
		bool is_note = notes && i == o->nsegs;
		uint64_t type = is_note ? PT_NOTE : PT_LOAD;
		uint64_t offs = is_note ? note_off : seg_off[i];
		uint64_t fsz = is_note ? note_len : o->seg[i].filesz, msz = is_note ? 0 : o->seg[i].memsz;
		uint64_t pa = is_note ? 0 : o->seg[i].paddr, va = is_note ? 0 : o->seg[i].vaddr;
		if (o->elf32) {
			Elf32_Phdr p = { (uint32_t)type, (uint32_t)offs, (uint32_t)va, (uint32_t)pa, (uint32_t)fsz,
					 (uint32_t)msz, PF_R | PF_X, is_note ? 4 : 0x1000 };
			buf_put_at(&b, ph, &p, sizeof(p));
		} else {
			Elf64_Phdr p = { (uint32_t)type, PF_R | PF_X, offs, va, pa, fsz, msz, is_note ? 4 : 0x1000 };
			buf_put_at(&b, ph, &p, sizeof(p));
		}
	}
	return b;
}

/* A Linux-like vmlinux: text at 16 MiB physical / 0xffffffff81000000 virtual,
 * physical e_entry, bss, Linux + PVH notes. */
static inline struct elf_opt linux_elf_opt(void)
{
	struct elf_opt o = { .entry = 0x1000000, .nsegs = 2, .linux_note = true, .pvh_note = true,
			     .pvh_entry = 0x1000100 };
	o.seg[0] = (struct elf_seg_opt){ .paddr = 0x1000000, .vaddr = 0xffffffff81000000ULL, .filesz = 0x3000,
					 .memsz = 0x3000, .fill = 0x10 };
	o.seg[1] = (struct elf_seg_opt){ .paddr = 0x1200000, .vaddr = 0xffffffff81200000ULL, .filesz = 0x800,
					 .memsz = 0x5000, .fill = 0x40 };
	return o;
}

/* ---- bzImage builder ---- */
struct bz_opt {
	uint16_t version;       /* default 0x020f */
	uint8_t setup_sects;    /* default 4 */
	uint8_t setup_sects_field; /* nonzero: lie about setup_sects in the header */
	uint16_t xloadflags;
	uint32_t initrd_addr_max, cmdline_size, init_size, kernel_alignment;
	uint64_t pref_address;
	uint8_t relocatable;
	const uint8_t *payload;
	size_t payload_len;
	uint32_t payload_offset_override, payload_length_override;
	size_t truncate_to;     /* nonzero: cut the file */
};

#define BZ_PM_PREFIX 0x400  /* protected-mode bytes before the payload */
#define BZ_PM_MARKER 0xc3   /* first byte of the protected-mode code */

static inline struct buf build_bzimage(const struct bz_opt *o)
{
	struct buf b = { 0 };
	unsigned sects = o->setup_sects ? o->setup_sects : 4;
	size_t setup = (sects + 1) * 512u;
	uint8_t *s = calloc(1, setup);
	s[HDR_SETUP_SECTS] = o->setup_sects_field ? o->setup_sects_field : o->setup_sects;
	put_le16(s + HDR_BOOT_FLAG, 0xaa55);
	s[HDR_JUMP] = 0xeb;
	s[HDR_JUMP + 1] = 0x6a; /* header ends at 0x26c */
	memcpy(s + HDR_HEADER, "HdrS", 4);
	put_le16(s + HDR_VERSION, o->version ? o->version : 0x020f);
	put_le16(s + HDR_KERNEL_VERSION, 0x100);
	strcpy((char *)s + 0x300, "6.1.0-test (builder@host) #1 SMP");
	s[HDR_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
	put_le32(s + HDR_INITRD_ADDR_MAX, o->initrd_addr_max ? o->initrd_addr_max : 0x7fffffff);
	put_le32(s + HDR_KERNEL_ALIGNMENT, o->kernel_alignment ? o->kernel_alignment : 0x200000);
	s[HDR_RELOCATABLE] = o->relocatable;
	put_le16(s + HDR_XLOADFLAGS, o->xloadflags);
	put_le32(s + HDR_CMDLINE_SIZE, o->cmdline_size ? o->cmdline_size : 2047);
	put_le32(s + HDR_PAYLOAD_OFFSET, o->payload_offset_override ? o->payload_offset_override : BZ_PM_PREFIX);
	put_le32(s + HDR_PAYLOAD_LENGTH, o->payload_length_override ? o->payload_length_override
								    : (uint32_t)(o->payload_len + 4));
	put_le64(s + HDR_PREF_ADDRESS, o->pref_address ? o->pref_address : 0x1000000);
	put_le32(s + HDR_INIT_SIZE, o->init_size ? o->init_size : 0x400000);
	buf_put_at(&b, 0, s, setup);
	free(s);
	uint8_t prefix[BZ_PM_PREFIX];
	memset(prefix, 0x90, sizeof(prefix));
	prefix[0] = BZ_PM_MARKER;
	prefix[0x200] = 0xe8; /* marks the 64-bit entry at +0x200 */
	buf_put_at(&b, setup, prefix, sizeof(prefix));
	buf_put_at(&b, setup + BZ_PM_PREFIX, o->payload, o->payload_len);
	uint32_t trailer = 0x00abcdef; /* stands for the kernel's decompressed-size trailer */
	buf_put_at(&b, setup + BZ_PM_PREFIX + o->payload_len, &trailer, 4);
	if (o->truncate_to && o->truncate_to < b.len)
		b.len = o->truncate_to;
	return b;
}

/* Assert a failed load named the file in a one-line message. */
#define assert_err_names(ret, path)                                                   \
	do {                                                                          \
		assert_true((ret) < 0);                                               \
		assert_true(err_msg()[0] != 0);                                       \
		assert_non_null(strstr(err_msg(), (path)));                           \
		assert_null(strchr(err_msg(), '\n'));                                 \
	} while (0)

#endif
