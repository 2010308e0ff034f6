/* Hidden-module check: three views of the loaded modules must agree.
 *   list    the `modules` list (what lsmod and /proc/modules show);
 *   kset    sysfs: module_kset's kobjects, each a struct module_kobject whose
 *           `mod` points back at its struct module (built-in "modules" with
 *           only parameters have mod == NULL and are skipped);
 *   carving every mapped page of the module area (MODULES_VADDR..MODULES_END),
 *           looking for a struct module by its self-reference mkobj.mod == &mod
 *           (struct module is cacheline aligned and lives in the module's own
 *           data there), validated by state and name.
 * A rootkit's list_del(&THIS_MODULE->list) leaves it in the other two views. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"

#define MAX_VIEWS 4096
#define MAX_MODULE_PAGES (1L << 18)   /* 1 GiB of 4 KiB pages: the whole area */
#define MAX_MODSYMS 200000u
#define MODULE_STATE_UNFORMED 3

struct mv_ctx {
	const struct vmi_kernel *k;
	struct vmi_modview *v;
	size_t n;
	uint64_t off_mkobj_mod;
	int err;
};

static struct vmi_modview *view_of(struct mv_ctx *c, uint64_t mod)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].mod == mod)
			return &c->v[i];
	if (c->n >= MAX_VIEWS)
		return NULL;
	struct vmi_modview *v = &c->v[c->n++];
	memset(v, 0, sizeof(*v));
	v->mod = mod;
	return v;
}

/* Is there a plausible struct module at mod? (state, printable name) */
static bool plausible_module(const struct vmi_kernel *k, uint64_t mod)
{
	const struct vmi_offsets *o = &k->off;
	uint32_t state;
	char name[57];
	if (vmi_kread(k, mod + o->module_state, &state, 4) < 0 ||
	    vmi_kread(k, mod + o->module_name, name, sizeof(name)) < 0 || state > MODULE_STATE_UNFORMED)
		return false;
	size_t len = strnlen(name, sizeof(name));
	if (len == 0 || len == sizeof(name))
		return false;
	for (size_t i = 0; i < len; i++)
		if (name[i] <= 0x20 || name[i] >= 0x7f)
			return false;
	return true;
}

static int kset_visit(uint64_t node, void *arg)
{
	struct mv_ctx *c = arg;
	const struct vmi_kernel *k = c->k;
	uint64_t off_entry, off_kobj, off_mod, mod;
	if (!vmi_off(k, "kobject", "entry", &off_entry) || !vmi_off(k, "module_kobject", "kobj", &off_kobj) ||
	    !vmi_off(k, "module_kobject", "mod", &off_mod))
		return 1;
	uint64_t mk = node - off_entry - off_kobj;
	if (vmi_kread_u64(k, mk + off_mod, &mod) < 0 || !mod)
		return 0;
	/* The module's own mkobj must be this kobject. */
	uint64_t mkobj;
	if (!vmi_off(k, "module", "mkobj", &mkobj) || mod + mkobj != mk || !plausible_module(k, mod))
		return 0;
	struct vmi_modview *v = view_of(c, mod);
	if (v)
		v->in_kset = true;
	return 0;
}

static int carve_page(uint64_t va, uint64_t pa, void *arg)
{
	struct mv_ctx *c = arg;
	const uint8_t *p = vmi_phys_ptr(c->k->mem, pa, 4096);
	if (!p)
		return 0;
	for (unsigned i = 0; i < 4096; i += 8) {
		uint64_t x;
		memcpy(&x, p + i, 8);
		uint64_t mod = va + i - c->off_mkobj_mod;
		if (x != mod || (mod & 63) || !plausible_module(c->k, mod))
			continue;
		struct vmi_modview *v = view_of(c, mod);
		if (v)
			v->carved = true;
	}
	return 0;
}

static void fill_view(const struct vmi_kernel *k, struct vmi_modview *v)
{
	const struct vmi_offsets *o = &k->off;
	uint32_t size = 0;
	vmi_kread(k, v->mod + o->module_name, v->name, sizeof(v->name) - 1);
	v->name[sizeof(v->name) - 1] = 0;
	vmi_kread(k, v->mod + o->module_state, &v->state, 4);
	vmi_kread_u64(k, v->mod + o->module_base, &v->base);
	if (vmi_kread(k, v->mod + o->module_size, &size, 4) == 0)
		v->size = size;
	vmi_kread_u64(k, v->mod + o->module_list, &v->list_next);
	vmi_kread_u64(k, v->mod + o->module_list + 8, &v->list_prev);
	err_clear();
}

int vmi_module_views(const struct vmi_kernel *k, struct vmi_modview **out, size_t *n, char *why, size_t whylen)
{
	*out = NULL;
	*n = 0;
	why[0] = 0;
	if (k->off.err_lsmod[0]) {
		snprintf(why, whylen, "%s", k->off.err_lsmod);
		return 0;
	}
	struct mv_ctx c = { .k = k, .v = calloc(MAX_VIEWS, sizeof(struct vmi_modview)) };
	if (!c.v)
		return err_set(ENOMEM, "out of memory for module views");
	struct vmi_module *m;
	size_t nm;
	bool trunc = false;
	if (vmi_lsmod(k, &m, &nm, &trunc) == 0) {
		for (size_t i = 0; i < nm; i++) {
			struct vmi_modview *v = view_of(&c, m[i].addr);
			if (v)
				v->in_list = true;
		}
		free(m);
	} else {
		snprintf(why, whylen, "module list: %s", err_msg());
	}
	if (trunc && !why[0])
		snprintf(why, whylen, "the module list is broken or loops");
	uint64_t kset_sym, kset, off_list;
	if (vmi_ksym_addr(&k->ks, "module_kset", &kset_sym) == 0 && vmi_kread_u64(k, kset_sym, &kset) == 0 &&
	    vmi_off(k, "kset", "list", &off_list))
		vmi_list_walk(k, kset + off_list, 100000, kset_visit, &c, NULL);
	if (vmi_off(k, "module", "mkobj.mod", &c.off_mkobj_mod) && k->have_pt)
		vmi_for_each_page(k, VMI_MODULES_VADDR, VMI_MODULES_END, MAX_MODULE_PAGES, carve_page, &c);
	for (size_t i = 0; i < c.n; i++)
		fill_view(k, &c.v[i]);
	err_clear();
	*out = c.v;
	*n = c.n;
	return 0;
}

int vmi_modmap_build(const struct vmi_kernel *k, struct vmi_modmap *mm)
{
	memset(mm, 0, sizeof(*mm));
	struct vmi_modview *v;
	size_t n;
	char why[192];
	int rc = vmi_module_views(k, &v, &n, why, sizeof(why));
	if (rc < 0)
		return rc;
	mm->e = calloc(n ? n : 1, sizeof(*mm->e));
	if (!mm->e) {
		free(v);
		return err_set(ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		mm->e[mm->n] = (struct vmi_modmap_entry){ .mod = v[i].mod, .base = v[i].base, .size = v[i].size };
		memcpy(mm->e[mm->n].name, v[i].name, sizeof(v[i].name));
		mm->n++;
	}
	free(v);
	return 0;
}

void vmi_modmap_free(struct vmi_modmap *mm)
{
	free(mm->e);
	memset(mm, 0, sizeof(*mm));
}

/* The module's own symbol table (mod->kallsyms: Elf64_Sym symtab[num_symtab],
 * strtab), which the kernel keeps for /proc/kallsyms. */
bool vmi_module_symbol(const struct vmi_kernel *k, uint64_t mod, uint64_t va, char *buf, size_t len)
{
	uint64_t o_ks, o_symtab, o_num, o_strtab, ks, symtab, strtab;
	uint32_t num;
	if (!vmi_off(k, "module", "kallsyms", &o_ks) || !vmi_off(k, "mod_kallsyms", "symtab", &o_symtab) ||
	    !vmi_off(k, "mod_kallsyms", "num_symtab", &o_num) || !vmi_off(k, "mod_kallsyms", "strtab", &o_strtab))
		return false;
	if (vmi_kread_u64(k, mod + o_ks, &ks) < 0 || vmi_kread_u64(k, ks + o_symtab, &symtab) < 0 ||
	    vmi_kread(k, ks + o_num, &num, 4) < 0 || vmi_kread_u64(k, ks + o_strtab, &strtab) < 0 ||
	    num > MAX_MODSYMS) {
		err_clear();
		return false;
	}
	uint64_t best = 0;
	uint32_t best_name = 0;
	bool found = false;
	for (uint32_t i = 0; i < num; i++) {
		uint8_t sym[24]; /* Elf64_Sym: name u32, info, other, shndx u16, value u64, size u64 */
		if (vmi_kread(k, symtab + 24ULL * i, sym, sizeof(sym)) < 0)
			break;
		uint64_t value, size;
		uint32_t name;
		memcpy(&name, sym, 4);
		memcpy(&value, sym + 8, 8);
		memcpy(&size, sym + 16, 8);
		if ((sym[4] & 0xf) != 2 /* STT_FUNC */ && (sym[4] & 0xf) != 1 /* STT_OBJECT */)
			continue;
		if (value <= va && (va - value < size || (!size && va == value)) && (!found || value > best)) {
			best = value;
			best_name = name;
			found = true;
		}
	}
	char name[64] = "";
	if (!found || vmi_kread(k, strtab + best_name, name, sizeof(name) - 1) < 0) {
		err_clear();
		return false;
	}
	char p[64];
	snprintf(buf, len, "%s+%#" PRIx64, vmi_printable(name, p, sizeof(p)), va - best);
	return true;
}

int vmi_check_modules(const struct vmi_kernel *k, struct vmi_findings *out)
{
	struct vmi_modview *v;
	size_t n;
	char why[192];
	int rc = vmi_module_views(k, &v, &n, why, sizeof(why));
	if (rc < 0)
		return rc;
	if (why[0] && (rc = vmi_finding_cannot(out, "modules", why)) < 0) {
		free(v);
		return rc;
	}
	uint64_t modules = 0;
	vmi_ksym_addr(&k->ks, "modules", &modules);
	for (size_t i = 0; i < n && rc == 0; i++) {
		const struct vmi_modview *m = &v[i];
		char name[64], views[40];
		vmi_printable(m->name, name, sizeof(name));
		snprintf(views, sizeof(views), "%s%s%s", m->in_list ? " list" : "", m->in_kset ? " sysfs" : "",
			 m->carved ? " carving" : "");
		uint64_t self = m->mod + k->off.module_list;
		const char *links = m->list_next == self && m->list_prev == self ? " (unlinked: list points to itself)"
				    : "";
		if (!m->in_list && m->state != MODULE_STATE_UNFORMED) {
			char what[160];
			snprintf(what, sizeof(what), "hidden module '%s': not in the module list", name);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "modules", what,
					     "struct module at %#" PRIx64 ", base %#" PRIx64 ", size %" PRIu64
					     ", state %" PRIu32 ", found by:%s; list next %#" PRIx64 " prev %#" PRIx64 "%s",
					     m->mod, m->base, m->size, m->state, views, m->list_next, m->list_prev, links);
		} else if (m->in_list && !m->in_kset && m->state == 0) {
			char what[160];
			snprintf(what, sizeof(what), "module '%s' is in the list but not in sysfs", name);
			rc = vmi_finding_add(out, VMI_SEV_WARNING, "modules", what,
					     "struct module at %#" PRIx64 ", found by:%s", m->mod, views);
		} else if (m->in_list && !m->carved && k->have_pt) {
			char what[160];
			snprintf(what, sizeof(what), "module '%s' has its struct module outside the module area", name);
			rc = vmi_finding_add(out, VMI_SEV_WARNING, "modules", what,
					     "struct module at %#" PRIx64 " (module area %#llx..%#llx), found by:%s", m->mod,
					     VMI_MODULES_VADDR, VMI_MODULES_END, views);
		}
	}
	free(v);
	return rc;
}
