/* x86 decoding for the emulation assist: prefixes, opcode maps, ModRM/SIB,
 * displacement and effective address. Every byte access is bounds-checked
 * against the buffer length given by the caller (the guest controls the bytes). */
#include <errno.h>
#include <string.h>

#include "vmm/emul_decode.h"

#define EFER_LMA (1ull << 10)
#define CR0_PE (1ull << 0)
#define CR4_LA57 (1ull << 12)
#define RFLAGS_VM (1ull << 17)

__u64 *emul_gpr(struct kvm_regs *r, unsigned n)
{
	/* struct kvm_regs is not in encoding order. */
	switch (n & 15) {
	case 0: return &r->rax;
	case 1: return &r->rcx;
	case 2: return &r->rdx;
	case 3: return &r->rbx;
	case 4: return &r->rsp;
	case 5: return &r->rbp;
	case 6: return &r->rsi;
	case 7: return &r->rdi;
	case 8: return &r->r8;
	case 9: return &r->r9;
	case 10: return &r->r10;
	case 11: return &r->r11;
	case 12: return &r->r12;
	case 13: return &r->r13;
	case 14: return &r->r14;
	default: return &r->r15;
	}
}

/* Next byte of the instruction, or an error: the buffer ends (-EINVAL) or the
 * instruction would exceed the architectural 15-byte limit. */
static int next_byte(struct emul_insn *d, uint8_t *b)
{
	if (d->len >= X86_MAX_INSN_LEN)
		return DECODE_TOO_LONG;
	if (d->len >= d->avail)
		return -EINVAL;
	*b = d->bytes[d->len++];
	return 0;
}

static unsigned code_mode_bits(const struct emul_cpu *c)
{
	if ((c->sregs.efer & EFER_LMA) && c->sregs.cs.l)
		return 64;
	if ((c->sregs.cr0 & CR0_PE) && !(c->regs.rflags & RFLAGS_VM) && c->sregs.cs.db)
		return 32;
	return 16;
}

int emul_decode_opcode(const struct emul_cpu *c, struct emul_insn *d,
		       const uint8_t *bytes, unsigned avail)
{
	memset(d, 0, sizeof(*d));
	d->bytes = bytes;
	d->avail = avail;
	d->seg = SEG_NONE;
	d->mem_seg = SEG_NONE;
	d->mode_bits = code_mode_bits(c);
	bool mode64 = d->mode_bits == 64;
	bool addr_override = false;
	uint8_t b;
	int rc;

	for (;;) {
		if ((rc = next_byte(d, &b)))
			return rc;
		bool legacy = true;
		switch (b) {
		case 0x66: d->p66 = true; break;
		case 0x67: addr_override = true; break;
		case 0xf0: d->lock = true; break;
		case 0xf2: case 0xf3: d->rep = b; break;
		/* ES/CS/SS/DS overrides are ignored in 64-bit mode. */
		case 0x26: if (!mode64) d->seg = SEG_ES; break;
		case 0x2e: if (!mode64) d->seg = SEG_CS; break;
		case 0x36: if (!mode64) d->seg = SEG_SS; break;
		case 0x3e: if (!mode64) d->seg = SEG_DS; break;
		case 0x64: d->seg = SEG_FS; break;
		case 0x65: d->seg = SEG_GS; break;
		default:
			legacy = false;
			break;
		}
		if (legacy) {
			d->rex = 0; /* a REX followed by a legacy prefix is ignored */
			continue;
		}
		if (mode64 && (b & 0xf0) == 0x40) {
			d->rex = b;
			continue;
		}
		break;
	}

	switch (d->mode_bits) {
	case 64:
		d->opsize = rex_w(d) ? 8 : d->p66 ? 2 : 4;
		d->addrsize = addr_override ? 4 : 8;
		break;
	case 32:
		d->opsize = d->p66 ? 2 : 4;
		d->addrsize = addr_override ? 2 : 4;
		break;
	default:
		d->opsize = d->p66 ? 4 : 2;
		d->addrsize = addr_override ? 4 : 2;
		break;
	}

	/* VEX: C4/C5 are always VEX in 64-bit mode; elsewhere only when the next
	 * byte has its top two bits set (otherwise they are LES/LDS). */
	if (b == 0xc4 || b == 0xc5) {
		if (d->len >= d->avail)
			return d->len >= X86_MAX_INSN_LEN ? DECODE_TOO_LONG : -EINVAL;
		if (mode64 || (d->bytes[d->len] & 0xc0) == 0xc0) {
			uint8_t p1, p2;
			d->vex = true;
			/* 66/F2/F3/F0/REX before VEX make the instruction #UD. */
			d->vex_bad_prefix = d->p66 || d->rep || d->lock || d->rex;
			d->rex = 0;
			if ((rc = next_byte(d, &p1)))
				return rc;
			if (b == 0xc5) {
				d->map = MAP_0F;
				p2 = p1;
				if (mode64 && !(p1 & 0x80))
					d->rex = 0x44; /* VEX.R (inverted) */
			} else {
				if ((rc = next_byte(d, &p2)))
					return rc;
				switch (p1 & 0x1f) {
				case 1: d->map = MAP_0F; break;
				case 2: d->map = MAP_0F38; break;
				case 3: d->map = MAP_0F3A; break;
				default: return -ENOSYS;
				}
				if (mode64) {
					d->rex |= 0x40 | (!(p1 & 0x80) ? 4 : 0) |
						  (!(p1 & 0x40) ? 2 : 0) | (!(p1 & 0x20) ? 1 : 0);
					if (p2 & 0x80)
						d->rex |= 8;
				}
				d->vex_w = p2 & 0x80;
			}
			d->vex_vvvv = (~p2 >> 3) & 15;
			d->vex_l = p2 & 4;
			d->vex_pp = p2 & 3;
			return next_byte(d, &d->op);
		}
	}

	if (b != 0x0f) {
		d->map = MAP_ONE_BYTE;
		d->op = b;
		return 0;
	}
	if ((rc = next_byte(d, &b)))
		return rc;
	if (b == 0x38 || b == 0x3a) {
		d->map = b == 0x38 ? MAP_0F38 : MAP_0F3A;
		return next_byte(d, &d->op);
	}
	d->map = MAP_0F;
	d->op = b;
	return 0;
}

static uint64_t seg_base(const struct emul_cpu *c, int seg)
{
	switch (seg) {
	case SEG_ES: return c->sregs.es.base;
	case SEG_CS: return c->sregs.cs.base;
	case SEG_SS: return c->sregs.ss.base;
	case SEG_FS: return c->sregs.fs.base;
	case SEG_GS: return c->sregs.gs.base;
	default: return c->sregs.ds.base;
	}
}

static bool is_canonical(const struct emul_cpu *c, uint64_t la)
{
	unsigned bits = (c->sregs.cr4 & CR4_LA57) ? 57 : 48;
	int64_t sext = (int64_t)(la << (64 - bits)) >> (64 - bits);
	return (uint64_t)sext == la;
}

int emul_decode_modrm(const struct emul_cpu *c, struct emul_insn *d, unsigned imm_len)
{
	uint8_t b, sib = 0;
	int rc;

	if ((rc = next_byte(d, &b)))
		return rc;
	d->has_modrm = true;
	d->modrm = b;
	d->mod = b >> 6;
	d->reg = ((b >> 3) & 7) | ((d->rex & 4) ? 8 : 0);
	d->rm = b & 7;

	int base = -1, index = -1;
	unsigned scale = 0, disp_len = 0;
	bool rip_rel = false;

	if (d->mod == 3) {
		d->rm |= (d->rex & 1) ? 8 : 0;
	} else {
		/* 16-bit addressing (real mode / 16-bit segments) is not needed by
		 * the guests this assist is for. */
		if (d->addrsize == 2)
			return -ENOSYS;
		d->is_mem = true;
		unsigned rm3 = b & 7;
		if (rm3 == 4) {
			if ((rc = next_byte(d, &sib)))
				return rc;
			scale = sib >> 6;
			unsigned idx = ((sib >> 3) & 7) | ((d->rex & 2) ? 8 : 0);
			if (idx != 4)
				index = (int)idx;
			if ((sib & 7) == 5 && d->mod == 0)
				disp_len = 4; /* no base, disp32 */
			else
				base = (sib & 7) | ((d->rex & 1) ? 8 : 0);
		} else if (rm3 == 5 && d->mod == 0) {
			disp_len = 4;
			rip_rel = d->mode_bits == 64;
		} else {
			base = (int)(rm3 | ((d->rex & 1) ? 8 : 0));
		}
		if (d->mod == 1)
			disp_len = 1;
		else if (d->mod == 2)
			disp_len = 4;
	}

	int64_t disp = 0;
	if (disp_len == 1) {
		if ((rc = next_byte(d, &b)))
			return rc;
		disp = (int8_t)b;
	} else if (disp_len == 4) {
		uint32_t v = 0;
		for (unsigned i = 0; i < 4; i++) {
			if ((rc = next_byte(d, &b)))
				return rc;
			v |= (uint32_t)b << (8 * i);
		}
		disp = (int32_t)v;
	}

	/* The immediate only matters for the length (and RIP-relative base). */
	if (d->len + imm_len > X86_MAX_INSN_LEN)
		return DECODE_TOO_LONG;
	if (d->len + imm_len > d->avail)
		return -EINVAL;
	d->len += imm_len;

	if (!d->is_mem)
		return 0;

	struct kvm_regs regs = c->regs; /* emul_gpr wants a writable struct */
	uint64_t ea = (uint64_t)disp;
	if (rip_rel)
		ea += c->regs.rip + d->len;
	if (base >= 0)
		ea += *emul_gpr(&regs, (unsigned)base);
	if (index >= 0)
		ea += *emul_gpr(&regs, (unsigned)index) << scale;
	if (d->addrsize == 4)
		ea = (uint32_t)ea;
	d->ea = ea;

	if (d->seg != SEG_NONE)
		d->mem_seg = d->seg;
	else if (base == 4 || base == 5)
		d->mem_seg = SEG_SS;
	else
		d->mem_seg = SEG_DS;

	if (d->mode_bits == 64) {
		uint64_t sb = (d->mem_seg == SEG_FS || d->mem_seg == SEG_GS) ? seg_base(c, d->mem_seg) : 0;
		d->la = sb + ea;
		d->la_canonical = is_canonical(c, d->la);
	} else {
		d->la = (uint32_t)(seg_base(c, d->mem_seg) + ea);
		d->la_canonical = true;
	}
	return 0;
}
