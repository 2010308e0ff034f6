/* Emulation assist: executes the instructions that KVM's instruction emulator
 * (used for guest CPL0 code on kvm_pvm hosts) cannot, on a copy of the vCPU
 * state; the copy is committed only when the instruction completes, so an
 * error (-EFAULT from guest memory, -ENOSYS, truncated bytes) leaves the state
 * untouched. Memory: all reads first, then at most one write, then the commit.
 *
 * Faults (#GP, #UD, #NM) are reported through inject_vector with RIP left at
 * the instruction and no other state changed; traps (#BP from int3) are
 * reported with RIP already past the instruction.
 *
 * Supported: fwait fnstsw fnstcw fldcw fninit fnclex emms ldmxcsr stmxcsr
 * xsave[64] xsaveopt[64] xsavec[64] xrstor[64] (x87/SSE/AVX components),
 * vzeroupper, movups/movupd/movaps/movapd/movdqa/movdqu, movd/movq,
 * pxor/por/pand/pandn, xorps/orps/andps/andnps (and pd), pcmpeqb/w/d,
 * popcnt lzcnt tzcnt crc32 movbe cmpxchg8b cmpxchg16b, rdtscp rdpid xgetbv
 * xsetbv clac stac rdpkru wrpkru, int3, and as no-ops lfence/mfence/sfence,
 * clflush/clflushopt/clwb.
 *
 * Limits: cmpxchg8b/16b are atomic only against this vCPU (the memory
 * callbacks are not atomic); no single-step #DB for RFLAGS.TF; no #AC;
 * 16-bit addressing is not decoded (-ENOSYS when a memory operand needs it);
 * the XSAVE family moves only the x87, SSE and AVX components (-ENOSYS if
 * others must be saved or loaded); segment limits are not checked. */
#include <cpuid.h>
#include <errno.h>
#include <string.h>

#include <vmsvc/emul.h>
#include <vmsvc/err.h>

#include "vmm/emul_exec.h"

/* ---- exceptions ------------------------------------------------------------ */

static int h_int3(struct emul_ctx *x)
{
	x->name = "int3";
	x->w->inject_vector = VEC_BP; /* trap: RIP points after the instruction */
	x->w->inject_error_code = -1;
	return 0;
}

/* ---- integer ------------------------------------------------------------ */

static int h_bitcount(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	unsigned size = d->opsize, bits = 8 * size;
	uint64_t v, res;
	int rc;

	if (d->rep != 0xf3)
		return -ENOSYS; /* plain 0F B8 is JMPE; 0F BC/BD are bsf/bsr */
	x->name = d->op == 0xb8 ? "popcnt" : d->op == 0xbc ? "tzcnt" : "lzcnt";
	if ((rc = rm_read(x, size, &v)))
		return rc;
	if (d->op == 0xb8) {
		res = (uint64_t)__builtin_popcountll(v);
		set_flags(x, RFLAGS_ARITH, v ? 0 : RFLAGS_ZF);
	} else {
		if (!v)
			res = bits;
		else if (d->op == 0xbc)
			res = (uint64_t)__builtin_ctzll(v);
		else
			res = (uint64_t)__builtin_clzll(v) - (64 - bits);
		/* CF: source was zero; ZF: result is zero; OF SF AF PF are undefined
		 * and left unchanged. */
		set_flags(x, RFLAGS_CF | RFLAGS_ZF, (v ? 0 : RFLAGS_CF) | (res ? 0 : RFLAGS_ZF));
	}
	gpr_write(x, d->reg, size, res);
	return 0;
}

/* CRC32C (Castagnoli), reflected, no pre/post inversion: what SSE4.2 crc32 does. */
static uint32_t crc32c_update(uint32_t crc, uint64_t data, unsigned size)
{
	for (unsigned i = 0; i < size; i++) {
		crc ^= (uint8_t)(data >> (8 * i));
		for (unsigned k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
	}
	return crc;
}

static int h_0f38_f0f1(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	uint64_t v;
	int rc;

	if (d->rep == 0xf2) {
		unsigned size = d->op == 0xf0 ? 1 : d->opsize;
		unsigned dsize = rex_w(d) ? 8 : 4;
		x->name = "crc32";
		if ((rc = rm_read(x, size, &v)))
			return rc;
		uint32_t crc = crc32c_update((uint32_t)gpr_read(x, d->reg, 4), v, size);
		gpr_write(x, d->reg, dsize, crc); /* flags unaffected */
		return 0;
	}
	if (d->rep)
		return -ENOSYS;
	x->name = "movbe";
	if (!d->is_mem)
		return raise_fault(x, VEC_UD, -1);
	unsigned size = d->opsize;
	uint8_t buf[8] = {0}, out[8] = {0};
	if ((rc = mem_check(x, 1)))
		return rc;
	if (d->op == 0xf0) {
		if ((rc = mem_read(x, d->la, buf, size)))
			return rc;
		for (unsigned i = 0; i < size; i++)
			out[i] = buf[size - 1 - i];
		gpr_write(x, d->reg, size, get64(out));
		return 0;
	}
	put64(buf, gpr_read(x, d->reg, size));
	for (unsigned i = 0; i < size; i++)
		out[i] = buf[size - 1 - i];
	return mem_write(x, d->la, out, size);
}

/* 0F C7: /1 cmpxchg8b/16b m, /4 xsavec m, F3 /7 rdpid r. */
static int h_0fc7(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	struct emul_cpu *w = x->w;
	unsigned r = d->reg & 7;
	int rc;

	if (!d->is_mem) {
		if (r != 7 || d->rep != 0xf3)
			return -ENOSYS; /* rdrand / rdseed / ... */
		x->name = "rdpid";
		gpr_write(x, d->rm, d->mode_bits == 64 ? 8 : 4, w->tsc_aux);
		return 0;
	}
	if (r == 4 && !d->p66 && !d->rep) {
		x->name = "xsavec";
		return emul_do_xsave(x, XSAVE_COMPACT);
	}
	if (r != 1 || d->rep)
		return -ENOSYS;

	/* Atomic against this vCPU only: the memory callbacks are not atomic. */
	unsigned size = rex_w(d) ? 16 : 8, half = size / 2;
	uint8_t old[16], neu[16];
	x->name = size == 16 ? "cmpxchg16b" : "cmpxchg8b";
	if ((rc = mem_check(x, size == 16 ? 16 : 1)) || (rc = mem_read(x, d->la, old, size)))
		return rc;
	uint64_t lo = gpr_read(x, 0, half), hi = gpr_read(x, 2, half); /* rAX, rDX */
	uint64_t mlo = 0, mhi = 0;
	memcpy(&mlo, old, half);
	memcpy(&mhi, old + half, half);
	if (lo == mlo && hi == mhi) {
		uint64_t nlo = gpr_read(x, 3, half), nhi = gpr_read(x, 1, half); /* rBX, rCX */
		memcpy(neu, &nlo, half);
		memcpy(neu + half, &nhi, half);
		if ((rc = mem_write(x, d->la, neu, size)))
			return rc;
		set_flags(x, RFLAGS_ZF, RFLAGS_ZF);
	} else {
		/* Hardware writes the old value back; skipping that write avoids
		 * clobbering a concurrent update through the non-atomic callbacks. */
		gpr_write(x, 0, half, mlo);
		gpr_write(x, 2, half, mhi);
		set_flags(x, RFLAGS_ZF, 0);
	}
	return 0;
}

/* PKRU lives in XSAVE component 9, at the offset host CPUID leaf 0xD reports
 * (KVM's buffer follows the host's layout). 0 if unknown or out of range. */
static unsigned pkru_offset(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid_count(0xd, 9, &a, &b, &c, &d) || a < 4)
		return 0;
	return b + 4 <= sizeof(((struct kvm_xsave *)0)->region) && b >= XS_AVX ? b : 0;
}

/* 0F 01 with a register ModRM: xgetbv, xsetbv, clac, stac, rdpkru, wrpkru, rdtscp. */
static int h_0f01(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	struct emul_cpu *w = x->w;
	uint32_t ecx = (uint32_t)w->regs.rcx;

	if (d->p66 || d->rep)
		return -ENOSYS;
	switch (d->modrm) {
	case 0xd0: { /* xgetbv */
		bool present;
		x->name = "xgetbv";
		if (!(w->sregs.cr4 & CR4_OSXSAVE))
			return raise_fault(x, VEC_UD, -1);
		uint64_t v = xcr_value(w, ecx, &present);
		if (!present && ecx != 0)
			return raise_fault(x, VEC_GP, 0);
		gpr_write(x, 0, 4, (uint32_t)v);
		gpr_write(x, 2, 4, v >> 32);
		return 0;
	}
	case 0xd1: { /* xsetbv */
		x->name = "xsetbv";
		if (!(w->sregs.cr4 & CR4_OSXSAVE))
			return raise_fault(x, VEC_UD, -1);
		uint64_t v = edx_eax(w);
		/* Architectural XCR0 rules; KVM_SET_XCRS rejects what the host lacks. */
		bool bad = cpl(w) != 0 || ecx != 0 || !(v & XFEAT_X87) ||
			   ((v & XFEAT_AVX) && !(v & XFEAT_SSE)) ||
			   ((v & 0x18) != 0 && (v & 0x18) != 0x18) ||
			   ((v & 0xe0) != 0 && ((v & 0xe0) != 0xe0 || !(v & XFEAT_AVX)));
		if (bad)
			return raise_fault(x, VEC_GP, 0);
		unsigned n = w->xcrs.nr_xcrs < KVM_MAX_XCRS ? w->xcrs.nr_xcrs : KVM_MAX_XCRS, i;
		for (i = 0; i < n && w->xcrs.xcrs[i].xcr != 0; i++)
			;
		if (i == n) {
			if (n == KVM_MAX_XCRS)
				return -ENOSYS;
			w->xcrs.nr_xcrs = n + 1;
			w->xcrs.xcrs[i].xcr = 0;
			w->xcrs.xcrs[i].reserved = 0;
		}
		w->xcrs.xcrs[i].value = v;
		w->xcrs_dirty = true;
		return 0;
	}
	case 0xca: case 0xcb:
		x->name = d->modrm == 0xca ? "clac" : "stac";
		if (cpl(w) != 0)
			return raise_fault(x, VEC_UD, -1);
		set_flags(x, RFLAGS_AC, d->modrm == 0xcb ? RFLAGS_AC : 0);
		return 0;
	case 0xee: case 0xef: {
		bool wr = d->modrm == 0xef;
		x->name = wr ? "wrpkru" : "rdpkru";
		if (!(w->sregs.cr4 & CR4_PKE))
			return raise_fault(x, VEC_UD, -1);
		if (ecx != 0 || (wr && (uint32_t)w->regs.rdx != 0))
			return raise_fault(x, VEC_GP, 0);
		unsigned off = pkru_offset();
		bool in_use = get64(fx(w) + XS_HDR) & XFEAT_PKRU;
		if (wr) {
			if (!off)
				return -ENOSYS;
			fx_put32(w, off, (uint32_t)w->regs.rax);
			mark_xstate(w, XFEAT_PKRU);
			return 0;
		}
		if (in_use && !off)
			return -ENOSYS;
		gpr_write(x, 0, 4, in_use ? fx_get32(w, off) : 0); /* init value 0 */
		gpr_write(x, 2, 4, 0);
		return 0;
	}
	case 0xf9: /* rdtscp */
		x->name = "rdtscp";
		if ((w->sregs.cr4 & CR4_TSD) && cpl(w) != 0)
			return raise_fault(x, VEC_GP, 0);
		gpr_write(x, 0, 4, (uint32_t)w->tsc);
		gpr_write(x, 2, 4, w->tsc >> 32);
		gpr_write(x, 1, 4, w->tsc_aux);
		return 0;
	default:
		return -ENOSYS;
	}
}

/* ---- dispatch ------------------------------------------------------------ */

struct opcode_entry {
	uint8_t map, op;
	bool modrm;
	bool lock_ok;
	int (*fn)(struct emul_ctx *x);
};

static const struct opcode_entry opcodes[] = {
	{ MAP_ONE_BYTE, 0x9b, false, false, emul_fwait },
	{ MAP_ONE_BYTE, 0xcc, false, false, h_int3 },
	{ MAP_ONE_BYTE, 0xd9, true, false, emul_esc_d9 },
	{ MAP_ONE_BYTE, 0xdb, true, false, emul_esc_db },
	{ MAP_ONE_BYTE, 0xdd, true, false, emul_esc_dd },
	{ MAP_ONE_BYTE, 0xdf, true, false, emul_esc_df },
	{ MAP_0F, 0x01, true, false, h_0f01 },
	{ MAP_0F, 0x10, true, false, emul_sse_mov128 },
	{ MAP_0F, 0x11, true, false, emul_sse_mov128 },
	{ MAP_0F, 0x28, true, false, emul_sse_mov128 },
	{ MAP_0F, 0x29, true, false, emul_sse_mov128 },
	{ MAP_0F, 0x54, true, false, emul_sse_logic },
	{ MAP_0F, 0x55, true, false, emul_sse_logic },
	{ MAP_0F, 0x56, true, false, emul_sse_logic },
	{ MAP_0F, 0x57, true, false, emul_sse_logic },
	{ MAP_0F, 0x6e, true, false, emul_movd_load },
	{ MAP_0F, 0x6f, true, false, emul_sse_mov128 },
	{ MAP_0F, 0x74, true, false, emul_sse_logic },
	{ MAP_0F, 0x75, true, false, emul_sse_logic },
	{ MAP_0F, 0x76, true, false, emul_sse_logic },
	{ MAP_0F, 0x77, false, false, emul_emms },
	{ MAP_0F, 0x7e, true, false, emul_0f7e },
	{ MAP_0F, 0x7f, true, false, emul_sse_mov128 },
	{ MAP_0F, 0xae, true, false, emul_0fae },
	{ MAP_0F, 0xb8, true, false, h_bitcount },
	{ MAP_0F, 0xbc, true, false, h_bitcount },
	{ MAP_0F, 0xbd, true, false, h_bitcount },
	{ MAP_0F, 0xc7, true, true, h_0fc7 },
	{ MAP_0F, 0xd6, true, false, emul_movq_store },
	{ MAP_0F, 0xdb, true, false, emul_sse_logic },
	{ MAP_0F, 0xdf, true, false, emul_sse_logic },
	{ MAP_0F, 0xeb, true, false, emul_sse_logic },
	{ MAP_0F, 0xef, true, false, emul_sse_logic },
	{ MAP_0F38, 0xf0, true, false, h_0f38_f0f1 },
	{ MAP_0F38, 0xf1, true, false, h_0f38_f0f1 },
};

static int dispatch(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	int rc;

	if (d->vex) {
		if (d->map == MAP_0F && d->op == 0x77) /* no ModRM */
			return emul_vex(x);
		return -ENOSYS;
	}
	for (unsigned i = 0; i < sizeof(opcodes) / sizeof(opcodes[0]); i++) {
		const struct opcode_entry *e = &opcodes[i];
		if (e->map != d->map || e->op != d->op)
			continue;
		if (e->modrm && (rc = emul_decode_modrm(x->w, d, 0)))
			return rc;
		/* LOCK is only valid on read-modify-write memory instructions. */
		if (d->lock && !(e->lock_ok && d->is_mem && (d->reg & 7) == 1)) {
			x->name = "lock";
			return raise_fault(x, VEC_UD, -1);
		}
		return e->fn(x);
	}
	return -ENOSYS;
}

int emul_complete(struct emul_cpu *c, const uint8_t *insn, unsigned len, const char **name)
{
	const char *unused;
	if (!name)
		name = &unused;
	*name = NULL;
	if (!c || (!insn && len))
		return -EINVAL;
	c->inject_vector = -1;
	c->inject_error_code = -1;

	/* Work on a copy; commit only on success. */
	struct emul_cpu work = *c;
	struct emul_ctx x = { .w = &work };

	int rc = emul_decode_opcode(&work, &x.d, insn, len);
	if (rc == 0)
		rc = dispatch(&x);
	if (rc == DECODE_TOO_LONG) {
		x.name = "invalid (longer than 15 bytes)";
		rc = raise_fault(&x, VEC_GP, 0);
	}
	if (rc == -EINVAL)
		return err_set(EINVAL, "emulation assist: the %u instruction bytes end inside the instruction", len);
	if (rc == -ENOSYS)
		return err_set(ENOSYS, "emulation assist: instruction not supported");
	if (rc < 0)
		return rc; /* -EFAULT: the memory callback reported it */
	*name = x.name ? x.name : "?";
	if (rc == EMUL_FAULT) {
		/* Fault: RIP stays at the instruction and nothing else changes. */
		c->inject_vector = work.inject_vector;
		c->inject_error_code = work.inject_error_code;
		return 0;
	}

	uint64_t rip = work.regs.rip + x.d.len;
	if (x.d.mode_bits == 32)
		rip = (uint32_t)rip;
	else if (x.d.mode_bits == 16)
		rip = (uint16_t)rip;
	work.regs.rip = rip;
	work.regs.rflags &= ~RFLAGS_RF; /* the instruction completed */
	work.regs_dirty = true;
	*c = work;
	return 0;
}
