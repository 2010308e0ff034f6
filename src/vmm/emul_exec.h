/* Internal to the emulation assist: execution context, state accessors and
 * exception checks shared by emul.c (integer/system instructions, dispatch)
 * and emul_fpu.c (x87/SSE/AVX/XSAVE state). Handlers work on a copy of the vCPU
 * state (x->w) that emul_complete commits only on success. */
#ifndef VMSVC_EMUL_EXEC_H
#define VMSVC_EMUL_EXEC_H
#include <errno.h>
#include <string.h>

#include <vmsvc/emul.h>

#include "vmm/emul_decode.h"

/* Handler result in addition to 0 / negative errno: an exception is raised
 * (fault: nothing but inject_vector/inject_error_code is committed). */
#define EMUL_FAULT 2

enum { VEC_UD = 6, VEC_NM = 7, VEC_GP = 13, VEC_SS = 12, VEC_BP = 3 };

#define RFLAGS_CF (1ull << 0)
#define RFLAGS_PF (1ull << 2)
#define RFLAGS_AF (1ull << 4)
#define RFLAGS_ZF (1ull << 6)
#define RFLAGS_SF (1ull << 7)
#define RFLAGS_OF (1ull << 11)
#define RFLAGS_RF (1ull << 16)
#define RFLAGS_VM (1ull << 17)
#define RFLAGS_AC (1ull << 18)
#define RFLAGS_ARITH (RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF)

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR4_TSD (1ull << 2)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXSAVE (1ull << 18)
#define CR4_PKE (1ull << 22)

/* FXSAVE/XSAVE legacy area and header offsets (standard format, which is what
 * KVM_GET_XSAVE returns). */
#define FX_FCW 0
#define FX_FSW 2
#define FX_FTW 4
#define FX_FOP 6
#define FX_FIP 8
#define FX_FDP 16
#define FX_MXCSR 24
#define FX_MXCSR_MASK 28
#define FX_ST 32
#define FX_XMM 160
#define XS_HDR 512
#define XS_AVX 576 /* YMM_Hi128: the first extended component, 576 in both forms */
#define XS_AVX_SIZE 256
#define XFEAT_X87 1ull
#define XFEAT_SSE 2ull
#define XFEAT_AVX 4ull
#define XFEAT_ZMM_HI256 (1ull << 6)
#define XFEAT_PKRU (1ull << 9)
#define XCOMP_COMPACTED (1ull << 63)

#define FCW_INIT 0x37f
#define MXCSR_INIT 0x1f80
#define MXCSR_MASK_DEFAULT 0xffbf

struct emul_ctx {
	struct emul_cpu *w;  /* working copy of the vCPU state */
	struct emul_insn d;
	const char *name;
};

/* ---- small helpers ---------------------------------------------------- */

static inline int raise_fault(struct emul_ctx *x, int vector, int error_code)
{
	x->w->inject_vector = vector;
	x->w->inject_error_code = error_code;
	return EMUL_FAULT;
}

static inline unsigned cpl(const struct emul_cpu *w)
{
	if (!(w->sregs.cr0 & CR0_PE))
		return 0;
	if (w->regs.rflags & RFLAGS_VM)
		return 3;
	return w->sregs.cs.selector & 3;
}

static inline uint8_t *fx(struct emul_cpu *w)
{
	return (uint8_t *)w->xsave.region;
}

static inline uint16_t fx_get16(struct emul_cpu *w, unsigned off)
{
	uint16_t v;
	memcpy(&v, fx(w) + off, 2);
	return v;
}

static inline void fx_put16(struct emul_cpu *w, unsigned off, uint16_t v)
{
	memcpy(fx(w) + off, &v, 2);
}

static inline uint32_t fx_get32(struct emul_cpu *w, unsigned off)
{
	uint32_t v;
	memcpy(&v, fx(w) + off, 4);
	return v;
}

static inline void fx_put32(struct emul_cpu *w, unsigned off, uint32_t v)
{
	memcpy(fx(w) + off, &v, 4);
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* KVM_SET_XSAVE treats a component whose XSTATE_BV bit is clear as being in its
 * init state (and ignores MXCSR unless SSE or AVX is marked), so every change to
 * x87 or SSE state also marks the component in use. */
static inline void mark_xstate(struct emul_cpu *w, uint64_t features)
{
	uint8_t *hdr = fx(w) + XS_HDR;
	put64(hdr, get64(hdr) | features);
	w->xsave_dirty = true;
}

static inline unsigned xmm_count(const struct emul_ctx *x)
{
	return x->d.mode_bits == 64 ? 16 : 8;
}

static inline uint8_t *xmm(struct emul_cpu *w, unsigned n)
{
	return fx(w) + FX_XMM + 16 * (n & 15);
}

static inline uint32_t mxcsr_mask(struct emul_cpu *w)
{
	uint32_t m = fx_get32(w, FX_MXCSR_MASK);
	return m ? m : MXCSR_MASK_DEFAULT;
}

static inline uint64_t xcr_value(const struct emul_cpu *w, uint32_t index, bool *present)
{
	unsigned n = w->xcrs.nr_xcrs < KVM_MAX_XCRS ? w->xcrs.nr_xcrs : KVM_MAX_XCRS;
	for (unsigned i = 0; i < n; i++) {
		if (w->xcrs.xcrs[i].xcr == index) {
			*present = true;
			return w->xcrs.xcrs[i].value;
		}
	}
	*present = false;
	return index == 0 ? XFEAT_X87 : 0; /* XCR0 always exists; bit 0 is always set */
}

static inline uint64_t xcr0(const struct emul_cpu *w)
{
	bool present;
	return xcr_value(w, 0, &present);
}

static inline uint64_t edx_eax(const struct emul_cpu *w)
{
	return ((uint64_t)(uint32_t)w->regs.rdx << 32) | (uint32_t)w->regs.rax;
}

/* ---- general-purpose registers ---------------------------------------- */

static inline uint64_t gpr_read(struct emul_ctx *x, unsigned n, unsigned size)
{
	struct kvm_regs *r = &x->w->regs;
	switch (size) {
	case 1:
		if (!x->d.rex && n >= 4 && n < 8) /* AH, CH, DH, BH */
			return (*emul_gpr(r, n - 4) >> 8) & 0xff;
		return *emul_gpr(r, n) & 0xff;
	case 2: return *emul_gpr(r, n) & 0xffff;
	case 4: return *emul_gpr(r, n) & 0xffffffff;
	default: return *emul_gpr(r, n);
	}
}

/* 32-bit writes zero-extend (64-bit mode; harmless elsewhere), 16-bit merge. */
static inline void gpr_write(struct emul_ctx *x, unsigned n, unsigned size, uint64_t v)
{
	__u64 *p = emul_gpr(&x->w->regs, n);
	switch (size) {
	case 2: *p = (*p & ~0xffffull) | (v & 0xffff); break;
	case 4: *p = v & 0xffffffff; break;
	default: *p = v; break;
	}
	x->w->regs_dirty = true;
}

static inline void set_flags(struct emul_ctx *x, uint64_t mask, uint64_t value)
{
	x->w->regs.rflags = (x->w->regs.rflags & ~mask) | (value & mask);
	x->w->regs_dirty = true;
}

/* ---- memory ----------------------------------------------------------- */

/* Checks before touching the memory operand: canonical address (#GP(0), or
 * #SS(0) for stack references) and a required alignment (#GP(0)). */
static inline int mem_check(struct emul_ctx *x, unsigned align)
{
	if (!x->d.la_canonical)
		return raise_fault(x, x->d.mem_seg == SEG_SS ? VEC_SS : VEC_GP, 0);
	if (align > 1 && (x->d.la & (align - 1)))
		return raise_fault(x, VEC_GP, 0);
	return 0;
}

static inline int mem_read(struct emul_ctx *x, uint64_t la, void *dst, unsigned n)
{
	if (!x->w->read)
		return -EFAULT;
	int rc = x->w->read(x->w->opaque, la, dst, n);
	return rc > 0 ? -EFAULT : rc;
}

static inline int mem_write(struct emul_ctx *x, uint64_t la, const void *src, unsigned n)
{
	if (!x->w->write)
		return -EFAULT;
	int rc = x->w->write(x->w->opaque, la, src, n);
	return rc > 0 ? -EFAULT : rc;
}

/* Integer r/m operand of size bytes (little endian). */
static inline int rm_read(struct emul_ctx *x, unsigned size, uint64_t *v)
{
	if (!x->d.is_mem) {
		*v = gpr_read(x, x->d.rm, size);
		return 0;
	}
	int rc = mem_check(x, 1);
	if (rc)
		return rc;
	uint8_t buf[8] = {0};
	if ((rc = mem_read(x, x->d.la, buf, size)))
		return rc;
	*v = get64(buf);
	return 0;
}

/* ---- exception checks shared by instruction classes --------------------- */

static inline int check_x87(struct emul_ctx *x)
{
	if (x->w->sregs.cr0 & (CR0_EM | CR0_TS))
		return raise_fault(x, VEC_NM, -1);
	return 0;
}

static inline int check_sse(struct emul_ctx *x)
{
	uint64_t cr0 = x->w->sregs.cr0;
	if ((cr0 & CR0_EM) || !(x->w->sregs.cr4 & CR4_OSFXSR))
		return raise_fault(x, VEC_UD, -1);
	if (cr0 & CR0_TS)
		return raise_fault(x, VEC_NM, -1);
	return 0;
}

static inline int check_xsave(struct emul_ctx *x)
{
	if (!(x->w->sregs.cr4 & CR4_OSXSAVE))
		return raise_fault(x, VEC_UD, -1);
	if (x->w->sregs.cr0 & CR0_TS)
		return raise_fault(x, VEC_NM, -1);
	return 0;
}

/* Handlers for x87, MMX, SSE, AVX and XSAVE-family state (emul_fpu.c). Each
 * returns 0, EMUL_FAULT or a negative errno and sets x->name. */
enum xsave_kind { XSAVE_STD, XSAVE_OPT, XSAVE_COMPACT };
int emul_fwait(struct emul_ctx *x);
int emul_esc_d9(struct emul_ctx *x);
int emul_esc_db(struct emul_ctx *x);
int emul_esc_dd(struct emul_ctx *x);
int emul_esc_df(struct emul_ctx *x);
int emul_emms(struct emul_ctx *x);
int emul_vex(struct emul_ctx *x);
int emul_sse_logic(struct emul_ctx *x);
int emul_sse_mov128(struct emul_ctx *x);
int emul_movd_load(struct emul_ctx *x);
int emul_0f7e(struct emul_ctx *x);
int emul_movq_store(struct emul_ctx *x);
int emul_0fae(struct emul_ctx *x);
int emul_do_xsave(struct emul_ctx *x, enum xsave_kind kind);

#endif
