/* Introspection checks: findings, shared helpers and the driver (vmi_check).
 * The individual checks live in vmi_check_{tasks,modules,hooks,text,net}.c.
 * Everything read here is guest data: pointers are followed only through
 * bounded reads, counts are capped, strings are made printable. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"

#define MAX_FINDINGS 10000   /* a hostile guest must not make us allocate without bound */
#define MAX_CPUS 1024
#define PT_TABLE_CAP (1L << 16)

int vmi_finding_add(struct vmi_findings *fs, enum vmi_severity sev, const char *check, const char *what,
		    const char *fmt, ...)
{
	if (fs->n >= MAX_FINDINGS)
		return 0; /* the summary already says enough */
	if (fs->n == fs->cap) {
		size_t cap = fs->cap ? fs->cap * 2 : 16;
		struct vmi_finding *f = realloc(fs->f, cap * sizeof(*f));
		if (!f)
			return err_set(ENOMEM, "out of memory for findings");
		fs->f = f;
		fs->cap = cap;
	}
	struct vmi_finding *f = &fs->f[fs->n++];
	memset(f, 0, sizeof(*f));
	f->sev = sev;
	snprintf(f->check, sizeof(f->check), "%s", check);
	snprintf(f->what, sizeof(f->what), "%s", what);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->evidence, sizeof(f->evidence), fmt, ap);
	va_end(ap);
	return 0;
}

int vmi_finding_cannot(struct vmi_findings *fs, const char *check, const char *why)
{
	char what[160];
	snprintf(what, sizeof(what), "check '%s' could not run", check);
	return vmi_finding_add(fs, VMI_SEV_WARNING, check, what, "%s", why && *why ? why : "unknown reason");
}

void vmi_findings_free(struct vmi_findings *fs)
{
	free(fs->f);
	memset(fs, 0, sizeof(*fs));
}

size_t vmi_findings_count(const struct vmi_findings *fs, enum vmi_severity min)
{
	size_t n = 0;
	for (size_t i = 0; i < fs->n; i++)
		n += fs->f[i].sev >= min;
	return n;
}

const char *vmi_printable(const char *s, char *buf, size_t len)
{
	size_t i = 0;
	for (; s[i] && i + 1 < len; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	buf[i] = 0;
	return buf;
}

bool vmi_off(const struct vmi_kernel *k, const char *type, const char *path, uint64_t *off)
{
	if (k->btf && vmi_btf_offset(k->btf, type, path, off) == 0)
		return true;
	err_clear();
	return false;
}

bool vmi_text_bounds(const struct vmi_kernel *k, uint64_t *stext, uint64_t *etext)
{
	if (vmi_ksym_addr(&k->ks, "_stext", stext) < 0 || vmi_ksym_addr(&k->ks, "_etext", etext) < 0)
		return false;
	return *stext >= k->text && *etext > *stext && *etext <= k->image_end;
}

int vmi_describe_addr(const struct vmi_kernel *k, const struct vmi_modmap *mm, uint64_t va, char *buf, size_t len)
{
	uint64_t st, et;
	bool tb = vmi_text_bounds(k, &st, &et);
	const struct vmi_sym *s = vmi_ksym_at(&k->ks, va);
	if (va >= k->text && va < k->image_end) {
		bool text = tb && va >= st && va < et;
		if (s)
			snprintf(buf, len, "kernel %s: %s+%#" PRIx64, text ? "text" : "image (not text)",
				 vmi_ksym_name(&k->ks, s), va - s->addr);
		else
			snprintf(buf, len, "kernel %s", text ? "text" : "image (not text)");
		return text ? 0 : 1;
	}
	for (size_t i = 0; mm && i < mm->n; i++) {
		const struct vmi_modmap_entry *e = &mm->e[i];
		if (va >= e->base && va - e->base < e->size) {
			char sym[96], name[64];
			if (vmi_module_symbol(k, e->mod, va, sym, sizeof(sym)))
				snprintf(buf, len, "module %s: %s", vmi_printable(e->name, name, sizeof(name)), sym);
			else
				snprintf(buf, len, "module %s+%#" PRIx64, vmi_printable(e->name, name, sizeof(name)),
					 va - e->base);
			return 2;
		}
	}
	if (va >= VMI_MODULES_VADDR && va < VMI_MODULES_END) {
		snprintf(buf, len, "module area, no known module contains it");
		return 3;
	}
	snprintf(buf, len, "outside the kernel image and the module area");
	return 4;
}

/* ---- per-CPU variables ---- */

int vmi_percpu_count(const struct vmi_kernel *k, unsigned *ncpu)
{
	uint64_t va;
	uint32_t n = 0;
	int rc = vmi_ksym(k, "nr_cpu_ids", &va);
	if (rc == 0)
		rc = vmi_kread(k, va, &n, 4);
	if (rc < 0)
		return rc;
	if (n == 0)
		return err_set(EINVAL, "nr_cpu_ids is 0");
	*ncpu = n > MAX_CPUS ? MAX_CPUS : n;
	return 0;
}

/* A per-CPU symbol is an offset into the per-CPU area (absolute in kallsyms
 * up to 6.14) or, later, a link-time address; either way the CPU's copy is at
 * __per_cpu_offset[cpu] + symbol. */
int vmi_percpu_addr(const struct vmi_kernel *k, const char *sym, unsigned cpu, uint64_t *va)
{
	uint64_t base, off, s;
	int rc = vmi_ksym(k, "__per_cpu_offset", &base);
	if (rc == 0)
		rc = vmi_ksym(k, sym, &s);
	if (rc == 0)
		rc = vmi_kread_u64(k, base + 8ULL * cpu, &off);
	if (rc < 0)
		return rc;
	*va = off + s;
	return 0;
}

/* ---- page-table iteration ---- */

struct pgiter {
	const struct vmi_kernel *k;
	uint64_t lo, hi;
	long cap, pages, tables;
	int bits; /* 48 or 57 */
	int (*fn)(uint64_t va, uint64_t pa, void *arg);
	void *arg;
	bool stop;
};

static uint64_t canon(uint64_t va, int bits)
{
	return (uint64_t)((int64_t)(va << (64 - bits)) >> (64 - bits));
}

static void walk_table(struct pgiter *it, int level, uint64_t table_pa, uint64_t base)
{
	uint64_t e[512];
	if (++it->tables > PT_TABLE_CAP || vmi_read_phys(it->k->mem, table_pa, e, sizeof(e)) < 0)
		return;
	unsigned shift = 12 + 9 * (unsigned)level;
	for (unsigned i = 0; i < 512 && !it->stop; i++) {
		uint64_t va = canon(base | ((uint64_t)i << shift), it->bits);
		uint64_t last = va + ((1ULL << shift) - 1);
		if (last < it->lo || va >= it->hi || !(e[i] & 1))
			continue;
		uint64_t pa = e[i] & 0x000ffffffffff000ULL;
		if (level == 0 || (level <= 2 && (e[i] & 0x80))) {
			pa &= ~((1ULL << shift) - 1);
			uint64_t from = va < it->lo ? it->lo & ~0xfffULL : va;
			for (uint64_t p = from; p <= last && p < it->hi && !it->stop; p += 0x1000) {
				if (it->pages++ >= it->cap || it->fn(p, pa + (p - va), it->arg))
					it->stop = true;
				if (p + 0x1000 < p)
					break;
			}
		} else {
			walk_table(it, level - 1, pa, va);
		}
	}
}

long vmi_for_each_page(const struct vmi_kernel *k, uint64_t lo, uint64_t hi, long cap,
		       int (*fn)(uint64_t va, uint64_t pa, void *arg), void *arg)
{
	if (!k->have_pt)
		return err_set(ENOENT, "no kernel page tables");
	struct pgiter it = { .k = k, .lo = lo, .hi = hi, .cap = cap, .fn = fn, .arg = arg,
			     .bits = k->levels == 5 ? 57 : 48 };
	walk_table(&it, k->levels == 5 ? 4 : 3, k->pt.cr3 & 0x000ffffffffff000ULL, 0);
	return it.pages;
}

/* ---- MSRs ---- */

int vmi_check_msrs(const struct vmi_kernel *k, const struct vmi_msrs *msrs, struct vmi_findings *out)
{
	if (!msrs)
		return vmi_finding_add(out, VMI_SEV_INFO, "msr", "LSTAR/CSTAR/SYSENTER_EIP not checked",
				       "MSRs are not available from a memory image (needs a live VM or a vmsvc "
				       "snapshot)");
	struct {
		const char *msr, *sym;
		uint64_t val;
		bool have;
	} want[] = {
		{ "LSTAR", "entry_SYSCALL_64", msrs->lstar, true },
		{ "CSTAR", "entry_SYSCALL_compat", msrs->cstar, msrs->have_cstar },
		{ "SYSENTER_EIP", "entry_SYSENTER_compat", msrs->sysenter_eip, msrs->have_sysenter },
	};
	struct vmi_modmap mm = { 0 };
	vmi_modmap_build(k, &mm); /* best effort: only names the target */
	int rc = 0;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]) && rc == 0; i++) {
		uint64_t exp;
		if (!want[i].have)
			continue;
		if (vmi_ksym_addr(&k->ks, want[i].sym, &exp) < 0) {
			/* No compat entry (IA32_EMULATION off): the MSR points at a
			 * stub; only require that it is kernel text. */
			char d[160];
			if (vmi_describe_addr(k, &mm, want[i].val, d, sizeof(d)) != 0)
				rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "msr", "syscall entry MSR points outside kernel text",
						     "%s=%#" PRIx64 " (%s)", want[i].msr, want[i].val, d);
			continue;
		}
		if (want[i].val != exp) {
			char d[160];
			vmi_describe_addr(k, &mm, want[i].val, d, sizeof(d));
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "msr", "syscall entry MSR hooked",
					     "%s=%#" PRIx64 " (%s), expected %s=%#" PRIx64, want[i].msr, want[i].val, d,
					     want[i].sym, exp);
		}
	}
	vmi_modmap_free(&mm);
	err_clear();
	return rc;
}

/* ---- driver ---- */

int vmi_check(const struct vmi_kernel *k, const struct vmi_check_opts *o, struct vmi_findings *out)
{
	static const struct vmi_check_opts none;
	if (!o)
		o = &none;
	int rc = 0;
	if (!(o->skip & VMI_CHECK_TASKS) && rc == 0)
		rc = vmi_check_tasks(k, out);
	if (!(o->skip & VMI_CHECK_MODULES) && rc == 0)
		rc = vmi_check_modules(k, out);
	if (!(o->skip & VMI_CHECK_SYSCALLS) && rc == 0)
		rc = vmi_check_syscalls(k, out);
	if (!(o->skip & VMI_CHECK_IDT) && rc == 0)
		rc = vmi_check_idt(k, out);
	if (!(o->skip & VMI_CHECK_MSRS) && rc == 0)
		rc = vmi_check_msrs(k, o->msrs, out);
	if (!(o->skip & VMI_CHECK_NET) && rc == 0)
		rc = vmi_check_net(k, out);
	if (!(o->skip & VMI_CHECK_TEXT) && rc == 0) {
		if (o->baseline)
			rc = vmi_check_text(k, o->baseline, out);
		else
			rc = vmi_finding_add(out, VMI_SEV_INFO, "text", "kernel text not compared",
					     "no baseline given (--baseline FILE records one from a clean boot)");
	}
	return rc;
}
