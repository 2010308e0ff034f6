/* Introspection engine on synthetic inputs (no fixtures needed): ELF core
 * parsing, the callback page walk (4/5 levels, large pages), kallsyms recovery
 * in both table orders incl. corrupted copies, BTF member paths, list walks
 * with cycles. The real-kernel tests are in test_vmi_fixtures.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#ifdef HAVE_LIBBPF
#include <bpf/btf.h>
#endif

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ---- ELF core ---- */

static size_t note(uint8_t *p, const char *name, uint32_t type, const void *desc, uint32_t descsz)
{
	uint32_t namesz = (uint32_t)strlen(name) + 1;
	put32(p, namesz);
	put32(p + 4, descsz);
	put32(p + 8, type);
	memcpy(p + 12, name, namesz);
	size_t d = 12 + ((namesz + 3) & ~3u);
	memcpy(p + d, desc, descsz);
	return d + ((descsz + 3) & ~3u);
}

/* ELF64 core: NOTE, LOAD pa 0x1000 (8 KiB of 0xaa), LOAD pa 0x3000 (4 KiB of 0xbb). */
static size_t make_core(uint8_t *img, size_t cap)
{
	memset(img, 0, cap);
	memcpy(img, "\177ELF", 4);
	img[4] = 2;
	img[5] = 1;
	img[6] = 1;
	put16(img + 16, 4);   /* ET_CORE */
	put16(img + 18, 62);  /* EM_X86_64 */
	put64(img + 0x20, 64);
	put16(img + 0x36, 56);
	put16(img + 0x38, 3);
	size_t notes = 64 + 3 * 56, n = 0;
	uint8_t q[440] = { 0 };
	put32(q, 1);
	put32(q + 4, sizeof(q));
	put64(q + 392, 0x80050033);     /* cr0 */
	put64(q + 392 + 24, 0x1234000); /* cr3 */
	put64(q + 392 + 32, 0x10a0);    /* cr4: PAE | LA57 */
	n += note(img + notes + n, "CORE", 1, q, 64);
	n += note(img + notes + n, "QEMU", 0, q, sizeof(q));
	const char *vi = "OSRELEASE=6.1.0-test\nKERNELOFFSET=1c400000\n";
	n += note(img + notes + n, "VMCOREINFO", 0, vi, (uint32_t)strlen(vi));
	size_t data = (notes + n + 4095) & ~4095ul;
	uint8_t *ph = img + 64;
	put32(ph, 4);
	put64(ph + 8, notes);
	put64(ph + 32, n);
	put64(ph + 40, n);
	ph += 56;
	put32(ph, 1);
	put64(ph + 8, data);
	put64(ph + 24, 0x1000);
	put64(ph + 32, 0x2000);
	put64(ph + 40, 0x2000);
	memset(img + data, 0xaa, 0x2000);
	ph += 56;
	put32(ph, 1);
	put64(ph + 8, data + 0x2000);
	put64(ph + 24, 0x3000);
	put64(ph + 32, 0x1000);
	put64(ph + 40, 0x1000);
	memset(img + data + 0x2000, 0xbb, 0x1000);
	assert_true(data + 0x3000 <= cap);
	return data + 0x3000;
}

static void test_elfcore(void **state)
{
	size_t cap = 64 << 10;
	uint8_t *img = malloc(cap);
	size_t len = make_core(img, cap);
	struct vmi_mem m;
	assert_int_equal(vmi_mem_from_elfcore(&m, img, len), 0);
	assert_int_equal(m.nranges, 2);
	assert_int_equal(m.ncpus, 1);
	assert_int_equal(m.cpu[0].cr3, 0x1234000);
	assert_true(m.cpu[0].cr4 & (1 << 12));
	assert_non_null(m.vmcoreinfo);
	assert_non_null(strstr(m.vmcoreinfo, "KERNELOFFSET=1c400000"));
	uint8_t b[4];
	assert_int_equal(vmi_read_phys(&m, 0x2ffe, b, 4), 0); /* crosses into the second range */
	assert_int_equal(b[1], 0xaa);
	assert_int_equal(b[2], 0xbb);
	assert_int_equal(vmi_read_phys(&m, 0x3ffe, b, 4), -EFAULT);
	assert_int_equal(vmi_read_phys(&m, 0xfff, b, 1), -EFAULT);
	assert_null(vmi_phys_ptr(&m, 0x2ffe, 4));
	assert_non_null(vmi_phys_ptr(&m, 0x1000, 0x2000));
	vmi_mem_close(&m);

	/* Hostile headers: every one must fail cleanly. */
	uint8_t *bad = malloc(len);
	memcpy(bad, img, len);
	put16(bad + 0x38, 60000); /* phnum beyond the file */
	assert_int_equal(vmi_mem_from_elfcore(&m, bad, len), -EINVAL);
	memcpy(bad, img, len);
	put64(bad + 64 + 56 + 32, len); /* LOAD filesz beyond the file */
	assert_int_equal(vmi_mem_from_elfcore(&m, bad, len), -EINVAL);
	memcpy(bad, img, len);
	put64(bad + 64 + 2 * 56 + 24, 0x2000); /* overlapping ranges */
	assert_int_equal(vmi_mem_from_elfcore(&m, bad, len), -EINVAL);
	memcpy(bad, img, len);
	put32(bad + 64 + 3 * 56 + 4, 0xfffffff0); /* note descsz runs off: notes ignored */
	assert_int_equal(vmi_mem_from_elfcore(&m, bad, len), 0);
	assert_int_equal(m.ncpus, 0);
	vmi_mem_close(&m);
	assert_int_equal(vmi_mem_from_elfcore(&m, img, 40), -EINVAL);
	free(bad);
	free(img);
}

/* A live VM's RAM (two regions around the PCI hole) through the same interface. */
static void test_guest_mem(void **state)
{
	static uint8_t lo[8192], hi[4096];
	struct guest_mem g = { .nregions = 2 };
	g.region[0] = (struct mem_region){ .gpa = 0, .size = sizeof(lo), .hva = lo };
	g.region[1] = (struct mem_region){ .gpa = MEM_HOLE_END, .size = sizeof(hi), .hva = hi };
	lo[100] = 7;
	hi[5] = 9;
	struct vmi_mem m;
	assert_int_equal(vmi_mem_from_guest(&m, &g), 0);
	assert_int_equal(m.nranges, 2);
	uint8_t b;
	assert_int_equal(vmi_read_phys(&m, 100, &b, 1), 0);
	assert_int_equal(b, 7);
	assert_int_equal(vmi_read_phys(&m, MEM_HOLE_END + 5, &b, 1), 0);
	assert_int_equal(b, 9);
	assert_int_equal(vmi_read_phys(&m, sizeof(lo), &b, 1), -EFAULT); /* the hole */
	vmi_mem_close(&m); /* owns nothing: must not free the VM's memory */
	assert_int_equal(lo[100], 7);
}

/* ---- page walk over a flat image ---- */

#define PT_P 1ULL
#define PT_W 2ULL
#define PT_PS 0x80ULL

static void test_pagewalk_fn(void **state)
{
	size_t len = 16 << 20;
	uint8_t *ram = calloc(1, len);
	struct vmi_mem m;
	assert_int_equal(vmi_mem_from_flat(&m, ram, len, 0), 0);
	/* 5-level: PML5 0x1000 -> PML4 0x2000 -> PDPT 0x3000 -> PD 0x4000 -> PT 0x5000 */
	uint64_t va = 0xff11000000000000ULL; /* 5-level direct map base */
	unsigned i5 = (va >> 48) & 511, i4 = (va >> 39) & 511, i3 = (va >> 30) & 511;
	put64(ram + 0x1000 + 8 * i5, 0x2000 | PT_P | PT_W);
	put64(ram + 0x2000 + 8 * i4, 0x3000 | PT_P | PT_W);
	put64(ram + 0x3000 + 8 * i3, 0x4000 | PT_P | PT_W);
	put64(ram + 0x3000 + 8 * (i3 + 1), 0x40000000ULL | PT_P | PT_PS); /* 1 GiB page */
	put64(ram + 0x4000, 0x5000 | PT_P);                                /* read-only PT */
	put64(ram + 0x4000 + 8, 0x600000 | PT_P | PT_W | PT_PS);          /* 2 MiB page */
	put64(ram + 0x5000 + 8 * 3, 0x9000 | PT_P | PT_W);
	memcpy(ram + 0x9000 + 0x10, "hello", 6);
	struct pw_regs r = { .cr0 = 0x80000001, .cr3 = 0x1000, .cr4 = 0x20 | (1 << 12), .efer = 0x500 };
	uint64_t pa, ps;
	bool w;
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va + 0x3010, &pa, &w, &ps), 0);
	assert_int_equal(pa, 0x9010);
	assert_int_equal(ps, 4096);
	assert_false(w);
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va + 0x200000 + 0x1234, &pa, &w, &ps), 0);
	assert_int_equal(pa, 0x601234);
	assert_int_equal(ps, 0x200000);
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va + (1ULL << 30) + 0x123456, &pa, NULL, &ps), 0);
	assert_int_equal(pa, 0x40123456);
	assert_int_equal(ps, 1ULL << 30);
	char s[6];
	assert_int_equal(pw_read_fn(vmi_pw_read, &m, &r, va + 0x3010, s, 6), 0);
	assert_string_equal(s, "hello");
	assert_int_equal(pw_read_fn(vmi_pw_read, &m, &r, va + 0x3ffe, s, 4), -EFAULT); /* next page unmapped */
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va + 0x400000, &pa, NULL, NULL), -EFAULT);
	/* The same tables read as 4-level start at the PML4 instead. */
	struct pw_regs r4 = { .cr0 = 0x80000001, .cr3 = 0x2000, .cr4 = 0x20, .efer = 0x500 };
	uint64_t va4 = va & ((1ULL << 47) - 1); /* PML4 slot 0: the canonical lower half */
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r4, va4 + 0x3010, &pa, NULL, NULL), 0);
	assert_int_equal(pa, 0x9010);
	/* Non-canonical addresses fault: 4-level needs bits 63..47 equal. */
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r4, va4 ^ (1ULL << 50), &pa, NULL, NULL), -EFAULT);
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va ^ (1ULL << 60), &pa, NULL, NULL), -EFAULT);
	/* A table pointer outside RAM faults instead of reading out of bounds. */
	put64(ram + 0x4000 + 16, 0x7fff000000ULL | PT_P);
	assert_int_equal(pw_translate_fn(vmi_pw_read, &m, &r, va + 0x400000, &pa, NULL, NULL), -EFAULT);
	vmi_mem_close(&m);
	free(ram);
}

/* ---- kallsyms ---- */

struct blob {
	uint8_t *p;
	size_t n;
};
static void emit(struct blob *b, const void *d, size_t n)
{
	memcpy(b->p + b->n, d, n);
	b->n += n;
}
static void align(struct blob *b)
{
	while (b->n & 7)
		b->p[b->n++] = 0;
}

#define SYN_BASE 0xffffffff81000000ULL
#define SYN_N 700

static void syn_name(unsigned i, char *out)
{
	if (i == 0)
		strcpy(out, "Afixed_percpu_data");
	else if (i == 1)
		strcpy(out, "Dcurrent_task");
	else if (i == 5) { /* a "big" symbol: > 127 bytes needs the 2-byte length */
		memset(out, 'x', 300);
		out[0] = 'T';
		out[300] = 0;
	} else
		sprintf(out, "%cfunc_%05u", i & 1 ? 't' : 'T', i);
}
static uint64_t syn_addr(unsigned i)
{
	return i == 0 ? 0 : i == 1 ? 0x1fb80 : SYN_BASE + 0x1000 + 16ULL * i;
}

static void emit_names(struct blob *b, uint32_t *markers)
{
	size_t start = b->n;
	for (unsigned i = 0; i < SYN_N; i++) {
		char name[400];
		syn_name(i, name);
		if (!(i & 255))
			markers[i >> 8] = (uint32_t)(b->n - start);
		size_t len = strlen(name); /* identity tokens: encoded == plain */
		if (len > 127) {
			uint8_t l2[2] = { (uint8_t)(0x80 | (len & 0x7f)), (uint8_t)(len >> 7) };
			emit(b, l2, 2);
		} else {
			uint8_t l = (uint8_t)len;
			emit(b, &l, 1);
		}
		emit(b, name, len);
	}
}

static void emit_tokens(struct blob *b)
{
	uint16_t idx[256];
	size_t start = b->n;
	for (unsigned i = 0; i < 256; i++) {
		idx[i] = (uint16_t)(b->n - start);
		if (i == 0)
			emit(b, "zz", 3);
		else {
			uint8_t t[2] = { (uint8_t)i, 0 };
			emit(b, t, 2);
		}
	}
	align(b);
	emit(b, idx, sizeof(idx));
	align(b);
}

static void emit_offsets(struct blob *b)
{
	for (unsigned i = 0; i < SYN_N; i++) {
		uint64_t a = syn_addr(i);
		int32_t off = a < SYN_BASE ? (int32_t)a : (int32_t)(-1 - (int64_t)(a - SYN_BASE));
		emit(b, &off, 4);
	}
	align(b);
	uint64_t base = SYN_BASE;
	emit(b, &base, 8);
}

/* Tables in the given layout after 4 KiB of filler, in a zeroed buffer. */
static size_t make_kallsyms(uint8_t *buf, enum vmi_ks_layout layout)
{
	struct blob b = { buf, 4096 };
	for (size_t i = 0; i < 4096; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	uint32_t markers[(SYN_N + 255) / 256], n = SYN_N, zero = 0;
	if (layout != VMI_KS_NEW)
		emit_offsets(&b);
	emit(&b, &n, 4);
	emit(&b, &zero, 4);
	emit_names(&b, markers);
	align(&b);
	emit(&b, markers, sizeof(markers));
	align(&b);
	if (layout == VMI_KS_OLD_SEQS) {
		memset(b.p + b.n, 0x11, 3 * SYN_N);
		b.n += 3 * SYN_N;
		align(&b);
	}
	emit_tokens(&b);
	if (layout == VMI_KS_NEW) {
		emit_offsets(&b);
		memset(b.p + b.n, 0x11, 3 * SYN_N);
		b.n += 3 * SYN_N;
	}
	return b.n + 4096;
}

static void check_syms(const struct vmi_kallsyms *ks)
{
	assert_int_equal(ks->n, SYN_N);
	assert_int_equal(ks->relative_base, SYN_BASE);
	assert_true(ks->absolute_percpu);
	for (unsigned i = 0; i < SYN_N; i++) {
		char name[400];
		uint64_t a;
		syn_name(i, name);
		assert_int_equal(vmi_ksym_addr(ks, name + 1, &a), 0);
		assert_int_equal(a, syn_addr(i));
	}
	assert_int_equal(vmi_ksym_addr(ks, "no_such_symbol", &(uint64_t){ 0 }), -ENOENT);
	const struct vmi_sym *s = vmi_ksym_at(ks, syn_addr(10) + 5);
	assert_non_null(s);
	assert_string_equal(vmi_ksym_name(ks, s), "func_00010");
	assert_int_equal(s->type, 'T');
	for (size_t i = 1; i < ks->n; i++)
		assert_true(ks->sym[i - 1].addr <= ks->sym[i].addr);
}

static void test_kallsyms_layouts(void **state)
{
	static const enum vmi_ks_layout layouts[] = { VMI_KS_OLD, VMI_KS_OLD_SEQS, VMI_KS_NEW };
	size_t cap = 1 << 20;
	uint8_t *buf = calloc(1, cap);
	for (unsigned l = 0; l < 3; l++) {
		memset(buf, 0, cap);
		size_t len = make_kallsyms(buf, layouts[l]);
		struct vmi_kallsyms ks;
		assert_int_equal(vmi_kallsyms_from_buf(&ks, buf, len, 0x1000000), 0);
		assert_int_equal(ks.layout, layouts[l]);
		check_syms(&ks);
		vmi_kallsyms_free(&ks);
	}
	free(buf);
}

static void test_kallsyms_hostile(void **state)
{
	size_t cap = 1 << 20;
	uint8_t *buf = calloc(1, cap), *copy = malloc(cap);
	size_t len = make_kallsyms(buf, VMI_KS_OLD_SEQS);
	struct vmi_kallsyms ks;
	/* Nothing to find in zeros or in a buffer too short for the tables. */
	uint8_t zeros[4096] = { 0 };
	assert_int_equal(vmi_kallsyms_from_buf(&ks, zeros, sizeof(zeros), 0), -ENOENT);
	assert_int_equal(vmi_kallsyms_from_buf(&ks, buf, len - 4096 - 300, 0), -ENOENT);
	/* Random corruption anywhere in the tables: found-and-consistent or not
	 * found, never a crash or an out-of-bounds read (run under ASan). */
	srand(1);
	for (int iter = 0; iter < 400; iter++) {
		memcpy(copy, buf, len);
		for (int k = 0; k < 1 + iter % 8; k++)
			copy[4096 + (size_t)rand() % (len - 8192)] = (uint8_t)rand();
		int rc = vmi_kallsyms_from_buf(&ks, copy, len, 0);
		assert_true(rc == 0 || rc == -ENOENT || rc == -EINVAL);
		if (rc == 0) {
			assert_true(ks.n > 0 && ks.n <= SYN_N + 256);
			vmi_kallsyms_free(&ks);
		}
	}
	free(copy);
	free(buf);
}

/* ---- list walk ---- */

static int count_cb(uint64_t node, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static void test_list_walk(void **state)
{
	size_t len = 1 << 20;
	uint8_t *ram = calloc(1, len);
	struct vmi_mem m;
	assert_int_equal(vmi_mem_from_flat(&m, ram, len, 0), 0);
	struct vmi_kernel k = { .mem = &m, .text = VMI_KERNEL_MAP, .image_end = VMI_KERNEL_MAP + len };
#define NODE(i) (VMI_KERNEL_MAP + 0x1000 * (uint64_t)(i))
#define LINK(a, b) put64(ram + 0x1000 * (a), NODE(b))
	LINK(0, 1);
	LINK(1, 2);
	LINK(2, 3);
	LINK(3, 0);
	int seen = 0;
	bool broken;
	assert_int_equal(vmi_list_walk(&k, NODE(0), 100, count_cb, &seen, &broken), 3);
	assert_false(broken);
	assert_int_equal(seen, 3);
	LINK(3, 2); /* loop that never returns to the head */
	seen = 0;
	long r = vmi_list_walk(&k, NODE(0), 100000, count_cb, &seen, &broken);
	assert_true(broken);
	assert_true(r >= 3 && r < 20);
	LINK(3, 0);
	assert_int_equal(vmi_list_walk(&k, NODE(0), 2, count_cb, &seen, &broken), 2); /* cap */
	assert_true(broken);
	put64(ram + 0x2000, 0xdead0000ULL); /* unreadable pointer (no page tables) */
	assert_int_equal(vmi_list_walk(&k, NODE(0), 100, count_cb, &seen, &broken), 2);
	assert_true(broken);
	vmi_mem_close(&m);
	free(ram);
}

/* ---- BTF ---- */

static void test_btf_paths(void **state)
{
#ifdef HAVE_LIBBPF
	struct btf *b = btf__new_empty();
	assert_non_null(b);
	int i32 = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
	int inner = btf__add_struct(b, "inner", 8);
	btf__add_field(b, "a", i32, 0, 0);
	btf__add_field(b, "b", i32, 32, 0);
	int anon = btf__add_union(b, NULL, 8);
	btf__add_field(b, "y", i32, 0, 0);
	btf__add_field(b, "in", inner, 0, 0);
	int arr = btf__add_array(b, i32, inner, 4);
	int td = btf__add_typedef(b, "inner_t", arr);
	btf__add_struct(b, "outer", 56);
	btf__add_field(b, "x", i32, 0, 0);
	btf__add_field(b, NULL, anon, 32, 0);
	btf__add_field(b, "flag", i32, 97, 3);
	btf__add_field(b, "arr", td, 128, 0);
	uint32_t sz;
	const void *raw = btf__raw_data(b, &sz);
	struct vmi_btf *vb;
	assert_int_equal(vmi_btf_new(&vb, raw, sz), 0);
	btf__free(b);
	uint64_t off, bits, size;
	assert_int_equal(vmi_btf_offset(vb, "outer", "x", &off), 0);
	assert_int_equal(off, 0);
	assert_int_equal(vmi_btf_offset(vb, "outer", "y", &off), 0); /* through the anonymous union */
	assert_int_equal(off, 4);
	assert_int_equal(vmi_btf_offset(vb, "outer", "in.b", &off), 0);
	assert_int_equal(off, 8);
	assert_int_equal(vmi_btf_offset(vb, "outer", "arr[2].b", &off), 0); /* through a typedef'd array */
	assert_int_equal(off, 16 + 2 * 8 + 4);
	assert_int_equal(vmi_btf_member(vb, "outer", "flag", &bits, &size), 0);
	assert_int_equal(bits, 97);
	assert_int_equal(size, 3);
	assert_int_equal(vmi_btf_offset(vb, "outer", "flag", &off), -EINVAL);
	assert_int_equal(vmi_btf_offset(vb, "outer", "arr[4]", &off), -EINVAL);
	uint64_t n;
	assert_int_equal(vmi_btf_array_len(vb, "outer", "arr", &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(vmi_btf_sizeof(vb, "outer", &n), 0);
	assert_int_equal(n, 56);
	assert_int_equal(vmi_btf_offset(vb, "outer", "nope", &off), -ENOENT);
	assert_non_null(strstr(err_msg(), "outer"));
	assert_non_null(strstr(err_msg(), "nope"));
	assert_int_equal(vmi_btf_offset(vb, "missing_struct", "x", &off), -ENOENT);
	assert_non_null(strstr(err_msg(), "missing_struct"));
	vmi_btf_free(vb);
	/* Garbage is rejected, not parsed. */
	uint8_t junk[64] = { 0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f };
	assert_int_equal(vmi_btf_new(&vb, junk, sizeof(junk)), -EINVAL);
#else
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_elfcore),
		cmocka_unit_test(test_guest_mem),
		cmocka_unit_test(test_pagewalk_fn),
		cmocka_unit_test(test_kallsyms_layouts),
		cmocka_unit_test(test_kallsyms_hostile),
		cmocka_unit_test(test_list_walk),
		cmocka_unit_test(test_btf_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
