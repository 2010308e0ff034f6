/* The guest kernel from outside: symbols, image placement, page tables, BTF.
 * See the strategy in include/vmsvc/vmi.h. Everything read here is guest data:
 * derived values are cross-checked, and hints that disagree are reported in
 * k->hints rather than trusted. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

#define BTF_MAX_LEN (64u << 20)
#define IMAGE_MAX (1ULL << 30)      /* the kernel image mapping is 1 GiB at most */
#define CR4_LA57 (1ULL << 12)
#define BANNER "Linux version "

static void hint(struct vmi_kernel *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hint(struct vmi_kernel *k, const char *fmt, ...)
{
	size_t used = strlen(k->hints);
	if (used + 3 >= sizeof(k->hints))
		return;
	if (used)
		used += (size_t)snprintf(k->hints + used, sizeof(k->hints) - used, "; ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(k->hints + used, sizeof(k->hints) - used, fmt, ap);
	va_end(ap);
}

int vmi_ksym(const struct vmi_kernel *k, const char *name, uint64_t *va)
{
	if (vmi_ksym_addr(&k->ks, name, va) < 0)
		return err_set(ENOENT, "kernel symbol '%s' not found in kallsyms", name);
	return 0;
}

static uint64_t image_pa(const struct vmi_kernel *k, uint64_t va)
{
	return va - VMI_KERNEL_MAP + k->phys_base;
}

int vmi_kread(const struct vmi_kernel *k, uint64_t va, void *dst, size_t len)
{
	if (va >= k->text && va < k->image_end && len <= k->image_end - va) {
		if (vmi_read_phys(k->mem, image_pa(k, va), dst, len) == 0)
			return 0;
	} else if (k->have_pt && pw_read_fn(vmi_pw_read, k->mem, &k->pt, va, dst, len) == 0) {
		return 0;
	}
	return err_set(EFAULT, "cannot read %zu bytes of guest memory at %#" PRIx64 "%s", len, va,
		       k->have_pt ? "" : " (no page tables)");
}

int vmi_kread_u64(const struct vmi_kernel *k, uint64_t va, uint64_t *v)
{
	return vmi_kread(k, va, v, sizeof(*v));
}

/* Read a NUL-terminated string of at most max-1 bytes from the image. */
static bool image_str(const struct vmi_kernel *k, uint64_t va, char *out, size_t max)
{
	memset(out, 0, max);
	const uint8_t *p = vmi_phys_ptr(k->mem, image_pa(k, va), max - 1);
	if (!p)
		return false;
	memcpy(out, p, max - 1);
	return true;
}

/* Is linux_banner at physical address pa, consistently with the tables we
 * decoded? Sets phys_base and the release on success. */
static bool try_banner(struct vmi_kernel *k, uint64_t pa, uint64_t banner, bool have_proc, uint64_t proc_banner)
{
	const uint8_t *p = vmi_phys_ptr(k->mem, pa, strlen(BANNER));
	if (!p || memcmp(p, BANNER, strlen(BANNER)))
		return false;
	uint64_t old = k->phys_base;
	k->phys_base = pa - (banner - VMI_KERNEL_MAP);
	/* The tables we decoded must lie inside this image... */
	uint64_t tt_va = k->ks.pa_token_table + (banner - pa);
	char s[16];
	if (tt_va < k->text || tt_va >= k->image_end ||
	    /* ...and the second banner must be where kallsyms says. */
	    (have_proc && (!image_str(k, proc_banner, s, sizeof(s)) || strncmp(s, "%s version %s", 13)))) {
		k->phys_base = old;
		return false;
	}
	char rel[80];
	if (image_str(k, banner, rel, sizeof(rel))) {
		size_t n = strcspn(rel + strlen(BANNER), " ");
		if (n >= sizeof(k->release))
			n = sizeof(k->release) - 1;
		memcpy(k->release, rel + strlen(BANNER), n);
		k->release[n] = 0;
	}
	return true;
}

/* Step 2 of the strategy: K = va - pa for the kernel image, from linux_banner. */
static int find_image(struct vmi_kernel *k)
{
	uint64_t banner, proc_banner;
	int rc = vmi_ksym(k, "linux_banner", &banner);
	if (rc < 0)
		return rc;
	bool have_proc = vmi_ksym_addr(&k->ks, "linux_proc_banner", &proc_banner) == 0;
	/* The tables lie inside [text, image_end), so linux_banner's physical
	 * address is within one image size below/above them. x86-64 loads the
	 * kernel at a CONFIG_PHYSICAL_ALIGN (a multiple of 2 MiB) boundary and
	 * links _text 2 MiB-aligned, so phys_base is a multiple of 2 MiB: try
	 * those few candidates first; then every page (a few thousand, each
	 * touching another page of the image), for kernels loaded otherwise. */
	uint64_t tt = k->ks.pa_token_table, size = k->image_end - k->text;
	uint64_t lo = tt > size ? tt - size : 0, hi = tt + size;
	uint64_t boff = banner - VMI_KERNEL_MAP;
	for (uint64_t pb = lo > boff ? (lo - boff + 0x1fffff) & ~0x1fffffULL : 0; pb + boff < hi; pb += 0x200000)
		if (try_banner(k, pb + boff, banner, have_proc, proc_banner))
			return 0;
	for (uint64_t pa = (lo & ~0xfffULL) | (banner & 0xfff); pa < hi; pa += 0x1000)
		if (try_banner(k, pa, banner, have_proc, proc_banner))
			return 0;
	return err_set(ENOENT, "kernel image not found: no linux_banner consistent with kallsyms");
}

/* Step 3: kernel page tables from init_top_pgt, validated by translating _text. */
static void find_page_tables(struct vmi_kernel *k)
{
	uint64_t pgt, l5 = 0;
	if (vmi_ksym_addr(&k->ks, "init_top_pgt", &pgt) < 0 && vmi_ksym_addr(&k->ks, "swapper_pg_dir", &pgt) < 0) {
		hint(k, "no init_top_pgt symbol: only the kernel image is readable");
		return;
	}
	uint64_t l5va;
	uint32_t l5v = 0;
	if (vmi_ksym_addr(&k->ks, "__pgtable_l5_enabled", &l5va) == 0 && vmi_kread(k, l5va, &l5v, 4) == 0)
		l5 = l5v != 0;
	k->levels = l5 ? 5 : 4;
	k->pt = (struct pw_regs){ .cr0 = 0x80000001, .cr3 = image_pa(k, pgt), .cr4 = 0x20 | (l5 ? CR4_LA57 : 0),
				  .efer = 0x500 };
	uint64_t pa;
	if (pw_translate_fn(vmi_pw_read, k->mem, &k->pt, k->text, &pa, NULL, NULL) < 0 || pa != image_pa(k, k->text)) {
		hint(k, "init_top_pgt does not map _text (image without live page tables?)");
		return;
	}
	k->have_pt = true;
	/* The CPUs' CR3 (a process's page tables) must map the kernel the same way. */
	for (unsigned i = 0; i < k->mem->ncpus; i++) {
		struct pw_regs r = k->mem->cpu[i];
		r.cr3 &= ~0x1fffULL & 0x000ffffffffff000ULL; /* PCID bits; PTI user half */
		if ((r.cr4 & CR4_LA57) != (k->pt.cr4 & CR4_LA57))
			hint(k, "cpu%u CR4.LA57 disagrees with __pgtable_l5_enabled", i);
		else if (r.cr0 >> 31 &&
			 (pw_translate_fn(vmi_pw_read, k->mem, &r, k->text, &pa, NULL, NULL) < 0 || pa != image_pa(k, k->text)))
			hint(k, "cpu%u CR3 %#" PRIx64 " maps _text elsewhere", i, r.cr3);
	}
}

static bool vmcoreinfo_u64(const char *text, const char *key, int base, uint64_t *v)
{
	const char *p = text;
	size_t kl = strlen(key);
	while ((p = strstr(p, key))) {
		if (p == text || p[-1] == '\n') {
			char *end;
			*v = strtoull(p + kl, &end, base);
			return end != p + kl;
		}
		p += kl;
	}
	return false;
}

/* VMCOREINFO is written by the guest kernel: compare, never adopt. */
static void check_vmcoreinfo(struct vmi_kernel *k)
{
	const char *v = k->mem->vmcoreinfo;
	uint64_t x, sym;
	if (!v)
		return;
	if (vmcoreinfo_u64(v, "KERNELOFFSET=", 16, &x) && x != k->kaslr_slide)
		hint(k, "VMCOREINFO KERNELOFFSET=%" PRIx64 " but kallsyms gives %" PRIx64, x, k->kaslr_slide);
	if (vmcoreinfo_u64(v, "NUMBER(phys_base)=", 10, &x) && x != k->phys_base)
		hint(k, "VMCOREINFO phys_base=%#" PRIx64 " but the image is at %#" PRIx64, x, k->phys_base);
	if (vmcoreinfo_u64(v, "SYMBOL(init_top_pgt)=", 16, &x) && vmi_ksym_addr(&k->ks, "init_top_pgt", &sym) == 0 &&
	    x != sym)
		hint(k, "VMCOREINFO init_top_pgt=%" PRIx64 " but kallsyms gives %" PRIx64, x, sym);
	uint64_t tt_va = k->ks.pa_token_table - k->phys_base + VMI_KERNEL_MAP;
	if (vmcoreinfo_u64(v, "SYMBOL(kallsyms_token_table)=", 16, &x) && x != tt_va)
		hint(k, "VMCOREINFO kallsyms_token_table=%" PRIx64 " but the table in use is at %" PRIx64, x, tt_va);
	const char *rel = strstr(v, "OSRELEASE=");
	if (rel && (rel == v || rel[-1] == '\n')) {
		rel += strlen("OSRELEASE=");
		size_t n = strcspn(rel, "\n");
		if (n != strlen(k->release) || strncmp(rel, k->release, n))
			hint(k, "VMCOREINFO OSRELEASE=%.*s but linux_banner says %s", (int)(n < 64 ? n : 64), rel,
			     k->release);
	}
}

static int load_btf(struct vmi_kernel *k)
{
	uint64_t start, stop;
	int rc = vmi_ksym(k, "__start_BTF", &start);
	if (rc == 0)
		rc = vmi_ksym(k, "__stop_BTF", &stop);
	if (rc < 0)
		return err_prefix(rc, "no BTF (kernel without CONFIG_DEBUG_INFO_BTF?): ");
	if (stop <= start || stop - start > BTF_MAX_LEN)
		return err_set(EINVAL, "BTF bounds %#" PRIx64 "..%#" PRIx64 " are implausible", start, stop);
	size_t len = (size_t)(stop - start);
	/* The blob is in the kernel image (one physical range): libbpf copies it
	 * anyway, so hand it the mapping instead of copying it twice. */
	const uint8_t *direct = start >= k->text && stop <= k->image_end ? vmi_phys_ptr(k->mem, image_pa(k, start), len)
									: NULL;
	if (direct)
		return vmi_btf_new(&k->btf, direct, len);
	uint8_t *blob = malloc(len);
	if (!blob)
		return err_set(ENOMEM, "out of memory for %zu bytes of BTF", len);
	rc = vmi_kread(k, start, blob, len);
	if (rc == 0)
		rc = vmi_btf_new(&k->btf, blob, len);
	free(blob);
	return rc;
}

int vmi_kernel_open(struct vmi_kernel *k, struct vmi_mem *m, unsigned flags)
{
	memset(k, 0, sizeof(*k));
	k->mem = m;
	int rc = vmi_kallsyms_scan(&k->ks, m);
	if (rc < 0)
		return rc;
	k->text = k->ks.relative_base;
	uint64_t v;
	if (vmi_ksym_addr(&k->ks, "_text", &v) == 0 && v != k->text)
		hint(k, "_text %#" PRIx64 " differs from kallsyms_relative_base %#" PRIx64, v, k->text);
	k->kaslr_slide = k->text - VMI_TEXT_DEFAULT;
	if (vmi_ksym_addr(&k->ks, "_end", &v) < 0 && vmi_ksym_addr(&k->ks, "__bss_stop", &v) < 0) {
		vmi_kernel_close(k);
		return err_set(ENOENT, "kallsyms has neither _end nor __bss_stop");
	}
	if (v <= k->text || v - k->text > IMAGE_MAX) {
		vmi_kernel_close(k);
		return err_set(EINVAL, "kernel image bounds %#" PRIx64 "..%#" PRIx64 " are implausible", k->text, v);
	}
	k->image_end = v;
	double t0 = vmi_now_ms();
	rc = find_image(k);
	if (rc < 0) {
		vmi_kernel_close(k);
		return rc;
	}
	uint64_t pb_va, pb;
	if (vmi_ksym_addr(&k->ks, "phys_base", &pb_va) == 0 && vmi_kread_u64(k, pb_va, &pb) == 0 && pb != k->phys_base)
		hint(k, "the kernel's phys_base variable is %#" PRIx64 ", the image is at %#" PRIx64, pb, k->phys_base);
	find_page_tables(k);
	check_vmcoreinfo(k);
	double t1 = vmi_now_ms();
	k->ms_layout = t1 - t0;
	/* Without BTF the symbols still work; the views then fail closed with
	 * the reason (vmi_offsets_resolve records it). */
	if (!(flags & VMI_OPEN_NO_BTF) && load_btf(k) < 0)
		snprintf(k->btf_err, sizeof(k->btf_err), "%s", err_msg());
	else if (flags & VMI_OPEN_NO_BTF)
		snprintf(k->btf_err, sizeof(k->btf_err), "opened without type information");
	double t2 = vmi_now_ms();
	k->ms_btf = t2 - t1;
	vmi_offsets_resolve(k);
	k->ms_offsets = vmi_now_ms() - t2;
	err_clear();
	return 0;
}

void vmi_kernel_close(struct vmi_kernel *k)
{
	vmi_kallsyms_free(&k->ks);
	vmi_btf_free(k->btf);
	k->btf = NULL;
}

long vmi_list_walk(const struct vmi_kernel *k, uint64_t head_va, long cap, int (*fn)(uint64_t node, void *arg),
		   void *arg, bool *broken)
{
	if (broken)
		*broken = false;
	uint64_t node;
	int rc = vmi_kread_u64(k, head_va, &node);
	if (rc < 0)
		return rc;
	/* Brent's cycle detection: O(1) memory, finds a loop that never returns to
	 * the head within a few times the loop length. */
	uint64_t tortoise = head_va;
	long power = 1, lam = 0, count = 0;
	while (node != head_va) {
		if (count >= cap || node == tortoise) {
			if (broken)
				*broken = true;
			break;
		}
		/* Read the link before visiting: an unreadable node is not an entry. */
		uint64_t next;
		if (vmi_kread_u64(k, node, &next) < 0) {
			if (broken)
				*broken = true;
			break;
		}
		if (fn(node, arg))
			break;
		count++;
		if (++lam == power) {
			tortoise = node;
			power *= 2;
			lam = 0;
		}
		node = next;
	}
	return count;
}
