/* Emulation assist, FPU side: x87 control (fnstsw, fnstcw, fldcw, fninit,
 * fnclex, fwait), emms, vzeroupper, SSE moves and logic, MXCSR, and the XSAVE
 * family for the x87, SSE and AVX state components. The state is KVM's
 * standard-format XSAVE buffer (legacy area, header at 512, AVX at 576). */
#include "vmm/emul_exec.h"

/* ---- x87 / MMX control -------------------------------------------------- */

int emul_fwait(struct emul_ctx *x)
{
	x->name = "fwait";
	if ((x->w->sregs.cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
		return raise_fault(x, VEC_NM, -1);
	/* Pending unmasked x87 exceptions would raise #MF here; the guests this
	 * assist serves run with exceptions masked, so this is a no-op. */
	return 0;
}

/* FSW.ES and FSW.B summarise "an unmasked exception is pending". */
static void fsw_update_summary(struct emul_cpu *w)
{
	uint16_t fsw = fx_get16(w, FX_FSW), fcw = fx_get16(w, FX_FCW);
	if (fsw & ~fcw & 0x3f)
		fsw |= 0x8080;
	else
		fsw &= (uint16_t)~0x8080;
	fx_put16(w, FX_FSW, fsw);
}

int emul_esc_d9(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	uint8_t buf[2];
	int rc;

	if (!d->is_mem)
		return -ENOSYS;
	switch (d->reg & 7) {
	case 5: /* fldcw m16 */
		x->name = "fldcw";
		if ((rc = check_x87(x)) || (rc = mem_check(x, 1)) ||
		    (rc = mem_read(x, d->la, buf, 2)))
			return rc;
		/* As measured on hardware: bit 6 reads as 1, bits 7 and 13-15 as 0. */
		fx_put16(x->w, FX_FCW, (uint16_t)(((buf[0] | buf[1] << 8) & 0x1f3f) | 0x40));
		fsw_update_summary(x->w);
		mark_xstate(x->w, XFEAT_X87);
		return 0;
	case 7: /* fnstcw m16 */
		x->name = "fnstcw";
		if ((rc = check_x87(x)) || (rc = mem_check(x, 1)))
			return rc;
		memcpy(buf, fx(x->w) + FX_FCW, 2);
		return mem_write(x, d->la, buf, 2);
	default:
		return -ENOSYS;
	}
}

int emul_esc_db(struct emul_ctx *x)
{
	struct emul_cpu *w = x->w;
	int rc;

	switch (x->d.modrm) {
	case 0xe2:
		x->name = "fnclex";
		if ((rc = check_x87(x)))
			return rc;
		/* Clears IE DE ZE OE UE PE SF ES B. */
		fx_put16(w, FX_FSW, fx_get16(w, FX_FSW) & (uint16_t)~0x80ff);
		mark_xstate(w, XFEAT_X87);
		return 0;
	case 0xe3:
		x->name = "fninit";
		if ((rc = check_x87(x)))
			return rc;
		fx_put16(w, FX_FCW, FCW_INIT);
		fx_put16(w, FX_FSW, 0);
		fx(w)[FX_FTW] = 0; /* abridged tag: all empty */
		memset(fx(w) + FX_FOP, 0, FX_MXCSR - FX_FOP); /* FOP, FIP, FDP */
		mark_xstate(w, XFEAT_X87);
		return 0;
	default:
		return -ENOSYS;
	}
}

int emul_esc_dd(struct emul_ctx *x)
{
	int rc;
	if (!x->d.is_mem || (x->d.reg & 7) != 7)
		return -ENOSYS;
	x->name = "fnstsw";
	if ((rc = check_x87(x)) || (rc = mem_check(x, 1)))
		return rc;
	return mem_write(x, x->d.la, fx(x->w) + FX_FSW, 2);
}

int emul_esc_df(struct emul_ctx *x)
{
	int rc;
	if (x->d.modrm != 0xe0)
		return -ENOSYS;
	x->name = "fnstsw";
	if ((rc = check_x87(x)))
		return rc;
	gpr_write(x, 0, 2, fx_get16(x->w, FX_FSW));
	return 0;
}

int emul_emms(struct emul_ctx *x)
{
	if (x->d.p66 || x->d.rep)
		return -ENOSYS;
	x->name = "emms";
	if (x->w->sregs.cr0 & CR0_EM)
		return raise_fault(x, VEC_UD, -1);
	if (x->w->sregs.cr0 & CR0_TS)
		return raise_fault(x, VEC_NM, -1);
	fx(x->w)[FX_FTW] = 0;
	mark_xstate(x->w, XFEAT_X87);
	return 0;
}

/* ---- VEX: vzeroupper ---------------------------------------------------- */

int emul_vex(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	struct emul_cpu *w = x->w;
	if (d->map != MAP_0F || d->op != 0x77 || d->vex_l || d->vex_pp)
		return -ENOSYS;
	x->name = "vzeroupper";
	if (d->vex_bad_prefix || d->vex_vvvv != 0 || !(w->sregs.cr4 & CR4_OSXSAVE) ||
	    (xcr0(w) & (XFEAT_SSE | XFEAT_AVX)) != (XFEAT_SSE | XFEAT_AVX))
		return raise_fault(x, VEC_UD, -1);
	if (w->sregs.cr0 & CR0_TS)
		return raise_fault(x, VEC_NM, -1);
	/* Zero bits 255:128 (AVX component, offset 576 in KVM's standard-format
	 * buffer) of the registers the mode can address. In 64-bit mode all 16 are
	 * cleared, so the AVX and ZMM_Hi256 components return to their init state:
	 * clearing their XSTATE_BV bits makes KVM_SET_XSAVE zero them (including
	 * any AVX-512 upper halves, whose offset we do not know). */
	uint8_t *hdr = fx(w) + XS_HDR;
	uint64_t bv = get64(hdr);
	if (d->mode_bits == 64) {
		memset(fx(w) + XS_AVX, 0, XS_AVX_SIZE);
		put64(hdr, bv & ~(XFEAT_AVX | XFEAT_ZMM_HI256));
	} else {
		if (bv & XFEAT_ZMM_HI256)
			return -ENOSYS;
		memset(fx(w) + XS_AVX, 0, 8 * 16);
	}
	w->xsave_dirty = true;
	return 0;
}

/* ---- SSE data movement and logic ----------------------------------------- */

/* Source operand xmm/m(size): register rm or memory (16-byte alignment
 * required for legacy-SSE m128 operands unless the instruction is unaligned). */
static int sse_src(struct emul_ctx *x, unsigned size, bool align, uint8_t out[16])
{
	memset(out, 0, 16);
	if (!x->d.is_mem) {
		memcpy(out, xmm(x->w, x->d.rm), size);
		return 0;
	}
	int rc = mem_check(x, align ? 16 : 1);
	if (rc)
		return rc;
	return mem_read(x, x->d.la, out, size);
}

int emul_sse_logic(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	bool ps_pd = d->op >= 0x54 && d->op <= 0x57; /* and/andn/or/xor ps (none) or pd (66) */
	int rc;

	if (d->rep || (!ps_pd && !d->p66)) /* no prefix on the integer forms = MMX */
		return -ENOSYS;
	switch (d->op) {
	case 0x54: x->name = d->p66 ? "andpd" : "andps"; break;
	case 0x55: x->name = d->p66 ? "andnpd" : "andnps"; break;
	case 0x56: x->name = d->p66 ? "orpd" : "orps"; break;
	case 0x57: x->name = d->p66 ? "xorpd" : "xorps"; break;
	case 0x74: x->name = "pcmpeqb"; break;
	case 0x75: x->name = "pcmpeqw"; break;
	case 0x76: x->name = "pcmpeqd"; break;
	case 0xdb: x->name = "pand"; break;
	case 0xdf: x->name = "pandn"; break;
	case 0xeb: x->name = "por"; break;
	case 0xef: x->name = "pxor"; break;
	default: return -ENOSYS;
	}
	uint8_t src[16];
	if ((rc = check_sse(x)) || (rc = sse_src(x, 16, true, src)))
		return rc;
	uint8_t *dst = xmm(x->w, d->reg);
	unsigned lane = d->op == 0x74 ? 1 : d->op == 0x75 ? 2 : 4;
	for (unsigned i = 0; i < 16; i++) {
		switch (d->op) {
		case 0x54: case 0xdb: dst[i] &= src[i]; break;
		case 0x55: case 0xdf: dst[i] = (uint8_t)(~dst[i] & src[i]); break;
		case 0x56: case 0xeb: dst[i] |= src[i]; break;
		case 0x57: case 0xef: dst[i] ^= src[i]; break;
		default: break;
		}
	}
	if (d->op >= 0x74 && d->op <= 0x76) {
		for (unsigned i = 0; i < 16; i += lane) {
			uint8_t eq = memcmp(dst + i, src + i, lane) == 0 ? 0xff : 0;
			memset(dst + i, eq, lane);
		}
	}
	mark_xstate(x->w, XFEAT_SSE);
	return 0;
}

/* Full 128-bit moves: 0F 10/11 (movups/movupd), 0F 28/29 (movaps/movapd),
 * 0F 6F/7F (66: movdqa, F3: movdqu). */
int emul_sse_mov128(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	bool store, align;
	int rc;

	switch (d->op) {
	case 0x10: case 0x11:
		if (d->rep)
			return -ENOSYS; /* movss/movsd */
		x->name = d->p66 ? "movupd" : "movups";
		store = d->op == 0x11;
		align = false;
		break;
	case 0x28: case 0x29:
		if (d->rep)
			return -ENOSYS;
		x->name = d->p66 ? "movapd" : "movaps";
		store = d->op == 0x29;
		align = true;
		break;
	default: /* 6F / 7F */
		if (d->rep == 0xf3) {
			x->name = "movdqu";
			align = false;
		} else if (d->p66 && !d->rep) {
			x->name = "movdqa";
			align = true;
		} else {
			return -ENOSYS; /* MMX movq */
		}
		store = d->op == 0x7f;
		break;
	}
	if ((rc = check_sse(x)))
		return rc;
	if (!store) {
		uint8_t src[16];
		if ((rc = sse_src(x, 16, align, src)))
			return rc;
		memcpy(xmm(x->w, d->reg), src, 16);
	} else if (!d->is_mem) {
		memmove(xmm(x->w, d->rm), xmm(x->w, d->reg), 16);
	} else {
		if ((rc = mem_check(x, align ? 16 : 1)) ||
		    (rc = mem_write(x, d->la, xmm(x->w, d->reg), 16)))
			return rc;
		return 0; /* no register state changed */
	}
	mark_xstate(x->w, XFEAT_SSE);
	return 0;
}

/* 66 0F 6E: movd/movq xmm, r/m32/64 (zero-extended into the xmm register). */
int emul_movd_load(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	unsigned size = rex_w(d) ? 8 : 4;
	uint64_t v;
	int rc;

	if (!d->p66 || d->rep)
		return -ENOSYS;
	x->name = size == 8 ? "movq" : "movd";
	if ((rc = check_sse(x)) || (rc = rm_read(x, size, &v)))
		return rc;
	uint8_t *dst = xmm(x->w, d->reg);
	memset(dst, 0, 16);
	memcpy(dst, &v, 8);
	mark_xstate(x->w, XFEAT_SSE);
	return 0;
}

/* 66 0F 7E: movd/movq r/m32/64, xmm.  F3 0F 7E: movq xmm, xmm/m64. */
int emul_0f7e(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	int rc;

	if (d->rep == 0xf3) {
		uint8_t src[16];
		x->name = "movq";
		if ((rc = check_sse(x)) || (rc = sse_src(x, 8, false, src)))
			return rc;
		memcpy(xmm(x->w, d->reg), src, 16); /* sse_src zeroed bytes 8..15 */
		mark_xstate(x->w, XFEAT_SSE);
		return 0;
	}
	if (!d->p66 || d->rep)
		return -ENOSYS;
	unsigned size = rex_w(d) ? 8 : 4;
	x->name = size == 8 ? "movq" : "movd";
	if ((rc = check_sse(x)))
		return rc;
	uint64_t v = get64(xmm(x->w, d->reg));
	if (!d->is_mem) {
		gpr_write(x, d->rm, size, v);
		return 0;
	}
	if ((rc = mem_check(x, 1)))
		return rc;
	return mem_write(x, d->la, &v, size);
}

/* 66 0F D6: movq xmm/m64, xmm (register destination: upper half zeroed). */
int emul_movq_store(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	int rc;

	if (!d->p66 || d->rep)
		return -ENOSYS;
	x->name = "movq";
	if ((rc = check_sse(x)))
		return rc;
	uint64_t v = get64(xmm(x->w, d->reg));
	if (d->is_mem) {
		if ((rc = mem_check(x, 1)))
			return rc;
		return mem_write(x, d->la, &v, 8);
	}
	uint8_t *dst = xmm(x->w, d->rm);
	memset(dst, 0, 16);
	put64(dst, v);
	mark_xstate(x->w, XFEAT_SSE);
	return 0;
}

/* ---- 0F AE: MXCSR, XSAVE family, fences, cache flushes ------------------ */

/* Components this implementation can move between KVM's buffer and memory. */
#define XFEAT_HANDLED (XFEAT_X87 | XFEAT_SSE | XFEAT_AVX)


int emul_do_xsave(struct emul_ctx *x, enum xsave_kind kind)
{
	struct emul_insn *d = &x->d;
	struct emul_cpu *w = x->w;
	uint8_t img[XS_AVX + XS_AVX_SIZE];
	int rc;

	if ((rc = check_xsave(x)) || (rc = mem_check(x, 64)))
		return rc;
	uint64_t rfbm = xcr0(w) & edx_eax(w);
	if (rfbm & ~XFEAT_HANDLED)
		return -ENOSYS;
	/* x87 and SSE are reported in use (their data is always written); AVX as
	 * KVM reports it. */
	uint64_t xinuse = XFEAT_X87 | XFEAT_SSE | (get64(fx(w) + XS_HDR) & XFEAT_AVX);
	unsigned size = (rfbm & XFEAT_AVX) ? sizeof(img) : XS_AVX;
	unsigned nxmm = xmm_count(x);

	/* Read the whole image first: XSAVE leaves some bytes (e.g. 464..511, used
	 * by software) untouched, and a single write keeps memory all-or-nothing. */
	if ((rc = mem_read(x, d->la, img, size)))
		return rc;
	if (rfbm & XFEAT_X87) {
		memcpy(img, fx(w), FX_FIP);          /* FCW FSW FTW FOP */
		img[5] = 0;
		if (rex_w(d)) {
			memcpy(img + FX_FIP, fx(w) + FX_FIP, 16);
		} else {
			/* 32-bit form: FIP, FCS, FDP, FDS; selectors are not tracked. */
			memset(img + FX_FIP, 0, 16);
			memcpy(img + FX_FIP, fx(w) + FX_FIP, 4);
			memcpy(img + FX_FDP, fx(w) + FX_FDP, 4);
		}
		memcpy(img + FX_ST, fx(w) + FX_ST, FX_XMM - FX_ST);
	}
	if (rfbm & (XFEAT_SSE | XFEAT_AVX))
		memcpy(img + FX_MXCSR, fx(w) + FX_MXCSR, 8); /* MXCSR, MXCSR_MASK */
	if (rfbm & XFEAT_SSE)
		memcpy(img + FX_XMM, fx(w) + FX_XMM, 16 * nxmm);
	if ((rfbm & XFEAT_AVX) && (kind != XSAVE_COMPACT || (xinuse & XFEAT_AVX)))
		memcpy(img + XS_AVX, fx(w) + XS_AVX, 16 * nxmm);

	uint8_t *hdr = img + XS_HDR;
	if (kind == XSAVE_COMPACT) {
		put64(hdr, rfbm & xinuse);
		put64(hdr + 8, XCOMP_COMPACTED | rfbm);
	} else {
		put64(hdr, (get64(hdr) & ~rfbm) | (rfbm & xinuse));
	}
	return mem_write(x, d->la, img, size);
}

static int do_xrstor(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	struct emul_cpu *w = x->w;
	uint8_t hdr[64], img[XS_AVX + XS_AVX_SIZE];
	int rc;

	if ((rc = check_xsave(x)) || (rc = mem_check(x, 64)))
		return rc;
	if ((rc = mem_read(x, d->la + XS_HDR, hdr, sizeof(hdr))))
		return rc;
	uint64_t xcr = xcr0(w), rfbm = xcr & edx_eax(w);
	uint64_t xstate_bv = get64(hdr), xcomp_bv = get64(hdr + 8);
	bool compacted = xcomp_bv & XCOMP_COMPACTED;
	static const uint8_t zero[48];

	if (compacted) {
		uint64_t comp = xcomp_bv & ~XCOMP_COMPACTED;
		if ((comp & ~xcr) || (xstate_bv & ~comp) || memcmp(hdr + 16, zero, 48))
			return raise_fault(x, VEC_GP, 0);
		/* Component 2 sits right after the header in compacted form too, so
		 * the layout of x87/SSE/AVX is the same as the standard form. */
	} else {
		if ((xstate_bv & ~xcr) || memcmp(hdr + 8, zero, 16))
			return raise_fault(x, VEC_GP, 0);
	}
	uint64_t load = rfbm & xstate_bv;
	if (load & ~XFEAT_HANDLED)
		return -ENOSYS; /* data for a component we cannot place */
	unsigned size = (load & XFEAT_AVX) ? sizeof(img) : XS_HDR;
	if ((rc = mem_read(x, d->la, img, size)))
		return rc;

	uint32_t mxcsr = MXCSR_INIT;
	bool set_mxcsr = false;
	if (compacted) {
		if (rfbm & XFEAT_SSE) {
			set_mxcsr = true;
			if (xstate_bv & XFEAT_SSE)
				memcpy(&mxcsr, img + FX_MXCSR, 4);
		}
	} else if (rfbm & (XFEAT_SSE | XFEAT_AVX)) {
		set_mxcsr = true;
		memcpy(&mxcsr, img + FX_MXCSR, 4);
	}
	if (set_mxcsr && (mxcsr & ~mxcsr_mask(w)))
		return raise_fault(x, VEC_GP, 0);

	/* All checks passed: update the state. */
	unsigned nxmm = xmm_count(x);
	if (rfbm & XFEAT_X87) {
		if (load & XFEAT_X87) {
			memcpy(fx(w), img, FX_FIP);
			fx(w)[5] = 0;
			if (rex_w(d)) {
				memcpy(fx(w) + FX_FIP, img + FX_FIP, 16);
			} else {
				memset(fx(w) + FX_FIP, 0, 16);
				memcpy(fx(w) + FX_FIP, img + FX_FIP, 4);
				memcpy(fx(w) + FX_FDP, img + FX_FDP, 4);
			}
			memcpy(fx(w) + FX_ST, img + FX_ST, FX_XMM - FX_ST);
		} else {
			memset(fx(w), 0, FX_MXCSR);
			fx_put16(w, FX_FCW, FCW_INIT);
			memset(fx(w) + FX_ST, 0, FX_XMM - FX_ST);
		}
	}
	if (set_mxcsr)
		fx_put32(w, FX_MXCSR, mxcsr);
	if (rfbm & XFEAT_SSE) {
		if (load & XFEAT_SSE)
			memcpy(fx(w) + FX_XMM, img + FX_XMM, 16 * nxmm);
		else
			memset(fx(w) + FX_XMM, 0, 16 * nxmm);
	}
	if (rfbm & XFEAT_AVX) {
		if (load & XFEAT_AVX)
			memcpy(fx(w) + XS_AVX, img + XS_AVX, 16 * nxmm);
		else
			memset(fx(w) + XS_AVX, 0, 16 * nxmm);
	}
	/* Components in RFBM but not in XSTATE_BV are initialised: clearing their
	 * bit makes KVM_SET_XSAVE do that, also for components we do not place.
	 * x87 and SSE stay marked since their data (and MXCSR) is explicit. */
	uint8_t *kh = fx(w) + XS_HDR;
	uint64_t bv = (get64(kh) & ~rfbm) | (rfbm & xstate_bv);
	if (rfbm & XFEAT_X87)
		bv |= XFEAT_X87;
	if (set_mxcsr || (rfbm & XFEAT_SSE))
		bv |= XFEAT_SSE;
	put64(kh, bv);
	w->xsave_dirty = true;
	return 0;
}

int emul_0fae(struct emul_ctx *x)
{
	struct emul_insn *d = &x->d;
	unsigned r = d->reg & 7;
	int rc;

	if (!d->is_mem) {
		/* lfence / mfence / sfence: nothing to order in a completed exit. */
		if (d->p66 || d->rep || r < 5)
			return -ENOSYS;
		x->name = r == 5 ? "lfence" : r == 6 ? "mfence" : "sfence";
		return 0;
	}
	if (d->rep)
		return -ENOSYS;
	if (d->p66) {
		/* clwb / clflushopt: the guest's memory is host memory, nothing to do. */
		if (r != 6 && r != 7)
			return -ENOSYS;
		x->name = r == 6 ? "clwb" : "clflushopt";
		return mem_check(x, 1);
	}
	switch (r) {
	case 2: { /* ldmxcsr m32 */
		uint8_t buf[4];
		x->name = "ldmxcsr";
		if ((rc = check_sse(x)) || (rc = mem_check(x, 1)) ||
		    (rc = mem_read(x, d->la, buf, 4)))
			return rc;
		uint32_t v;
		memcpy(&v, buf, 4);
		if (v & ~mxcsr_mask(x->w))
			return raise_fault(x, VEC_GP, 0);
		fx_put32(x->w, FX_MXCSR, v);
		mark_xstate(x->w, XFEAT_SSE);
		return 0;
	}
	case 3: /* stmxcsr m32 */
		x->name = "stmxcsr";
		if ((rc = check_sse(x)) || (rc = mem_check(x, 1)))
			return rc;
		return mem_write(x, d->la, fx(x->w) + FX_MXCSR, 4);
	case 4:
		x->name = rex_w(d) ? "xsave64" : "xsave";
		return emul_do_xsave(x, XSAVE_STD);
	case 5:
		x->name = rex_w(d) ? "xrstor64" : "xrstor";
		return do_xrstor(x);
	case 6:
		x->name = rex_w(d) ? "xsaveopt64" : "xsaveopt";
		return emul_do_xsave(x, XSAVE_OPT);
	case 7:
		x->name = "clflush";
		return mem_check(x, 1);
	default:
		return -ENOSYS;
	}
}
