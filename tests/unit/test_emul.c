/* Unit tests for the emulation assist (src/vmm/emul*.c): hand-assembled
 * instruction bytes (encodings checked with as + objdump) run against a vCPU
 * state with a small fake guest memory mapped 1:1 at MEM_BASE. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vmsvc/emul.h>

#define MEM_BASE 0x10000ull
#define MEM_SIZE 0x4000u
#define RO_START (MEM_BASE + 0x3000) /* last page of the fake memory is read-only */
#define CODE_RIP 0x1000ull

#define RFLAGS_CF (1ull << 0)
#define RFLAGS_PF (1ull << 2)
#define RFLAGS_AF (1ull << 4)
#define RFLAGS_ZF (1ull << 6)
#define RFLAGS_SF (1ull << 7)
#define RFLAGS_OF (1ull << 11)
#define RFLAGS_RF (1ull << 16)
#define RFLAGS_AC (1ull << 18)

static uint8_t guest_mem[MEM_SIZE];
static unsigned n_reads, n_writes;

static int fake_read(void *opaque, uint64_t gva, void *dst, unsigned len)
{
	(void)opaque;
	if (gva < MEM_BASE || gva - MEM_BASE > MEM_SIZE || len > MEM_SIZE - (gva - MEM_BASE))
		return -EFAULT;
	memcpy(dst, guest_mem + (gva - MEM_BASE), len);
	n_reads++;
	return 0;
}

static int fake_write(void *opaque, uint64_t gva, const void *src, unsigned len)
{
	(void)opaque;
	if (gva < MEM_BASE || gva - MEM_BASE > MEM_SIZE || len > MEM_SIZE - (gva - MEM_BASE))
		return -EFAULT;
	if (gva + len > RO_START)
		return -EFAULT;
	memcpy(guest_mem + (gva - MEM_BASE), src, len);
	n_writes++;
	return 0;
}

static uint8_t *gm(uint64_t gva) { return guest_mem + (gva - MEM_BASE); }

static uint8_t *fxa(struct emul_cpu *c) { return (uint8_t *)c->xsave.region; }
static uint16_t fx16(struct emul_cpu *c, unsigned off) { uint16_t v; memcpy(&v, fxa(c) + off, 2); return v; }
static uint32_t fx32(struct emul_cpu *c, unsigned off) { uint32_t v; memcpy(&v, fxa(c) + off, 4); return v; }
static uint64_t fx64(struct emul_cpu *c, unsigned off) { uint64_t v; memcpy(&v, fxa(c) + off, 8); return v; }
static void set_fx16(struct emul_cpu *c, unsigned off, uint16_t v) { memcpy(fxa(c) + off, &v, 2); }
static void set_fx32(struct emul_cpu *c, unsigned off, uint32_t v) { memcpy(fxa(c) + off, &v, 4); }
static void set_fx64(struct emul_cpu *c, unsigned off, uint64_t v) { memcpy(fxa(c) + off, &v, 8); }
static uint8_t *xmm(struct emul_cpu *c, unsigned n) { return fxa(c) + 160 + 16 * n; }
static uint64_t xmm_lo(struct emul_cpu *c, unsigned n) { uint64_t v; memcpy(&v, xmm(c, n), 8); return v; }
static uint64_t xmm_hi(struct emul_cpu *c, unsigned n) { uint64_t v; memcpy(&v, xmm(c, n) + 8, 8); return v; }
static void set_xmm(struct emul_cpu *c, unsigned n, uint64_t lo, uint64_t hi)
{
	memcpy(xmm(c, n), &lo, 8);
	memcpy(xmm(c, n) + 8, &hi, 8);
}

/* A 64-bit long-mode CPL0 vCPU with SSE and XSAVE enabled. */
static struct emul_cpu *new_cpu(void)
{
	struct emul_cpu *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->sregs.efer = 0x500;             /* LME | LMA */
	c->sregs.cs.l = 1;
	c->sregs.cs.selector = 0x10;
	c->sregs.cr0 = 0x80050033;         /* PG AM WP NE ET MP PE */
	c->sregs.cr4 = 0x20 | 0x200 | 0x400 | 0x40000; /* PAE OSFXSR OSXMMEXCPT OSXSAVE */
	c->regs.rip = CODE_RIP;
	c->regs.rflags = 0x2;
	set_fx16(c, 0, 0x37f);
	set_fx32(c, 24, 0x1f80);
	c->xcrs.nr_xcrs = 1;
	c->xcrs.xcrs[0].xcr = 0;
	c->xcrs.xcrs[0].value = 7;         /* x87 SSE AVX */
	c->read = fake_read;
	c->write = fake_write;
	c->inject_vector = -1;
	c->inject_error_code = -1;
	memset(guest_mem, 0, sizeof(guest_mem));
	n_reads = n_writes = 0;
	return c;
}

/* Run bytes copied into a heap buffer of exactly len bytes, so that ASan flags
 * any read past the end. */
static int run(struct emul_cpu *c, const uint8_t *bytes, unsigned len, const char **name)
{
	uint8_t *b = malloc(len ? len : 1);
	assert_non_null(b);
	memcpy(b, bytes, len);
	int rc = emul_complete(c, b, len, name);
	free(b);
	return rc;
}

#define RUN(c, name, ...) ({ \
	static const uint8_t insn_[] = { __VA_ARGS__ }; \
	run((c), insn_, sizeof(insn_), (name)); })

/* Expect success with the given mnemonic and instruction length. */
#define EXPECT_OK(c, mnem, len, ...) do { \
	const char *name_; \
	uint64_t rip0_ = (c)->regs.rip; \
	assert_int_equal(RUN((c), &name_, __VA_ARGS__), 0); \
	assert_string_equal(name_, (mnem)); \
	assert_int_equal((c)->regs.rip, rip0_ + (len)); \
	assert_true((c)->regs_dirty); \
} while (0)

/* Expect a fault: vector injected, RIP and everything else unchanged. */
#define EXPECT_FAULT(c, vec, err, ...) do { \
	const char *name_; \
	struct emul_cpu *before_ = malloc(sizeof(*before_)); \
	assert_non_null(before_); \
	memcpy(before_, (c), sizeof(*before_)); \
	assert_int_equal(RUN((c), &name_, __VA_ARGS__), 0); \
	assert_non_null(name_); \
	assert_int_equal((c)->inject_vector, (vec)); \
	assert_int_equal((c)->inject_error_code, (err)); \
	before_->inject_vector = (c)->inject_vector; \
	before_->inject_error_code = (c)->inject_error_code; \
	assert_memory_equal(before_, (c), sizeof(*before_)); \
	free(before_); \
} while (0)

/* Expect a negative errno and no state change (inject_* are reset to -1). */
#define EXPECT_ERR(c, err, ...) do { \
	const char *name_ = "x"; \
	struct emul_cpu *before_ = malloc(sizeof(*before_)); \
	assert_non_null(before_); \
	memcpy(before_, (c), sizeof(*before_)); \
	assert_int_equal(RUN((c), &name_, __VA_ARGS__), (err)); \
	assert_null(name_); \
	/* only the exception report is reset */ \
	assert_int_equal((c)->inject_vector, -1); \
	before_->inject_vector = -1; \
	before_->inject_error_code = (c)->inject_error_code; \
	assert_int_equal((c)->inject_error_code, -1); \
	assert_memory_equal(before_, (c), sizeof(*before_)); \
	free(before_); \
} while (0)

/* ---- addressing and lengths --------------------------------------------- */

static void test_ldmxcsr_rip_relative(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->regs.rip = MEM_BASE + 0x100;
	uint32_t v = 0x1fa0;
	memcpy(gm(MEM_BASE + 0x100 + 7 + 0x100), &v, 4); /* rip of next insn + disp */
	EXPECT_OK(c, "ldmxcsr", 7, 0x0f, 0xae, 0x15, 0x00, 0x01, 0x00, 0x00);
	assert_int_equal(fx32(c, 24), 0x1fa0);
	assert_true(c->xsave_dirty);
	assert_true(fx64(c, 512) & 2); /* SSE marked in use for KVM_SET_XSAVE */
	assert_int_equal(c->inject_vector, -1);
	free(c);
}

static void test_ldmxcsr_sib_forms(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	uint32_t v;

	/* ldmxcsr (%r12): REX.B + SIB with base r12 */
	c->regs.r12 = MEM_BASE + 0x20;
	v = 0x1f81; memcpy(gm(MEM_BASE + 0x20), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 5, 0x41, 0x0f, 0xae, 0x14, 0x24);
	assert_int_equal(fx32(c, 24), 0x1f81);

	/* ldmxcsr 0x0(%r13): r13 as base needs a disp8 */
	c->regs.r13 = MEM_BASE + 0x40;
	v = 0x1f82; memcpy(gm(MEM_BASE + 0x40), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 5, 0x41, 0x0f, 0xae, 0x55, 0x00);
	assert_int_equal(fx32(c, 24), 0x1f82);

	/* ldmxcsr -8(%rbp,%rax,4) */
	c->regs.rbp = MEM_BASE + 0x100;
	c->regs.rax = 0x10;
	v = 0x1f83; memcpy(gm(MEM_BASE + 0x100 + 0x40 - 8), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 5, 0x0f, 0xae, 0x54, 0x85, 0xf8);
	assert_int_equal(fx32(c, 24), 0x1f83);

	/* ldmxcsr 0x12345678(,%r12,2): no base, REX.X index, disp32 */
	c->regs.r12 = (MEM_BASE + 0x200 - 0x12345678ull) / 2;
	assert_int_equal(c->regs.r12 * 2 + 0x12345678ull, MEM_BASE + 0x200);
	v = 0x1f84; memcpy(gm(MEM_BASE + 0x200), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 9, 0x42, 0x0f, 0xae, 0x14, 0x65, 0x78, 0x56, 0x34, 0x12);
	assert_int_equal(fx32(c, 24), 0x1f84);

	/* ldmxcsr (%eax): the 67 prefix truncates the address to 32 bits */
	c->regs.rax = 0xffffffff00000000ull | (MEM_BASE + 0x300);
	v = 0x1f85; memcpy(gm(MEM_BASE + 0x300), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 4, 0x67, 0x0f, 0xae, 0x10);
	assert_int_equal(fx32(c, 24), 0x1f85);

	/* REX followed by a legacy prefix is ignored: 41 66 is not REX.B */
	c->regs.rax = MEM_BASE + 0x310;
	c->regs.r8 = 0;
	v = 0x1f86; memcpy(gm(MEM_BASE + 0x310), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 5, 0x41, 0x3e, 0x0f, 0xae, 0x10);
	assert_int_equal(fx32(c, 24), 0x1f86);
	free(c);
}

static void test_segment_override_and_canonical(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->sregs.fs.base = MEM_BASE + 0x800;
	set_fx32(c, 24, 0x1f8f);
	/* stmxcsr %fs:0x200 */
	EXPECT_OK(c, "stmxcsr", 9, 0x64, 0x0f, 0xae, 0x1c, 0x25, 0x00, 0x02, 0x00, 0x00);
	uint32_t v;
	memcpy(&v, gm(MEM_BASE + 0xa00), 4);
	assert_int_equal(v, 0x1f8f);

	/* gs base applies with the 65 prefix; a ds prefix is ignored in 64-bit mode */
	c->sregs.gs.base = MEM_BASE + 0x1000;
	c->sregs.ds.base = 0x5000000;
	c->regs.rax = 0x10;
	EXPECT_OK(c, "stmxcsr", 4, 0x65, 0x0f, 0xae, 0x18);
	memcpy(&v, gm(MEM_BASE + 0x1010), 4);
	assert_int_equal(v, 0x1f8f);
	c->regs.rax = MEM_BASE + 0x20;
	EXPECT_OK(c, "stmxcsr", 4, 0x3e, 0x0f, 0xae, 0x18); /* ds base ignored */
	memcpy(&v, gm(MEM_BASE + 0x20), 4);
	assert_int_equal(v, 0x1f8f);

	/* non-canonical address -> #GP(0) */
	c->regs.rax = 0x0000800000000000ull;
	EXPECT_FAULT(c, 13, 0, 0x0f, 0xae, 0x18);
	free(c);
}

static void test_compat_mode(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->sregs.cs.l = 0;
	c->sregs.cs.db = 1;
	c->sregs.ds.base = MEM_BASE + 0x400;
	c->regs.rax = 0x20;
	c->regs.rip = 0xfffffffe; /* EIP wraps at 32 bits */
	uint32_t v = 0x1f90;
	memcpy(gm(MEM_BASE + 0x420), &v, 4);
	const char *name;
	assert_int_equal(RUN(c, &name, 0x0f, 0xae, 0x10), 0);
	assert_string_equal(name, "ldmxcsr");
	assert_int_equal(fx32(c, 24), 0x1f90);
	assert_int_equal(c->regs.rip, 1);
	/* (%ebp)+disp8 defaults to SS; disp32-only (mod 0, rm 5) is absolute, not RIP-relative */
	c->sregs.ss.base = MEM_BASE + 0x800;
	c->regs.rbp = 0x10;
	v = 0x1f91;
	memcpy(gm(MEM_BASE + 0x814), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 4, 0x0f, 0xae, 0x55, 0x04);
	assert_int_equal(fx32(c, 24), 0x1f91);
	v = 0x1f92;
	memcpy(gm(MEM_BASE + 0x400 + 0x30), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 7, 0x0f, 0xae, 0x15, 0x30, 0x00, 0x00, 0x00);
	assert_int_equal(fx32(c, 24), 0x1f92);
	/* an explicit %es: override */
	c->sregs.es.base = MEM_BASE + 0xc00;
	v = 0x1f93;
	memcpy(gm(MEM_BASE + 0xc20), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 4, 0x26, 0x0f, 0xae, 0x10);
	assert_int_equal(fx32(c, 24), 0x1f93);
	/* 40 is "inc eax" outside 64-bit mode, not a REX prefix */
	EXPECT_ERR(c, -ENOSYS, 0x40, 0x0f, 0xae, 0x10);
	free(c);
}

static void test_real_mode(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->sregs.efer = 0;
	c->sregs.cs.l = 0;
	c->sregs.cr0 = 0x10;
	c->sregs.cr4 = 0x200;
	c->regs.rip = 0xfffe;
	set_fx16(c, 0, 0);
	const char *name;
	assert_int_equal(RUN(c, &name, 0xdb, 0xe3), 0); /* fninit */
	assert_int_equal(c->regs.rip, 0);               /* IP wraps at 16 bits */
	assert_int_equal(fx16(c, 0), 0x37f);
	/* 16-bit addressing is not decoded */
	EXPECT_ERR(c, -ENOSYS, 0x0f, 0xae, 0x18);
	free(c);
}

/* ---- x87 / MXCSR control ------------------------------------------------- */

static void test_ldmxcsr_gp(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->regs.rax = MEM_BASE;
	uint32_t v = 0x1f80 | 0x40; /* DAZ: reserved with the default mask 0xffbf */
	memcpy(gm(MEM_BASE), &v, 4);
	EXPECT_FAULT(c, 13, 0, 0x0f, 0xae, 0x10);
	v = 0x10000;
	memcpy(gm(MEM_BASE), &v, 4);
	EXPECT_FAULT(c, 13, 0, 0x0f, 0xae, 0x10);
	/* with MXCSR_MASK = 0xffff, DAZ is allowed */
	set_fx32(c, 28, 0xffff);
	v = 0x1fc0;
	memcpy(gm(MEM_BASE), &v, 4);
	EXPECT_OK(c, "ldmxcsr", 3, 0x0f, 0xae, 0x10);
	assert_int_equal(fx32(c, 24), 0x1fc0);
	/* CR0.TS -> #NM, CR4.OSFXSR clear -> #UD */
	c->sregs.cr0 |= 8;
	EXPECT_FAULT(c, 7, -1, 0x0f, 0xae, 0x10);
	c->sregs.cr0 &= ~8ull;
	c->sregs.cr4 &= ~0x200ull;
	EXPECT_FAULT(c, 6, -1, 0x0f, 0xae, 0x10);
	free(c);
}

static void test_x87_control(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	set_fx16(c, 2, 0x3821);
	c->regs.rax = 0x1122334455667788ull;
	EXPECT_OK(c, "fnstsw", 2, 0xdf, 0xe0);
	assert_int_equal(c->regs.rax, 0x1122334455663821ull);

	c->regs.rbx = MEM_BASE + 0x10;
	EXPECT_OK(c, "fnstsw", 3, 0xdd, 0x7b, 0x08);
	assert_int_equal(gm(MEM_BASE + 0x18)[0], 0x21);
	assert_int_equal(gm(MEM_BASE + 0x18)[1], 0x38);
	assert_int_equal(gm(MEM_BASE + 0x1a)[0], 0); /* exactly 2 bytes */

	c->regs.rsp = MEM_BASE + 0x100;
	EXPECT_OK(c, "fnstcw", 4, 0xd9, 0x7c, 0x24, 0x08);
	assert_int_equal(gm(MEM_BASE + 0x108)[0], 0x7f);
	assert_int_equal(gm(MEM_BASE + 0x108)[1], 0x03);

	/* fldcw: bit 6 forced on, reserved bits off; unmasking the pending PE
	 * exception (fsw bit 5) sets ES and B */
	c->regs.rax = MEM_BASE + 0x200;
	gm(MEM_BASE + 0x200)[0] = 0x1f;
	gm(MEM_BASE + 0x200)[1] = 0xe2;
	EXPECT_OK(c, "fldcw", 2, 0xd9, 0x28);
	assert_int_equal(fx16(c, 0), 0x025f);
	assert_int_equal(fx16(c, 2) & 0x8080, 0x8080);
	assert_true(fx64(c, 512) & 1);

	EXPECT_OK(c, "fnclex", 2, 0xdb, 0xe2);
	assert_int_equal(fx16(c, 2), 0x3800); /* TOP and C3 kept */

	fxa(c)[4] = 0xff;
	EXPECT_OK(c, "emms", 2, 0x0f, 0x77);
	assert_int_equal(fxa(c)[4], 0);

	fxa(c)[4] = 0x0f;
	set_fx64(c, 8, 0x1234);
	EXPECT_OK(c, "fninit", 2, 0xdb, 0xe3);
	assert_int_equal(fx16(c, 0), 0x37f);
	assert_int_equal(fx16(c, 2), 0);
	assert_int_equal(fxa(c)[4], 0);
	assert_int_equal(fx64(c, 8), 0);

	EXPECT_OK(c, "fwait", 1, 0x9b);
	/* fwait with CR0.MP and TS -> #NM; x87 control with TS -> #NM */
	c->sregs.cr0 |= 8;
	EXPECT_FAULT(c, 7, -1, 0x9b);
	EXPECT_FAULT(c, 7, -1, 0xdb, 0xe3);
	free(c);
}

/* ---- SSE data ------------------------------------------------------------ */

static void test_sse_logic(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	set_xmm(c, 1, 0xff00ff00ff00ff00ull, 0x1111111111111111ull);
	set_xmm(c, 2, 0x0f0f0f0f0f0f0f0full, 0x1111111111111111ull);
	EXPECT_OK(c, "pxor", 4, 0x66, 0x0f, 0xef, 0xca);
	assert_int_equal(xmm_lo(c, 1), 0xf00ff00ff00ff00full);
	assert_int_equal(xmm_hi(c, 1), 0);
	assert_true(c->xsave_dirty);

	/* pxor 0x10(%r13), %xmm9 (aligned) */
	c->regs.r13 = MEM_BASE + 0x100;
	set_xmm(c, 9, 1, 2);
	uint64_t m[2] = { 3, 0x8000000000000000ull };
	memcpy(gm(MEM_BASE + 0x110), m, 16);
	EXPECT_OK(c, "pxor", 6, 0x66, 0x45, 0x0f, 0xef, 0x4d, 0x10);
	assert_int_equal(xmm_lo(c, 9), 2);
	assert_int_equal(xmm_hi(c, 9), 0x8000000000000002ull);

	/* misaligned m128 -> #GP(0) */
	c->regs.r13 = MEM_BASE + 0x108;
	EXPECT_FAULT(c, 13, 0, 0x66, 0x45, 0x0f, 0xef, 0x4d, 0x10);

	set_xmm(c, 0, 5, 6);
	EXPECT_OK(c, "xorps", 3, 0x0f, 0x57, 0xc0);
	assert_int_equal(xmm_lo(c, 0), 0);
	assert_int_equal(xmm_hi(c, 0), 0);
	set_xmm(c, 3, 1, 1);
	set_xmm(c, 4, 3, 0);
	EXPECT_OK(c, "xorpd", 4, 0x66, 0x0f, 0x57, 0xe3);
	assert_int_equal(xmm_lo(c, 4), 2);
	assert_int_equal(xmm_hi(c, 4), 1);

	/* pcmpeqb %xmm1, %xmm0 */
	set_xmm(c, 0, 0x0011223344556677ull, 0);
	set_xmm(c, 1, 0x0011003344006677ull, 1);
	EXPECT_OK(c, "pcmpeqb", 4, 0x66, 0x0f, 0x74, 0xc1);
	assert_int_equal(xmm_lo(c, 0), 0xffff00ffff00ffffull);
	assert_int_equal(xmm_hi(c, 0), 0xffffffffffffff00ull);
	/* pcmpeqd (%rax), %xmm0 */
	c->regs.rax = MEM_BASE + 0x200;
	set_xmm(c, 0, 0x0000000100000002ull, 0);
	uint64_t m2[2] = { 0x0000000100000003ull, 0 };
	memcpy(gm(MEM_BASE + 0x200), m2, 16);
	EXPECT_OK(c, "pcmpeqd", 4, 0x66, 0x0f, 0x76, 0x00);
	assert_int_equal(xmm_lo(c, 0), 0xffffffff00000000ull);
	assert_int_equal(xmm_hi(c, 0), ~0ull);

	/* LOCK on pxor -> #UD; CR0.TS -> #NM; MMX form (no 66) -> -ENOSYS */
	EXPECT_FAULT(c, 6, -1, 0xf0, 0x66, 0x0f, 0xef, 0xca);
	EXPECT_ERR(c, -ENOSYS, 0x0f, 0xef, 0xca);
	c->sregs.cr0 |= 8;
	EXPECT_FAULT(c, 7, -1, 0x66, 0x0f, 0xef, 0xca);
	free(c);
}

static void test_movd_movq(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	set_xmm(c, 3, 0x1122334455667788ull, 0x99);
	EXPECT_OK(c, "movq", 5, 0x66, 0x48, 0x0f, 0x7e, 0xd8); /* movq %xmm3, %rax */
	assert_int_equal(c->regs.rax, 0x1122334455667788ull);

	c->regs.r8 = 0xdeadbeefcafef00dull;
	set_xmm(c, 15, 7, 7);
	EXPECT_OK(c, "movq", 5, 0x66, 0x4d, 0x0f, 0x6e, 0xf8); /* movq %r8, %xmm15 */
	assert_int_equal(xmm_lo(c, 15), 0xdeadbeefcafef00dull);
	assert_int_equal(xmm_hi(c, 15), 0);

	set_xmm(c, 1, 0xaaaaaaaabbbbbbbbull, 0);
	c->regs.rax = ~0ull;
	EXPECT_OK(c, "movd", 4, 0x66, 0x0f, 0x7e, 0xc8); /* movd %xmm1, %eax: zero-extends */
	assert_int_equal(c->regs.rax, 0xbbbbbbbbull);

	/* movd (%rax), %xmm2 */
	c->regs.rax = MEM_BASE + 0x40;
	uint64_t m = 0x1234567887654321ull;
	memcpy(gm(MEM_BASE + 0x40), &m, 8);
	set_xmm(c, 2, ~0ull, ~0ull);
	EXPECT_OK(c, "movd", 4, 0x66, 0x0f, 0x6e, 0x10);
	assert_int_equal(xmm_lo(c, 2), 0x87654321ull);
	assert_int_equal(xmm_hi(c, 2), 0);

	/* movq (%rax), %xmm1 (F3 0F 7E): upper half zeroed */
	set_xmm(c, 1, 0, ~0ull);
	EXPECT_OK(c, "movq", 4, 0xf3, 0x0f, 0x7e, 0x08);
	assert_int_equal(xmm_lo(c, 1), m);
	assert_int_equal(xmm_hi(c, 1), 0);

	/* movq %xmm1, (%rax) (66 0F D6) writes exactly 8 bytes */
	c->regs.rax = MEM_BASE + 0x80;
	set_xmm(c, 1, 0x0102030405060708ull, 0xffff);
	EXPECT_OK(c, "movq", 4, 0x66, 0x0f, 0xd6, 0x08);
	uint64_t got;
	memcpy(&got, gm(MEM_BASE + 0x80), 8);
	assert_int_equal(got, 0x0102030405060708ull);
	assert_int_equal(gm(MEM_BASE + 0x88)[0], 0);
	/* register form: movq %xmm1, %xmm5 zeroes the upper half */
	set_xmm(c, 5, 9, 9);
	EXPECT_OK(c, "movq", 4, 0x66, 0x0f, 0xd6, 0xcd);
	assert_int_equal(xmm_lo(c, 5), 0x0102030405060708ull);
	assert_int_equal(xmm_hi(c, 5), 0);
	free(c);
}

static void test_mov128(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	uint64_t m[2] = { 0x1111, 0x2222 };

	/* movdqu 0x100(%rax,%rcx,8), %xmm0 at a misaligned address */
	c->regs.rax = MEM_BASE + 3;
	c->regs.rcx = 2;
	memcpy(gm(MEM_BASE + 3 + 0x110), m, 16);
	EXPECT_OK(c, "movdqu", 9, 0xf3, 0x0f, 0x6f, 0x84, 0xc8, 0x00, 0x01, 0x00, 0x00);
	assert_int_equal(xmm_lo(c, 0), 0x1111);
	assert_int_equal(xmm_hi(c, 0), 0x2222);

	/* movaps %xmm2, (%rdx) */
	c->regs.rdx = MEM_BASE + 0x200;
	set_xmm(c, 2, 0xaa, 0xbb);
	EXPECT_OK(c, "movaps", 3, 0x0f, 0x29, 0x12);
	memcpy(m, gm(MEM_BASE + 0x200), 16);
	assert_int_equal(m[0], 0xaa);
	assert_int_equal(m[1], 0xbb);
	c->regs.rdx = MEM_BASE + 0x208;
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x29, 0x12);

	/* movdqa (%rdx), %xmm10 */
	c->regs.rdx = MEM_BASE + 0x200;
	EXPECT_OK(c, "movdqa", 5, 0x66, 0x44, 0x0f, 0x6f, 0x12);
	assert_int_equal(xmm_lo(c, 10), 0xaa);
	assert_int_equal(xmm_hi(c, 10), 0xbb);

	/* movups -8(%rbp), %xmm3 */
	c->regs.rbp = MEM_BASE + 0x208;
	EXPECT_OK(c, "movups", 4, 0x0f, 0x10, 0x5d, 0xf8);
	assert_int_equal(xmm_lo(c, 3), 0xaa);

	/* movdqu %xmm10, %xmm1 (register store form F3 0F 7F) */
	EXPECT_OK(c, "movdqu", 5, 0xf3, 0x44, 0x0f, 0x7f, 0xd1);
	assert_int_equal(xmm_hi(c, 1), 0xbb);
	free(c);
}

/* ---- integer ------------------------------------------------------------ */

static void test_popcnt_lzcnt_tzcnt(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->regs.rbx = 0xf0f0000000000001ull;
	c->regs.rflags = 0x2 | RFLAGS_CF | RFLAGS_OF | RFLAGS_SF | RFLAGS_AF | RFLAGS_PF | RFLAGS_ZF | RFLAGS_RF;
	EXPECT_OK(c, "popcnt", 5, 0xf3, 0x48, 0x0f, 0xb8, 0xc3);
	assert_int_equal(c->regs.rax, 9);
	assert_int_equal(c->regs.rflags, 0x2); /* all arithmetic flags and RF cleared */

	c->regs.rbx = 0;
	EXPECT_OK(c, "popcnt", 5, 0xf3, 0x48, 0x0f, 0xb8, 0xc3);
	assert_int_equal(c->regs.rax, 0);
	assert_int_equal(c->regs.rflags, 0x2 | RFLAGS_ZF);

	/* popcnt (%rsi), %ax: 16-bit, upper bits of rax preserved */
	c->regs.rsi = MEM_BASE;
	c->regs.rax = 0xffffffffffff0000ull;
	gm(MEM_BASE)[0] = 0xff; gm(MEM_BASE)[1] = 0x01; gm(MEM_BASE)[2] = 0xff;
	EXPECT_OK(c, "popcnt", 5, 0x66, 0xf3, 0x0f, 0xb8, 0x06);
	assert_int_equal(c->regs.rax, 0xffffffffffff0009ull);
	assert_int_equal(c->regs.rflags, 0x2);

	c->regs.rcx = 0x00010000;
	c->regs.rdx = ~0ull;
	EXPECT_OK(c, "lzcnt", 4, 0xf3, 0x0f, 0xbd, 0xd1);
	assert_int_equal(c->regs.rdx, 15);
	assert_false(c->regs.rflags & (RFLAGS_CF | RFLAGS_ZF));
	c->regs.rcx = 0;
	EXPECT_OK(c, "lzcnt", 4, 0xf3, 0x0f, 0xbd, 0xd1);
	assert_int_equal(c->regs.rdx, 32);
	assert_true(c->regs.rflags & RFLAGS_CF);
	c->regs.rcx = 1ull << 40;
	EXPECT_OK(c, "tzcnt", 5, 0xf3, 0x48, 0x0f, 0xbc, 0xd1);
	assert_int_equal(c->regs.rdx, 40);
	c->regs.rcx = 1;
	EXPECT_OK(c, "tzcnt", 5, 0xf3, 0x48, 0x0f, 0xbc, 0xd1);
	assert_int_equal(c->regs.rdx, 0);
	assert_true(c->regs.rflags & RFLAGS_ZF);
	/* without F3, 0F BC is bsf, which KVM emulates itself */
	EXPECT_ERR(c, -ENOSYS, 0x48, 0x0f, 0xbc, 0xd1);
	free(c);
}

static void test_crc32(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	/* Expected values computed with the host's SSE4.2 crc32 instruction. */
	c->regs.rflags = 0x2 | RFLAGS_CF | RFLAGS_ZF;
	c->regs.rax = 0xffffffff;
	c->regs.rcx = 0x5a;
	EXPECT_OK(c, "crc32", 5, 0xf2, 0x0f, 0x38, 0xf0, 0xc1); /* crc32b %cl, %eax */
	assert_int_equal(c->regs.rax, 0x97455e45);
	assert_int_equal(c->regs.rflags, 0x2 | RFLAGS_CF | RFLAGS_ZF); /* flags unaffected */

	c->regs.rax = 0;
	c->regs.rcx = 0x0123456789abcdefull;
	EXPECT_OK(c, "crc32", 6, 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0xc1); /* crc32q %rcx, %rax */
	assert_int_equal(c->regs.rax, 0xe9986aa9);

	c->regs.rax = 0xffffffff12345678ull;
	c->regs.rcx = 0xdeadbeef;
	EXPECT_OK(c, "crc32", 5, 0xf2, 0x0f, 0x38, 0xf1, 0xc1); /* crc32l %ecx, %eax */
	assert_int_equal(c->regs.rax, 0xf3ed4b20);

	c->regs.rax = 0x12345678;
	c->regs.rcx = 0xbeef;
	EXPECT_OK(c, "crc32", 6, 0x66, 0xf2, 0x0f, 0x38, 0xf1, 0xc1); /* crc32w %cx, %eax */
	assert_int_equal(c->regs.rax, 0xd78220dc);

	/* crc32b %ah, %eax: without REX, register 4 is AH */
	c->regs.rax = 0x5a00;
	uint32_t expect = 0x5a00;
	{
		uint32_t crc = 0x5a00 ^ 0x5a;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
		expect = crc;
	}
	EXPECT_OK(c, "crc32", 5, 0xf2, 0x0f, 0x38, 0xf0, 0xc4);
	assert_int_equal(c->regs.rax, expect);

	/* CRC-32C check value: ~crc32c(~0, "123456789") = 0xe3069283, via crc32b (%rsi) */
	memcpy(gm(MEM_BASE), "123456789", 9);
	c->regs.rax = 0xffffffff;
	for (unsigned i = 0; i < 9; i++) {
		c->regs.rsi = MEM_BASE + i;
		EXPECT_OK(c, "crc32", 5, 0xf2, 0x0f, 0x38, 0xf0, 0x06);
	}
	assert_int_equal((uint32_t)~c->regs.rax, 0xe3069283);
	free(c);
}

static void test_movbe(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->regs.rsi = MEM_BASE + 0x10;
	uint8_t be[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
	memcpy(gm(MEM_BASE + 0x10), be, 8);
	c->regs.rax = ~0ull;
	EXPECT_OK(c, "movbe", 4, 0x0f, 0x38, 0xf0, 0x06); /* movbe (%rsi), %eax */
	assert_int_equal(c->regs.rax, 0x11223344);

	c->regs.r9 = MEM_BASE + 0x10;
	c->regs.r10 = 0xffffffffffff0000ull;
	EXPECT_OK(c, "movbe", 6, 0x66, 0x45, 0x0f, 0x38, 0xf0, 0x11); /* movbe (%r9), %r10w */
	assert_int_equal(c->regs.r10, 0xffffffffffff1122ull);

	c->regs.rax = 0x0102030405060708ull;
	EXPECT_OK(c, "movbe", 5, 0x48, 0x0f, 0x38, 0xf1, 0x06); /* movbe %rax, (%rsi) */
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(gm(MEM_BASE + 0x10)[i], i + 1);
	/* register operand -> #UD */
	EXPECT_FAULT(c, 6, -1, 0x0f, 0x38, 0xf0, 0xc0);
	free(c);
}

static void test_cmpxchg16b(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	uint64_t m[2] = { 0x1111, 0x2222 };
	c->regs.rsi = MEM_BASE + 0x40;
	memcpy(gm(MEM_BASE + 0x40), m, 16);
	c->regs.rax = 0x1111; c->regs.rdx = 0x2222;
	c->regs.rbx = 0xaaaa; c->regs.rcx = 0xbbbb;
	c->regs.rflags = 0x2 | RFLAGS_CF;
	EXPECT_OK(c, "cmpxchg16b", 5, 0xf0, 0x48, 0x0f, 0xc7, 0x0e);
	memcpy(m, gm(MEM_BASE + 0x40), 16);
	assert_int_equal(m[0], 0xaaaa);
	assert_int_equal(m[1], 0xbbbb);
	assert_int_equal(c->regs.rflags, 0x2 | RFLAGS_CF | RFLAGS_ZF); /* ZF only */

	/* mismatch: memory loaded into RDX:RAX, ZF cleared, memory unchanged */
	EXPECT_OK(c, "cmpxchg16b", 5, 0xf0, 0x48, 0x0f, 0xc7, 0x0e);
	assert_int_equal(c->regs.rax, 0xaaaa);
	assert_int_equal(c->regs.rdx, 0xbbbb);
	assert_int_equal(c->regs.rflags, 0x2 | RFLAGS_CF);

	/* misaligned -> #GP(0) */
	c->regs.rsi = MEM_BASE + 0x48;
	EXPECT_FAULT(c, 13, 0, 0xf0, 0x48, 0x0f, 0xc7, 0x0e);
	/* register operand with LOCK -> #UD */
	EXPECT_FAULT(c, 6, -1, 0xf0, 0x48, 0x0f, 0xc7, 0xce);

	/* cmpxchg8b (%rsi): EDX:EAX compare */
	c->regs.rsi = MEM_BASE + 0x84;
	uint32_t m8[2] = { 5, 6 };
	memcpy(gm(MEM_BASE + 0x84), m8, 8);
	c->regs.rax = 0xffffffff00000005ull; c->regs.rdx = 6;
	c->regs.rbx = 7; c->regs.rcx = 8;
	EXPECT_OK(c, "cmpxchg8b", 3, 0x0f, 0xc7, 0x0e);
	memcpy(m8, gm(MEM_BASE + 0x84), 8);
	assert_int_equal(m8[0], 7);
	assert_int_equal(m8[1], 8);
	assert_true(c->regs.rflags & RFLAGS_ZF);
	assert_int_equal(c->regs.rax, 0xffffffff00000005ull); /* not written on success */
	EXPECT_OK(c, "cmpxchg8b", 3, 0x0f, 0xc7, 0x0e);
	assert_int_equal(c->regs.rax, 7);
	assert_int_equal(c->regs.rdx, 8);
	assert_false(c->regs.rflags & RFLAGS_ZF);
	free(c);
}

/* ---- system ------------------------------------------------------------- */

static void test_system(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	c->tsc = 0x123456789abcdef0ull;
	c->tsc_aux = 3;
	c->regs.rax = c->regs.rcx = c->regs.rdx = ~0ull;
	EXPECT_OK(c, "rdtscp", 3, 0x0f, 0x01, 0xf9);
	assert_int_equal(c->regs.rax, 0x9abcdef0ull);
	assert_int_equal(c->regs.rdx, 0x12345678ull);
	assert_int_equal(c->regs.rcx, 3);

	c->regs.rax = ~0ull;
	EXPECT_OK(c, "rdpid", 4, 0xf3, 0x0f, 0xc7, 0xf8);
	assert_int_equal(c->regs.rax, 3);

	c->regs.rcx = 0;
	c->regs.rax = c->regs.rdx = ~0ull;
	EXPECT_OK(c, "xgetbv", 3, 0x0f, 0x01, 0xd0);
	assert_int_equal(c->regs.rax, 7);
	assert_int_equal(c->regs.rdx, 0);
	c->regs.rcx = 1; /* XCR1 not present */
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xd0);

	c->regs.rcx = 0;
	c->regs.rax = 3; c->regs.rdx = 0;
	EXPECT_OK(c, "xsetbv", 3, 0x0f, 0x01, 0xd1);
	assert_int_equal(c->xcrs.xcrs[0].value, 3);
	assert_true(c->xcrs_dirty);
	c->regs.rax = 5; /* AVX without SSE */
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xd1);
	c->regs.rax = 2; /* x87 bit clear */
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xd1);

	EXPECT_OK(c, "stac", 3, 0x0f, 0x01, 0xcb);
	assert_true(c->regs.rflags & RFLAGS_AC);
	EXPECT_OK(c, "clac", 3, 0x0f, 0x01, 0xca);
	assert_false(c->regs.rflags & RFLAGS_AC);

	/* rdpkru: #UD without CR4.PKE; PKRU in init state reads 0 */
	c->regs.rcx = 0;
	EXPECT_FAULT(c, 6, -1, 0x0f, 0x01, 0xee);
	c->sregs.cr4 |= 1ull << 22;
	c->regs.rax = c->regs.rdx = ~0ull;
	EXPECT_OK(c, "rdpkru", 3, 0x0f, 0x01, 0xee);
	assert_int_equal(c->regs.rax, 0);
	assert_int_equal(c->regs.rdx, 0);
	c->regs.rcx = 1;
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xee);
	c->regs.rcx = 0; c->regs.rdx = 1; /* wrpkru needs EDX = 0 */
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xef);

	/* CPL3: clac -> #UD, xsetbv -> #GP */
	c->sregs.cs.selector = 0x33;
	EXPECT_FAULT(c, 6, -1, 0x0f, 0x01, 0xca);
	c->regs.rcx = 0; c->regs.rax = 3;
	EXPECT_FAULT(c, 13, 0, 0x0f, 0x01, 0xd1);
	free(c);
}

static void test_int3_and_vzeroupper(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	EXPECT_OK(c, "int3", 1, 0xcc);
	assert_int_equal(c->inject_vector, 3);
	assert_int_equal(c->inject_error_code, -1);

	set_fx64(c, 512, 7);
	memset(fxa(c) + 576, 0xab, 256);
	EXPECT_OK(c, "vzeroupper", 3, 0xc5, 0xf8, 0x77);
	assert_int_equal(c->inject_vector, -1);
	assert_int_equal(fx64(c, 512), 3);
	for (unsigned i = 0; i < 256; i++)
		assert_int_equal(fxa(c)[576 + i], 0);
	/* three-byte VEX form */
	EXPECT_OK(c, "vzeroupper", 4, 0xc4, 0xe1, 0x78, 0x77);
	/* 66 before VEX -> #UD; AVX not enabled in XCR0 -> #UD */
	EXPECT_FAULT(c, 6, -1, 0x66, 0xc5, 0xf8, 0x77);
	c->xcrs.xcrs[0].value = 3;
	EXPECT_FAULT(c, 6, -1, 0xc5, 0xf8, 0x77);
	/* vzeroall (VEX.L=1) is not supported */
	EXPECT_ERR(c, -ENOSYS, 0xc5, 0xfc, 0x77);
	free(c);
}

static void test_xsave_xrstor(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	uint64_t base = MEM_BASE + 0x1000;
	c->regs.rdi = base;
	c->regs.rax = 3; c->regs.rdx = 0;        /* RFBM = x87 | SSE */
	set_fx16(c, 0, 0x27f);
	set_fx32(c, 24, 0x1fa0);
	set_fx32(c, 28, 0xffff);
	set_xmm(c, 0, 0x1010, 0x2020);
	set_xmm(c, 15, 0x1515, 0x5151);
	memset(gm(base + 464), 0x5a, 48);       /* software-available bytes */
	uint64_t old_bv = 4;                     /* AVX bit from an earlier save */
	memcpy(gm(base + 512), &old_bv, 8);

	EXPECT_OK(c, "xsave64", 4, 0x48, 0x0f, 0xae, 0x27);
	uint64_t v;
	assert_int_equal(gm(base)[0], 0x7f);
	assert_int_equal(gm(base)[1], 0x02);
	memcpy(&v, gm(base + 24), 8);
	assert_int_equal(v, 0x0000ffff00001fa0ull);
	memcpy(&v, gm(base + 160), 8);
	assert_int_equal(v, 0x1010);
	memcpy(&v, gm(base + 160 + 15 * 16 + 8), 8);
	assert_int_equal(v, 0x5151);
	memcpy(&v, gm(base + 512), 8);
	assert_int_equal(v, 7);                  /* old AVX bit kept, x87|SSE set */
	assert_int_equal(gm(base + 464)[0], 0x5a);
	assert_int_equal(gm(base + 511)[0], 0x5a);
	assert_int_equal(n_writes, 1);

	/* change the state, then xrstor64 brings it back */
	set_fx16(c, 0, 0x37f);
	set_fx32(c, 24, 0x1f80);
	set_xmm(c, 0, 0, 0);
	set_xmm(c, 15, 0, 0);
	c->xsave_dirty = false;
	EXPECT_OK(c, "xrstor64", 4, 0x48, 0x0f, 0xae, 0x2f);
	assert_int_equal(fx16(c, 0), 0x27f);
	assert_int_equal(fx32(c, 24), 0x1fa0);
	assert_int_equal(xmm_lo(c, 0), 0x1010);
	assert_int_equal(xmm_hi(c, 15), 0x5151);
	assert_true(c->xsave_dirty);

	/* XSTATE_BV without SSE: XMM registers initialised, MXCSR still loaded */
	v = 1;
	memcpy(gm(base + 512), &v, 8);
	EXPECT_OK(c, "xrstor64", 4, 0x48, 0x0f, 0xae, 0x2f);
	assert_int_equal(xmm_lo(c, 0), 0);
	assert_int_equal(xmm_hi(c, 15), 0);
	assert_int_equal(fx32(c, 24), 0x1fa0);

	/* XCOMP_BV nonzero in standard form -> #GP(0); misaligned -> #GP(0) */
	v = 1;
	memcpy(gm(base + 520), &v, 8);
	EXPECT_FAULT(c, 13, 0, 0x48, 0x0f, 0xae, 0x2f);
	c->regs.rdi = base + 16;
	EXPECT_FAULT(c, 13, 0, 0x48, 0x0f, 0xae, 0x27);

	/* xsavec: compacted header */
	c->regs.rdi = base;
	EXPECT_OK(c, "xsavec", 4, 0x48, 0x0f, 0xc7, 0x27);
	memcpy(&v, gm(base + 520), 8);
	assert_int_equal(v, 0x8000000000000003ull);
	/* and xrstor of the compacted image */
	set_xmm(c, 0, 0x77, 0);
	EXPECT_OK(c, "xrstor64", 4, 0x48, 0x0f, 0xae, 0x2f);
	assert_int_equal(xmm_lo(c, 0), 0);

	/* xsaveopt and the 32-bit-form xsave */
	EXPECT_OK(c, "xsaveopt64", 4, 0x48, 0x0f, 0xae, 0x37);
	EXPECT_OK(c, "xsave", 3, 0x0f, 0xae, 0x27);

	/* with AVX: 832 bytes, YMM upper halves at 576 */
	c->regs.rax = 7;
	set_fx64(c, 512, 7);
	memset(fxa(c) + 576, 0xcd, 256);
	memset(gm(base + 576), 0, 256);
	memset(gm(base + 520), 0, 8); /* XSAVE never writes XCOMP_BV: clear xsavec's */
	EXPECT_OK(c, "xsave64", 4, 0x48, 0x0f, 0xae, 0x27);
	assert_int_equal(gm(base + 576)[0], 0xcd);
	assert_int_equal(gm(base + 831)[0], 0xcd);
	memcpy(&v, gm(base + 512), 8);
	assert_int_equal(v, 7);
	memset(fxa(c) + 576, 0, 256);
	EXPECT_OK(c, "xrstor64", 4, 0x48, 0x0f, 0xae, 0x2f);
	assert_int_equal(fxa(c)[576 + 255], 0xcd);
	/* XSTATE_BV without AVX: upper halves initialised, KVM header bit cleared */
	v = 3;
	memcpy(gm(base + 512), &v, 8);
	EXPECT_OK(c, "xrstor64", 4, 0x48, 0x0f, 0xae, 0x2f);
	assert_int_equal(fxa(c)[576 + 255], 0);
	assert_int_equal(fx64(c, 512) & 7, 3);

	/* components beyond x87/SSE/AVX requested -> -ENOSYS */
	c->xcrs.xcrs[0].value = 0x207;
	c->regs.rax = 0x207;
	EXPECT_ERR(c, -ENOSYS, 0x48, 0x0f, 0xae, 0x27);
	/* without CR4.OSXSAVE -> #UD */
	c->sregs.cr4 &= ~0x40000ull;
	EXPECT_FAULT(c, 6, -1, 0x48, 0x0f, 0xae, 0x27);
	free(c);
}

/* ---- errors --------------------------------------------------------------- */

static void test_efault_leaves_state(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	/* read fault */
	c->regs.rax = 0x100;
	EXPECT_ERR(c, -EFAULT, 0x66, 0x0f, 0xef, 0x00);
	EXPECT_ERR(c, -EFAULT, 0x0f, 0xae, 0x10);
	/* write fault (read-only page) */
	c->regs.rax = RO_START;
	EXPECT_ERR(c, -EFAULT, 0x0f, 0xae, 0x18);
	/* cmpxchg16b: the read works, the write faults: registers and flags untouched */
	c->regs.rsi = RO_START;
	c->regs.rax = 0; c->regs.rdx = 0; c->regs.rbx = 1;
	EXPECT_ERR(c, -EFAULT, 0xf0, 0x48, 0x0f, 0xc7, 0x0e);
	/* xsave to a read-only page: no partial write */
	c->regs.rdi = RO_START - 64;
	c->regs.rax = 3;
	unsigned w0 = n_writes;
	EXPECT_ERR(c, -EFAULT, 0x48, 0x0f, 0xae, 0x27);
	assert_int_equal(n_writes, w0);
	/* no callbacks at all */
	c->read = NULL;
	c->regs.rax = MEM_BASE;
	EXPECT_ERR(c, -EFAULT, 0x0f, 0xae, 0x10);
	free(c);
}

static void test_unknown(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	EXPECT_ERR(c, -ENOSYS, 0x0f, 0x0b);                   /* ud2 */
	EXPECT_ERR(c, -ENOSYS, 0x90);                         /* nop */
	EXPECT_ERR(c, -ENOSYS, 0x0f, 0xa2);                   /* cpuid */
	EXPECT_ERR(c, -ENOSYS, 0xd9, 0xc0);                   /* fld st(0) */
	EXPECT_ERR(c, -ENOSYS, 0xf3, 0x0f, 0x10, 0xc1);       /* movss */
	EXPECT_ERR(c, -ENOSYS, 0x0f, 0x3a, 0x0f, 0xc1, 0x08); /* palignr (MMX) */
	EXPECT_ERR(c, -ENOSYS, 0xc5, 0xf9, 0x6f, 0xc1);       /* vmovdqa */
	const char *name = "x";
	assert_int_equal(emul_complete(c, NULL, 0, &name), -EINVAL);
	assert_null(name);
	free(c);
}

static void test_truncated(void **state)
{
	(void)state;
	static const uint8_t insns[][16] = {
		{ 11, 0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x84, 0x88, 0x00, 0x01, 0x00, 0x00 },
		{ 7, 0x0f, 0xae, 0x15, 0x00, 0x01, 0x00, 0x00 },
		{ 9, 0x42, 0x0f, 0xae, 0x14, 0x65, 0x78, 0x56, 0x34, 0x12 },
		{ 5, 0xf0, 0x48, 0x0f, 0xc7, 0x0e },
		{ 4, 0xc4, 0xe1, 0x78, 0x77 },
		{ 6, 0x66, 0x45, 0x0f, 0xef, 0x4d, 0x10 },
		{ 3, 0x0f, 0x01, 0xf9 },
	};
	for (unsigned i = 0; i < sizeof(insns) / sizeof(insns[0]); i++) {
		unsigned full = insns[i][0];
		for (unsigned len = 0; len < full; len++) {
			struct emul_cpu *c = new_cpu();
			struct emul_cpu *before = malloc(sizeof(*before));
			assert_non_null(before);
			memcpy(before, c, sizeof(*before));
			const char *name = "x";
			int rc = run(c, insns[i] + 1, len, &name);
			assert_int_equal(rc, -EINVAL);
			assert_null(name);
			assert_memory_equal(before, c, sizeof(*before));
			free(before);
			free(c);
		}
	}
}

static void test_too_long(void **state)
{
	(void)state;
	struct emul_cpu *c = new_cpu();
	/* 13 prefixes + 0F 57 C0 = 16 bytes: #GP(0) even with a long buffer */
	EXPECT_FAULT(c, 13, 0, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
		     0x66, 0x66, 0x66, 0x66, 0x0f, 0x57, 0xc0);
	/* 12 prefixes + 3 bytes = 15: fine */
	EXPECT_OK(c, "xorpd", 15, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
		  0x66, 0x66, 0x66, 0x0f, 0x57, 0xc0);
	free(c);
}

static unsigned lcg_next(uint64_t *seed)
{
	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	return (unsigned)(*seed >> 33);
}

/* Pseudo-random instructions built from the prefixes and opcodes the assist
 * knows, truncated at random: no crash or sanitizer report, errors leave the
 * state untouched, successes advance RIP by at most 15. */
static void test_random_bytes(void **state)
{
	(void)state;
	static const uint8_t prefixes[] = { 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x64, 0x65, 0x2e,
					    0x40, 0x41, 0x44, 0x48, 0x4c, 0x4f };
	static const uint8_t heads[][3] = {
		{ 1, 0x9b }, { 1, 0xcc }, { 1, 0xd9 }, { 1, 0xdb }, { 1, 0xdd }, { 1, 0xdf },
		{ 1, 0xc4 }, { 1, 0xc5 }, { 2, 0x0f, 0x01 }, { 2, 0x0f, 0x10 }, { 2, 0x0f, 0x29 },
		{ 2, 0x0f, 0x57 }, { 2, 0x0f, 0x6e }, { 2, 0x0f, 0x6f }, { 2, 0x0f, 0x74 },
		{ 2, 0x0f, 0x77 }, { 2, 0x0f, 0x7e }, { 2, 0x0f, 0xae }, { 2, 0x0f, 0xb8 },
		{ 2, 0x0f, 0xbd }, { 2, 0x0f, 0xc7 }, { 2, 0x0f, 0xd6 }, { 2, 0x0f, 0xef },
		{ 3, 0x0f, 0x38 }, { 3, 0x0f, 0x38 },
	};
	uint64_t seed = 0x9e3779b97f4a7c15ull;
#define RND() lcg_next(&seed)
	struct emul_cpu *c = new_cpu();
	struct emul_cpu *before = malloc(sizeof(*before));
	assert_non_null(before);
	for (unsigned iter = 0; iter < 50000; iter++) {
		uint8_t b[24];
		unsigned n = 0;
		for (unsigned k = RND() % 4; k; k--)
			b[n++] = prefixes[RND() % sizeof(prefixes)];
		const uint8_t *h = heads[RND() % (sizeof(heads) / sizeof(heads[0]))];
		for (unsigned k = 0; k < (h[0] < 3 ? h[0] : 2); k++)
			b[n++] = h[1 + k];
		if (h[0] == 3)
			b[n++] = (RND() & 1) ? 0xf0 : 0xf1;
		while (n < sizeof(b))
			b[n++] = (uint8_t)RND();
		unsigned len = RND() % 16;
		/* registers point into the fake memory about half of the time */
		for (unsigned r = 0; r < 4; r++) {
			uint64_t v = (RND() & 1) ? MEM_BASE + (RND() % MEM_SIZE) : ((uint64_t)RND() << 32 | RND());
			if (r == 0) c->regs.rax = v;
			if (r == 1) c->regs.rsi = v;
			if (r == 2) c->regs.rdi = v;
			if (r == 3) c->regs.rbp = v;
		}
		c->regs.rip = (RND() & 1) ? MEM_BASE + 0x100 : CODE_RIP;
		c->regs_dirty = c->xsave_dirty = c->xcrs_dirty = false;
		c->xcrs.nr_xcrs = 1;
		c->xcrs.xcrs[0].xcr = 0;
		c->xcrs.xcrs[0].value = 7;
		memcpy(before, c, sizeof(*before));
		const char *name = "x";
		int rc = run(c, b, len, &name);
		if (rc < 0) {
			assert_true(rc == -ENOSYS || rc == -EINVAL || rc == -EFAULT);
			assert_null(name);
			before->inject_vector = before->inject_error_code = -1;
			assert_memory_equal(before, c, sizeof(*before));
		} else {
			assert_int_equal(rc, 0);
			assert_non_null(name);
			assert_true(c->regs.rip - before->regs.rip <= len);
		}
	}
#undef RND
	free(before);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ldmxcsr_rip_relative),
		cmocka_unit_test(test_ldmxcsr_sib_forms),
		cmocka_unit_test(test_segment_override_and_canonical),
		cmocka_unit_test(test_compat_mode),
		cmocka_unit_test(test_real_mode),
		cmocka_unit_test(test_ldmxcsr_gp),
		cmocka_unit_test(test_x87_control),
		cmocka_unit_test(test_sse_logic),
		cmocka_unit_test(test_movd_movq),
		cmocka_unit_test(test_mov128),
		cmocka_unit_test(test_popcnt_lzcnt_tzcnt),
		cmocka_unit_test(test_crc32),
		cmocka_unit_test(test_movbe),
		cmocka_unit_test(test_cmpxchg16b),
		cmocka_unit_test(test_system),
		cmocka_unit_test(test_int3_and_vzeroupper),
		cmocka_unit_test(test_xsave_xrstor),
		cmocka_unit_test(test_efault_leaves_state),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_random_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
