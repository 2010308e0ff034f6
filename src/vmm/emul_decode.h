/* Internal to the emulation assist (emul.c, emul_decode.c): x86 instruction
 * decoding of the parts the assist needs — legacy prefixes, REX, VEX (only to
 * recognise it), opcode maps, ModRM/SIB/displacement and the effective address.
 * Decoding never reads beyond the byte count it is given. */
#ifndef VMSVC_EMUL_DECODE_H
#define VMSVC_EMUL_DECODE_H
#include <stdbool.h>
#include <stdint.h>

#include <vmsvc/emul.h>

#define X86_MAX_INSN_LEN 15

/* Segment register numbers as in the ModRM sreg encoding. */
enum { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_NONE = -1 };

/* Opcode maps. */
enum { MAP_ONE_BYTE, MAP_0F, MAP_0F38, MAP_0F3A };

/* Decoder results other than 0 / negative errno. */
#define DECODE_TOO_LONG 1 /* more than 15 bytes: the CPU raises #GP(0) */

struct emul_insn {
	const uint8_t *bytes;
	unsigned avail;      /* bytes available in the buffer */
	unsigned len;        /* bytes consumed so far; the full length after decode */

	unsigned mode_bits;  /* 16, 32 or 64 (code segment / long mode) */
	unsigned opsize;     /* operand size in bytes for the default-32 form: 2, 4, 8 */
	unsigned addrsize;   /* 2, 4 or 8 */

	bool p66, lock;
	uint8_t rep;         /* last of F2/F3 (0 if none): selects the SSE variant */
	int seg;             /* segment override, SEG_NONE if none */
	uint8_t rex;         /* REX byte (0x40..0x4f) or 0 */
	bool vex;            /* the opcode came after a VEX prefix (C4/C5) */
	uint8_t vex_pp;      /* VEX.pp: implied 66/F3/F2 */
	uint8_t vex_vvvv;    /* VEX.vvvv, already inverted back (0..15) */
	bool vex_l, vex_w;
	bool vex_bad_prefix; /* 66/F2/F3/F0/REX preceded VEX: #UD */

	unsigned map;        /* MAP_* */
	uint8_t op;          /* opcode byte within the map */

	/* ModRM (valid after emul_decode_modrm). reg and rm include REX.R / REX.B. */
	bool has_modrm;
	uint8_t modrm, mod, reg, rm;
	bool is_mem;
	int mem_seg;         /* effective segment of the memory operand */
	uint64_t ea;         /* effective address (offset within the segment) */
	uint64_t la;         /* linear address: segment base applied, truncated for 32-bit */
	bool la_canonical;   /* false if la is non-canonical in 64-bit mode */
};

static inline bool rex_w(const struct emul_insn *d) { return d->rex & 8; }

/* Parse prefixes and the opcode (through 0F / 0F 38 / 0F 3A escapes). Returns 0,
 * -EINVAL if the buffer ends first, DECODE_TOO_LONG if more than 15 bytes. */
int emul_decode_opcode(const struct emul_cpu *c, struct emul_insn *d,
		       const uint8_t *bytes, unsigned avail);

/* Parse ModRM, SIB and displacement; imm_len is the size of an immediate that
 * follows (needed for RIP-relative addresses). Computes ea/la and the final length.
 * Returns 0, -EINVAL (truncated), -ENOSYS (16-bit addressing with memory operand),
 * DECODE_TOO_LONG. */
int emul_decode_modrm(const struct emul_cpu *c, struct emul_insn *d, unsigned imm_len);

/* Pointer to general-purpose register n (0..15, x86 encoding order) in regs. */
__u64 *emul_gpr(struct kvm_regs *regs, unsigned n);

#endif
