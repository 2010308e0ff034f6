/* Shared helpers of the introspection checks (vmi_check*.c); not a contract. */
#ifndef VMSVC_VMI_CHECK_INTERNAL_H
#define VMSVC_VMI_CHECK_INTERNAL_H
#include <vmsvc/vmi.h>

/* x86-64 module area (MODULES_VADDR..MODULES_END, the same for 4- and 5-level
 * paging since the kernel image mapping is fixed at -2 GiB). */
#define VMI_MODULES_VADDR 0xffffffffc0000000ULL
#define VMI_MODULES_END 0xffffffffff000000ULL

/* Append a finding; -ENOMEM if the array cannot grow. */
int vmi_finding_add(struct vmi_findings *fs, enum vmi_severity sev, const char *check, const char *what,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* "check X did not run: <err_msg()>" as a warning (fail closed: a check that
 * cannot look is reported, never silently skipped). */
int vmi_finding_cannot(struct vmi_findings *fs, const char *check, const char *why);

/* Printable copy of a guest string. */
const char *vmi_printable(const char *s, char *buf, size_t len);

/* [_stext, _etext) at runtime; false if kallsyms lacks them. */
bool vmi_text_bounds(const struct vmi_kernel *k, uint64_t *stext, uint64_t *etext);

/* Module extents known to the checks (any view), for naming addresses. */
struct vmi_modmap {
	size_t n;
	struct vmi_modmap_entry {
		uint64_t mod, base, size;
		char name[57];
	} *e;
};
/* Every module reachable by the list, the sysfs kset or carving. */
int vmi_modmap_build(const struct vmi_kernel *k, struct vmi_modmap *mm);
void vmi_modmap_free(struct vmi_modmap *mm);
/* Describe where va points: "kernel text: sym+0x10", "module vmi_rk: rk_kill+0x0",
 * "module area (no module owns it)", "outside kernel and modules". Returns
 * 0 kernel text, 1 kernel image (not text), 2 a known module, 3 module area
 * without module, 4 elsewhere. */
int vmi_describe_addr(const struct vmi_kernel *k, const struct vmi_modmap *mm, uint64_t va, char *buf, size_t len);

/* Per-CPU: the address of per-CPU symbol `sym` on cpu, and the CPU count
 * (nr_cpu_ids, capped). */
int vmi_percpu_count(const struct vmi_kernel *k, unsigned *ncpu);
int vmi_percpu_addr(const struct vmi_kernel *k, const char *sym, unsigned cpu, uint64_t *va);

/* Call fn for every mapped page (4 KiB granules of larger pages too) in
 * [lo, hi) of the kernel page tables; fn returns nonzero to stop. Visits at
 * most `cap` pages. Returns the number visited or a negative errno. */
long vmi_for_each_page(const struct vmi_kernel *k, uint64_t lo, uint64_t hi, long cap,
		       int (*fn)(uint64_t va, uint64_t pa, void *arg), void *arg);

/* Optional BTF offset: false (and err cleared) if missing. */
bool vmi_off(const struct vmi_kernel *k, const char *type, const char *path, uint64_t *off);

/* Module views used by the module check and vmi_modmap_build. */
struct vmi_modview {
	uint64_t mod;
	bool in_list, in_kset, carved;
	uint32_t state;
	uint64_t base, size, list_next, list_prev;
	char name[57];
};
int vmi_module_views(const struct vmi_kernel *k, struct vmi_modview **out, size_t *n, char *why, size_t whylen);
/* Name of the module symbol containing va (module's own kallsyms), or false. */
bool vmi_module_symbol(const struct vmi_kernel *k, uint64_t mod, uint64_t va, char *buf, size_t len);
#endif
