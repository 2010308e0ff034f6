/* libFuzzer target for the introspection engine over corrupted guest memory.
 *
 * Two modes, chosen by the first input byte:
 *   < 0x80  parsers on the raw bytes: kallsyms recovery (vmi_kallsyms_from_buf),
 *           BTF (vmi_btf_new + member paths), an ELF core header
 *           (vmi_mem_from_elfcore) and a text baseline (vmi_check_text_buf);
 *   >= 0x80 walkers on a real kernel: a fixture dump is opened once
 *           (VMI_FUZZ_IMAGE, default build/vmi/guest-infected.elf), then every
 *           input patches a few 4 KiB pages of its memory, chosen relative to
 *           the structures the views and checks walk (page tables, task list,
 *           PID IDR, runqueues, module list and area, IDT, sys_call_table,
 *           network devices, packet sockets), and ps/lsmod/netdev/check run
 *           over the patched memory. Patched pages are spliced in as extra
 *           memory ranges, so nothing is copied per input but the pages.
 * Records in walker mode: [target u8][offset u16][len u8][len bytes]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

#define MAX_PATCH 12

static struct vmi_mem base_mem;
static struct vmi_kernel kern;
static bool have_kernel;
static uint64_t target_pa[32];
static unsigned ntargets;

static void add_target_va(uint64_t va)
{
	uint64_t pa;
	if (ntargets < 32 && kern.have_pt && pw_translate_fn(vmi_pw_read, &base_mem, &kern.pt, va, &pa, NULL, NULL) == 0)
		target_pa[ntargets++] = pa & ~0xfffULL;
}

static void add_sym(const char *name, int64_t delta)
{
	uint64_t va;
	if (vmi_ksym_addr(&kern.ks, name, &va) == 0)
		add_target_va(va + (uint64_t)delta);
}

static void add_deref(const char *name, uint64_t off)
{
	uint64_t va, p;
	if (vmi_ksym_addr(&kern.ks, name, &va) == 0 && vmi_kread_u64(&kern, va + off, &p) == 0)
		add_target_va(p);
}

static void open_kernel(void)
{
	const char *img = getenv("VMI_FUZZ_IMAGE");
	if (!img)
		img = "build/vmi/guest-infected.elf";
	if (vmi_mem_open_file(&base_mem, img) < 0 || vmi_kernel_open(&kern, &base_mem, 0) < 0) {
		fprintf(stderr, "fuzz_vmi: %s: %s (walker mode disabled)\n", img, err_msg());
		return;
	}
	have_kernel = true;
	target_pa[ntargets++] = kern.pt.cr3 & ~0xfffULL;
	add_sym("init_task", 0);
	add_sym("init_task", 4096);
	add_deref("init_task", kern.off.task_tasks); /* the first listed task */
	add_sym("init_pid_ns", 0);
	add_sym("modules", 0);
	add_deref("modules", 0);
	add_deref("module_kset", 0);
	add_sym("idt_table", 0);
	add_sym("sys_call_table", 0);
	add_sym("init_net", 0);
	add_sym("init_net", 4096);
	add_deref("init_net", kern.off.net_dev_base_head);
	uint64_t pco, rq;
	if (vmi_ksym_addr(&kern.ks, "__per_cpu_offset", &pco) == 0 && vmi_kread_u64(&kern, pco, &rq) == 0 &&
	    vmi_ksym_addr(&kern.ks, "runqueues", &pco) == 0)
		add_target_va(rq + pco);
	fprintf(stderr, "fuzz_vmi: %s: %u target pages\n", img, ntargets);
}

static int cmp_range(const void *a, const void *b)
{
	const struct vmi_range *x = a, *y = b;
	return x->pa < y->pa ? -1 : x->pa > y->pa;
}

/* base memory with pages replaced: split the base ranges around them. */
static void build_mem(struct vmi_mem *m, uint8_t (*pages)[4096], const uint64_t *pa, unsigned n)
{
	memset(m, 0, sizeof(*m));
	for (unsigned r = 0; r < base_mem.nranges; r++) {
		uint64_t lo = base_mem.range[r].pa, hi = lo + base_mem.range[r].len;
		uint64_t cur = lo;
		for (;;) {
			/* next patched page inside [cur, hi) */
			uint64_t next = hi;
			for (unsigned i = 0; i < n; i++)
				if (pa[i] >= cur && pa[i] < next)
					next = pa[i];
			if (next > cur && m->nranges < VMI_MAX_RANGES)
				m->range[m->nranges++] =
					(struct vmi_range){ cur, next - cur, base_mem.range[r].host + (cur - lo) };
			if (next >= hi)
				break;
			cur = next + 4096 > hi ? hi : next + 4096;
		}
	}
	for (unsigned i = 0; i < n && m->nranges < VMI_MAX_RANGES; i++)
		m->range[m->nranges++] = (struct vmi_range){ pa[i], 4096, pages[i] };
	qsort(m->range, m->nranges, sizeof(m->range[0]), cmp_range);
}

static void walkers(const uint8_t *d, size_t n)
{
	static uint8_t pages[MAX_PATCH][4096];
	uint64_t pa[MAX_PATCH];
	unsigned np = 0;
	size_t i = 0;
	while (i + 4 <= n && np < MAX_PATCH) {
		uint64_t page = target_pa[d[i] % ntargets];
		uint16_t off;
		memcpy(&off, d + i + 1, 2);
		size_t len = d[i + 3];
		i += 4;
		if (len > n - i)
			len = n - i;
		unsigned slot = np;
		for (unsigned j = 0; j < np; j++)
			if (pa[j] == page)
				slot = j;
		if (slot == np) {
			if (vmi_read_phys(&base_mem, page, pages[np], 4096) < 0) {
				i += len;
				continue;
			}
			pa[np++] = page;
		}
		off %= 4096;
		if (len > 4096u - off)
			len = 4096u - off;
		memcpy(pages[slot] + off, d + i, len);
		i += len;
	}
	struct vmi_mem m;
	build_mem(&m, pages, pa, np);
	struct vmi_kernel k = kern; /* symbols and types stay; memory is the patched one */
	k.mem = &m;
	size_t cnt;
	bool tr;
	struct vmi_task *t;
	if (vmi_ps(&k, &t, &cnt, &tr) == 0)
		free(t);
	struct vmi_module *mo;
	if (vmi_lsmod(&k, &mo, &cnt, &tr) == 0)
		free(mo);
	struct vmi_netdev *nd;
	if (vmi_netdev(&k, &nd, &cnt, &tr) == 0)
		free(nd);
	struct vmi_findings fs = { 0 };
	struct vmi_check_opts o = { 0 };
	vmi_check(&k, &o, &fs);
	vmi_findings_free(&fs);
	err_clear();
}

static void parsers(const uint8_t *d, size_t n)
{
	struct vmi_kallsyms ks;
	if (vmi_kallsyms_from_buf(&ks, d, n, 0x1000000) == 0) {
		uint64_t a;
		vmi_ksym_addr(&ks, "init_task", &a);
		vmi_ksym_at(&ks, 0xffffffff81000000ULL);
		vmi_kallsyms_free(&ks);
	}
	struct vmi_btf *b;
	if (vmi_btf_new(&b, d, n) == 0) {
		uint64_t off, sz;
		vmi_btf_offset(b, "task_struct", "tasks", &off);
		vmi_btf_offset(b, "module", "mem[0].base", &off);
		vmi_btf_member(b, "sock", "__sk_common.skc_node", &off, &sz);
		vmi_btf_array_len(b, "rt_prio_array", "queue", &sz);
		vmi_btf_sizeof(b, "task_struct", &sz);
		vmi_btf_free(b);
	}
	struct vmi_mem m;
	if (vmi_mem_from_elfcore(&m, d, n) == 0)
		vmi_mem_close(&m);
	if (have_kernel) {
		struct vmi_findings fs = { 0 };
		vmi_check_text_buf(&kern, d, n, &fs);
		vmi_findings_free(&fs);
	}
	err_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static bool init;
	if (!init) {
		init = true;
		open_kernel();
	}
	if (n < 1)
		return 0;
	if (d[0] < 0x80 || !have_kernel || !ntargets)
		parsers(d + 1, n - 1);
	else
		walkers(d + 1, n - 1);
	return 0;
}
