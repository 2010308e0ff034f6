/* Pointer and code checks: sys_call_table, the x64_sys_call dispatcher and
 * the IDT.
 *   sys_call_table[n] must point into kernel text, at __x64_sys_<name of n>
 *   (or the ni_syscall stub); an entry pointing into a module or anywhere
 *   else is a hook. Since the 2024 BHI fix (backported to 6.1) x64_sys_call
 *   dispatches with a switch and the table is no longer used for dispatch, so
 *   the dispatcher's code matters too: its bytes are covered by the text
 *   baseline (vmi_check_text), and its first instruction, like that of every
 *   syscall handler, must not be a jump out of kernel text (an inline hook).
 *   idt_table: every present gate must target kernel text; architectural
 *   vectors must target their asm_exc_* entry. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"
#include "services/vmi_syscalls_x64.h"

#define MAX_SYSCALLS 1024
#define NSYSNAMES (sizeof(vmi_x64_syscall_names) / sizeof(vmi_x64_syscall_names[0]))

/* Where does an inline hook at va jump to? Recognises jmp rel32, jmp rel8 is
 * too short to leave text, jmp [rip+0] imm64, movabs rax/r11, imm64; jmp reg,
 * push imm32; ret. Skips a leading endbr64. false if va starts otherwise. */
static bool jump_target(const struct vmi_kernel *k, uint64_t va, uint64_t *target)
{
	uint8_t c[16];
	if (vmi_kread(k, va, c, sizeof(c)) < 0) {
		err_clear();
		return false;
	}
	unsigned i = 0;
	if (c[0] == 0xf3 && c[1] == 0x0f && c[2] == 0x1e && c[3] == 0xfa)
		i = 4; /* endbr64 */
	const uint8_t *p = c + i;
	int32_t rel;
	uint64_t imm;
	if (p[0] == 0xe9) {
		memcpy(&rel, p + 1, 4);
		*target = va + i + 5 + (int64_t)rel;
		return true;
	}
	if (p[0] == 0xff && p[1] == 0x25 && i + 14 <= sizeof(c)) { /* jmp *0(%rip); .quad target */
		memcpy(&rel, p + 2, 4);
		if (rel == 0) {
			memcpy(target, p + 6, 8);
			return true;
		}
		return false;
	}
	if (i == 0 && (p[0] == 0x48 || p[0] == 0x49) && p[1] == 0xb8 && p[10] == (p[0] == 0x48 ? 0xff : 0x41)) {
		memcpy(&imm, p + 2, 8); /* movabs $imm, %rax / %r8; jmp *%reg */
		*target = imm;
		return true;
	}
	if (p[0] == 0x68 && p[5] == 0xc3) { /* push imm32 (sign-extended); ret */
		memcpy(&rel, p + 1, 4);
		*target = (uint64_t)(int64_t)rel;
		return true;
	}
	return false;
}

static int check_inline(const struct vmi_kernel *k, const struct vmi_modmap *mm, const char *fn_name, uint64_t fn,
			const char *context, struct vmi_findings *out)
{
	uint64_t target;
	char d[160], what[160];
	if (!jump_target(k, fn, &target) || vmi_describe_addr(k, mm, target, d, sizeof(d)) == 0)
		return 0;
	snprintf(what, sizeof(what), "inline hook: %s starts with a jump out of kernel text", fn_name);
	return vmi_finding_add(out, VMI_SEV_CRITICAL, "syscalls", what, "%s at %#" PRIx64 "%s jumps to %#" PRIx64 " (%s)",
			       fn_name, fn, context, target, d);
}

/* Number of table entries: up to the next symbol (the table has no size in
 * kallsyms), at most MAX_SYSCALLS. */
static unsigned table_len(const struct vmi_kernel *k, uint64_t table)
{
	const struct vmi_sym *s = vmi_ksym_at(&k->ks, table);
	if (!s)
		return 0;
	const struct vmi_sym *end = k->ks.sym + k->ks.n;
	while (s < end && s->addr <= table)
		s++;
	uint64_t n = s < end ? (s->addr - table) / 8 : MAX_SYSCALLS;
	return n > MAX_SYSCALLS ? MAX_SYSCALLS : (unsigned)n;
}

/* Entry points whose name differs from the syscall's (syscall_64.tbl). */
static const struct {
	unsigned nr;
	const char *entry;
} entry_alias[] = {
	{ 4, "newstat" }, { 5, "newfstat" }, { 6, "newlstat" }, { 40, "sendfile64" }, { 63, "newuname" },
	{ 166, "umount" },
};

static bool expected_handler(const char *sym, unsigned nr)
{
	for (size_t i = 0; i < sizeof(entry_alias) / sizeof(entry_alias[0]); i++)
		if (entry_alias[i].nr == nr)
			return !strncmp(sym, "__x64_sys_", 10) && !strcmp(sym + 10, entry_alias[i].entry);
	if (!strcmp(sym, "__x64_sys_ni_syscall") || !strcmp(sym, "sys_ni_syscall") ||
	    !strcmp(sym, "__x64_sys_ni_syscall.cold"))
		return true;
	if (nr >= NSYSNAMES || !vmi_x64_syscall_names[nr])
		return !strncmp(sym, "__x64_sys_", 10);
	return !strncmp(sym, "__x64_sys_", 10) && !strcmp(sym + 10, vmi_x64_syscall_names[nr]);
}

int vmi_check_syscalls(const struct vmi_kernel *k, struct vmi_findings *out)
{
	uint64_t table, stext, etext;
	if (vmi_ksym(k, "sys_call_table", &table) < 0)
		return vmi_finding_cannot(out, "syscalls", err_msg());
	if (!vmi_text_bounds(k, &stext, &etext))
		return vmi_finding_cannot(out, "syscalls", "no _stext/_etext in kallsyms");
	unsigned n = table_len(k, table);
	uint64_t *e = calloc(n ? n : 1, 8);
	if (!e)
		return err_set(ENOMEM, "out of memory");
	if (n == 0 || vmi_kread(k, table, e, (uint64_t)8 * n) < 0) {
		free(e);
		return vmi_finding_cannot(out, "syscalls", n ? err_msg() : "sys_call_table has no extent");
	}
	/* The extent comes from the next symbol: trailing zeros are alignment
	 * padding, not entries (a real entry is never NULL). */
	while (n > 0 && e[n - 1] == 0)
		n--;
	struct vmi_modmap mm;
	int rc = vmi_modmap_build(k, &mm);
	if (rc < 0) {
		free(e);
		return rc;
	}
	for (unsigned i = 0; i < n && rc == 0; i++) {
		const char *name = i < NSYSNAMES && vmi_x64_syscall_names[i] ? vmi_x64_syscall_names[i] : "?";
		char d[160], what[160];
		int where = vmi_describe_addr(k, &mm, e[i], d, sizeof(d));
		const struct vmi_sym *s = vmi_ksym_at(&k->ks, e[i]);
		if (where != 0) {
			snprintf(what, sizeof(what), "sys_call_table[%u] (%s) hooked: handler outside kernel text", i, name);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "syscalls", what,
					     "entry at %#" PRIx64 " = %#" PRIx64 " -> %s", table + (uint64_t)8 * i, e[i], d);
		} else if (!s || s->addr != e[i] || !expected_handler(vmi_ksym_name(&k->ks, s), i)) {
			snprintf(what, sizeof(what), "sys_call_table[%u] (%s) points at the wrong kernel function", i, name);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "syscalls", what,
					     "entry at %#" PRIx64 " = %#" PRIx64 " -> %s, expected __x64_sys_%s",
					     table + (uint64_t)8 * i, e[i], d, name);
		} else {
			char ctx[64];
			snprintf(ctx, sizeof(ctx), " (syscall %u %s)", i, name);
			rc = check_inline(k, &mm, vmi_ksym_name(&k->ks, s), e[i], ctx, out);
		}
	}
	uint64_t disp;
	if (rc == 0 && vmi_ksym_addr(&k->ks, "x64_sys_call", &disp) == 0)
		rc = check_inline(k, &mm, "x64_sys_call", disp, " (the syscall dispatcher)", out);
	uint64_t entry;
	if (rc == 0 && vmi_ksym_addr(&k->ks, "entry_SYSCALL_64", &entry) == 0)
		rc = check_inline(k, &mm, "entry_SYSCALL_64", entry, " (the syscall entry)", out);
	vmi_modmap_free(&mm);
	free(e);
	return rc;
}

/* ---- IDT ---- */

/* Architectural vectors and their 6.x entry points (arch/x86/include/asm/idtentry.h). */
static const char *const idt_expected[32] = {
	[0] = "asm_exc_divide_error",  [1] = "asm_exc_debug",
	[2] = "asm_exc_nmi",           [3] = "asm_exc_int3",
	[4] = "asm_exc_overflow",      [5] = "asm_exc_bounds",
	[6] = "asm_exc_invalid_op",    [7] = "asm_exc_device_not_available",
	[8] = "asm_exc_double_fault",  [9] = "asm_exc_coproc_segment_overrun",
	[10] = "asm_exc_invalid_tss",  [11] = "asm_exc_segment_not_present",
	[12] = "asm_exc_stack_segment", [13] = "asm_exc_general_protection",
	[14] = "asm_exc_page_fault",   [15] = "asm_exc_spurious_interrupt_bug",
	[16] = "asm_exc_coprocessor_error", [17] = "asm_exc_alignment_check",
	[18] = "asm_exc_machine_check", [19] = "asm_exc_simd_coprocessor_error",
	[20] = "asm_exc_virtualization_exception", [21] = "asm_exc_control_protection",
	[29] = "asm_exc_vmm_communication",
};

int vmi_check_idt(const struct vmi_kernel *k, struct vmi_findings *out)
{
	uint64_t idt, stext, etext;
	if (vmi_ksym(k, "idt_table", &idt) < 0)
		return vmi_finding_cannot(out, "idt", err_msg());
	if (!vmi_text_bounds(k, &stext, &etext))
		return vmi_finding_cannot(out, "idt", "no _stext/_etext in kallsyms");
	uint8_t g[256][16];
	if (vmi_kread(k, idt, g, sizeof(g)) < 0)
		return vmi_finding_cannot(out, "idt", err_msg());
	struct vmi_modmap mm;
	int rc = vmi_modmap_build(k, &mm);
	if (rc < 0)
		return rc;
	/* Reserved exception vectors that no handler claims keep the gate set up
	 * at boot: early_idt_handler_array[v] in init text (EARLY_IDT_HANDLER_SIZE
	 * is 9 bytes, 13 with IBT), freed after boot but never replaced. */
	uint64_t early = 0;
	vmi_ksym_addr(&k->ks, "early_idt_handler_array", &early);
	unsigned present = 0;
	for (unsigned v = 0; v < 256 && rc == 0; v++) {
		/* gate_struct: offset_low u16, segment u16, bits u16 (ist 0-2,
		 * type 8-11, dpl 13-14, p 15), offset_middle u16, offset_high u32. */
		uint16_t lo, bits, mid;
		uint32_t hi;
		memcpy(&lo, g[v], 2);
		memcpy(&bits, g[v] + 4, 2);
		memcpy(&mid, g[v] + 6, 2);
		memcpy(&hi, g[v] + 8, 4);
		if (!(bits & 0x8000))
			continue;
		present++;
		uint64_t target = lo | (uint64_t)mid << 16 | (uint64_t)hi << 32;
		char d[160], what[160];
		int where = vmi_describe_addr(k, &mm, target, d, sizeof(d));
		const struct vmi_sym *s = vmi_ksym_at(&k->ks, target);
		if (v < 32 && early && (target == early + 9ULL * v || target == early + 13ULL * v))
			continue;
		if (where != 0) {
			snprintf(what, sizeof(what), "IDT vector %u (%#x) hooked: handler outside kernel text", v, v);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "idt", what, "gate at %#" PRIx64 " -> %#" PRIx64 " (%s)",
					     idt + (uint64_t)16 * v, target, d);
		} else if (v < 32 && idt_expected[v] &&
			   (!s || s->addr != target || strcmp(vmi_ksym_name(&k->ks, s), idt_expected[v]))) {
			snprintf(what, sizeof(what), "IDT vector %u does not point at %s", v, idt_expected[v]);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "idt", what, "gate at %#" PRIx64 " -> %#" PRIx64 " (%s)",
					     idt + (uint64_t)16 * v, target, d);
		}
	}
	if (rc == 0 && present < 20)
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "idt", "the IDT is nearly empty",
				     "only %u present gates in idt_table at %#" PRIx64, present, idt);
	vmi_modmap_free(&mm);
	return rc;
}
