/* Introspection engine on a real kernel (Debian's cloud kernel, 6.1):
 *  - offline: the bzImage payload decompressed and laid out at its physical
 *    load addresses, as the boot loader would; kallsyms, BTF and the static
 *    init_task are recovered and checked against golden values and against
 *    the vmlinux's own section headers; the same for the bookworm-backports
 *    cloud kernel (6.12: the >= 6.4 kallsyms table order, module.mem[]);
 *  - live: a QEMU dump-guest-memory core of that kernel booted under TCG;
 *    ps/lsmod/netdev must equal what the guest itself printed before the dump.
 * Fixtures come from scripts/vmi-fixtures.sh (build/linux, build/vmi); tests
 * skip with a message when they are missing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#include "vmm/boot_internal.h"

#define VMLINUZ "build/linux/vmlinuz"
#define VMLINUZ_NEW "build/linux-bpo/vmlinuz"   /* scripts/vmi-fixture-newkernel.sh */
#define VERSION_NEW "build/linux-bpo/version"
#define KVER_NEW "6.12.95+deb12-cloud-amd64"   /* the golden values below are this build's */
#define FIXDIR "build/vmi/"
#define KVER "6.1.0-56-cloud-amd64"

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = n > 0 ? malloc((size_t)n) : NULL;
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return p;
}

static bool fixture(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f) {
		fclose(f);
		return true;
	}
	print_message("fixture %s missing: run scripts/vmi-fixtures.sh (skipping)\n", path);
	return false;
}

/* ---- offline: the decompressed vmlinux ---- */

struct offline {
	uint8_t *elf;       /* decompressed vmlinux */
	size_t elf_len;
	uint8_t *ram;       /* PT_LOAD segments at p_paddr */
	size_t ram_len;
	struct vmi_mem mem;
	struct vmi_kernel k;
};
static struct offline *off_fx;

static struct offline *off_new;

/* A bzImage's vmlinux with its PT_LOAD segments at their physical addresses;
 * NULL if the file is missing. */
static struct offline *offline_load(const char *path)
{
	size_t len;
	uint8_t *bz = slurp(path, &len);
	if (!bz || len < 0x300 || get_le32(bz + HDR_HEADER) != 0x53726448 /* "HdrS" */) {
		free(bz);
		return NULL;
	}
	struct offline *o = calloc(1, sizeof(*o));
	size_t setup = ((bz[HDR_SETUP_SECTS] ? bz[HDR_SETUP_SECTS] : 4) + 1) * 512ul;
	size_t poff = setup + get_le32(bz + HDR_PAYLOAD_OFFSET), plen = get_le32(bz + HDR_PAYLOAD_LENGTH);
	assert_true(poff + plen <= len);
	enum boot_comp c = boot_comp_detect(bz + poff, plen);
	assert_int_equal(boot_decompress(c, bz + poff, plen, BOOT_DECOMPRESS_MAX, &o->elf, &o->elf_len), 0);
	free(bz);
	/* Lay the PT_LOAD segments out at their physical addresses. */
	const uint8_t *e = o->elf;
	uint64_t phoff = get_le64(e + 0x20);
	unsigned phnum = get_le16(e + 0x38);
	uint64_t top = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = e + phoff + 56ul * i;
		if (get_le32(ph) == 1 && get_le64(ph + 24) + get_le64(ph + 40) > top)
			top = get_le64(ph + 24) + get_le64(ph + 40);
	}
	assert_true(top > 0 && top < (256u << 20));
	o->ram_len = (size_t)top;
	o->ram = calloc(1, o->ram_len);
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = e + phoff + 56ul * i;
		if (get_le32(ph) != 1)
			continue;
		uint64_t foff = get_le64(ph + 8), pa = get_le64(ph + 24), fsz = get_le64(ph + 32);
		assert_true(foff + fsz <= o->elf_len);
		memcpy(o->ram + pa, e + foff, fsz);
	}
	assert_int_equal(vmi_mem_from_flat(&o->mem, o->ram, o->ram_len, 0), 0);
	return o;
}

static int offline_setup(void **state)
{
	off_fx = offline_load(VMLINUZ);
	off_new = offline_load(VMLINUZ_NEW);
	return 0;
}

static void offline_free(struct offline **op)
{
	struct offline *o = *op;
	if (o) {
		vmi_kernel_close(&o->k);
		free(o->elf);
		free(o->ram);
		free(o);
		*op = NULL;
	}
}

static int offline_teardown(void **state)
{
	offline_free(&off_fx);
	offline_free(&off_new);
	return 0;
}

/* Virtual range of an ELF section by name. */
static bool section(const struct offline *o, const char *name, uint64_t *lo, uint64_t *hi)
{
	const uint8_t *e = o->elf;
	uint64_t shoff = get_le64(e + 0x28);
	unsigned shnum = get_le16(e + 0x3c), shstr = get_le16(e + 0x3e);
	if (!shoff || shstr >= shnum || shoff + 64ull * shnum > o->elf_len)
		return false;
	const uint8_t *strs = e + get_le64(e + shoff + 64ul * shstr + 24);
	for (unsigned i = 0; i < shnum; i++) {
		const uint8_t *sh = e + shoff + 64ul * i;
		if (!strcmp((const char *)strs + get_le32(sh), name)) {
			*lo = get_le64(sh + 16);
			*hi = *lo + get_le64(sh + 32);
			return true;
		}
	}
	return false;
}

static uint64_t sym(const struct vmi_kernel *k, const char *name)
{
	uint64_t a = 0;
	if (vmi_ksym(k, name, &a) < 0)
		fail_msg("symbol %s: %s", name, err_msg());
	return a;
}

/* The kallsyms found agree with the vmlinux's own section headers and entry
 * point, and lookup by address inverts lookup by name. */
static void expect_matches_vmlinux(const struct offline *o, const struct vmi_kernel *k)
{
	uint64_t lo, hi;
	assert_true(section(o, ".text", &lo, &hi));
	assert_true(sym(k, "_text") <= lo && sym(k, "_etext") >= hi - 1);
	assert_true(sym(k, "entry_SYSCALL_64") >= lo && sym(k, "entry_SYSCALL_64") < hi);
	assert_true(sym(k, "x64_sys_call") >= lo && sym(k, "x64_sys_call") < hi);
	assert_int_equal(get_le64(o->elf + 0x18), sym(k, "startup_64") - VMI_KERNEL_MAP); /* e_entry is physical */
	assert_true(section(o, ".data", &lo, &hi));
	assert_true(sym(k, "init_task") >= lo && sym(k, "init_task") < hi);
	assert_true(section(o, ".rodata", &lo, &hi));
	assert_true(sym(k, "sys_call_table") >= lo && sym(k, "sys_call_table") < hi);
	assert_true(section(o, ".BTF", &lo, &hi));
	assert_int_equal(sym(k, "__start_BTF"), lo);
	assert_int_equal(sym(k, "__stop_BTF"), hi);
	/* Lookup by address inverts lookup by name. */
	const struct vmi_sym *s = vmi_ksym_at(&k->ks, sym(k, "entry_SYSCALL_64") + 3);
	assert_non_null(s);
	assert_string_equal(vmi_ksym_name(&k->ks, s), "entry_SYSCALL_64");
	assert_int_equal(s->type, 'T');
}

static void test_offline_kallsyms(void **state)
{
	if (!off_fx) {
		fixture(VMLINUZ);
		skip();
	}
	struct offline *o = off_fx;
	struct vmi_kernel *k = &o->k;
	assert_int_equal(vmi_kernel_open(k, &o->mem, 0), 0);
	/* Golden values recorded from linux-image-6.1.0-56-cloud-amd64 (6.1.192-2). */
	assert_string_equal(k->release, KVER);
	assert_int_equal(k->ks.n, 87347);
	assert_int_equal(k->ks.layout, VMI_KS_OLD_SEQS);
	assert_true(k->ks.absolute_percpu);
	assert_int_equal(k->text, VMI_TEXT_DEFAULT); /* not relocated: no KASLR in the file */
	assert_int_equal(k->kaslr_slide, 0);
	assert_int_equal(k->phys_base, 0);
	assert_int_equal(sym(k, "startup_64"), 0xffffffff81000000ULL);
	assert_int_equal(sym(k, "entry_SYSCALL_64"), 0xffffffff81c00080ULL);
	assert_int_equal(sym(k, "x64_sys_call"), 0xffffffff81003320ULL);
	assert_int_equal(sym(k, "init_task"), 0xffffffff82a1aa40ULL);
	assert_int_equal(sym(k, "sys_call_table"), 0xffffffff82000360ULL);
	assert_int_equal(sym(k, "__start_BTF"), 0xffffffff82438070ULL);
	assert_int_equal(sym(k, "current_task"), 0x1fb80); /* absolute per-CPU */
	expect_matches_vmlinux(o, k);
}

static void expect_off(const struct vmi_kernel *k, const char *type, const char *path, uint64_t want)
{
	uint64_t got;
	if (vmi_btf_offset(k->btf, type, path, &got) < 0)
		fail_msg("%s", err_msg());
	if (got != want)
		fail_msg("%s.%s: offset %llu, expected %llu", type, path, (unsigned long long)got,
			 (unsigned long long)want);
}

static void test_offline_btf(void **state)
{
	if (!off_fx || !off_fx->k.btf)
		skip();
	const struct vmi_kernel *k = &off_fx->k;
	assert_int_equal(vmi_btf_ntypes(k->btf), 95247);
	uint64_t size;
	assert_int_equal(vmi_btf_sizeof(k->btf, "task_struct", &size), 0);
	assert_int_equal(size, 9728);
	expect_off(k, "task_struct", "__state", 24);
	expect_off(k, "task_struct", "tasks", 2192);
	expect_off(k, "task_struct", "mm", 2272);
	expect_off(k, "task_struct", "pid", 2416);
	expect_off(k, "task_struct", "tgid", 2420);
	expect_off(k, "task_struct", "real_parent", 2432);
	expect_off(k, "task_struct", "cred", 2960);
	expect_off(k, "task_struct", "comm", 2976);
	expect_off(k, "task_struct", "sched_class", 656);
	expect_off(k, "list_head", "next", 0);
	expect_off(k, "list_head", "prev", 8);
	expect_off(k, "cred", "uid", 8); /* usage is atomic_long_t here; the live ps test checks uids */
	expect_off(k, "module", "list", 8);
	expect_off(k, "module", "name", 24);
	expect_off(k, "module", "core_layout", 320);
	expect_off(k, "module", "core_layout.base", 320);
	expect_off(k, "module", "core_layout.size", 328);
	expect_off(k, "net_device", "flags", 192);
	expect_off(k, "net_device", "promiscuity", 712);
	expect_off(k, "mm_struct", "pgd", 72);
	/* Members inside anonymous unions/structs, and a bitfield. */
	expect_off(k, "page", "lru", 8);
	expect_off(k, "page", "mapping", 24);
	uint64_t bits, width;
	assert_int_equal(vmi_btf_member(k->btf, "task_struct", "sched_reset_on_fork", &bits, &width), 0);
	assert_int_equal(width, 1);
	/* Fail closed, naming struct and member. */
	uint64_t o;
	assert_int_equal(vmi_btf_offset(k->btf, "task_struct", "no_such_field", &o), -ENOENT);
	assert_non_null(strstr(err_msg(), "task_struct"));
	assert_non_null(strstr(err_msg(), "no_such_field"));
	assert_int_equal(vmi_btf_offset(k->btf, "module", "mem[0].base", &o), -ENOENT); /* 6.4+ only */
	/* The offsets the views use were all found. */
	assert_string_equal(k->off.err_ps, "");
	assert_string_equal(k->off.err_lsmod, "");
	assert_string_equal(k->off.err_netdev, "");
	assert_int_equal(k->off.module_nmem, 0);
}

/* The file's init_task is statically initialised: the idle task alone. */
static void test_offline_ps(void **state)
{
	if (!off_fx || !off_fx->k.btf)
		skip();
	struct vmi_task *t;
	size_t n;
	bool truncated;
	assert_int_equal(vmi_ps(&off_fx->k, &t, &n, &truncated), 0);
	assert_int_equal(n, 1);
	assert_false(truncated);
	assert_int_equal(t[0].pid, 0);
	assert_int_equal(t[0].ppid, 0);
	assert_int_equal(t[0].uid, 0);
	assert_string_equal(t[0].comm, "swapper");
	assert_true(t[0].kthread);
	free(t);

	/* A hostile guest: init_task.tasks -> a node that links to itself. The
	 * walk must stop, keep what it read, and say the list is broken. */
	struct vmi_kernel *k = &off_fx->k;
	uint64_t init_task = sym(k, "init_task"), fake = init_task + k->off.task_size + 4096 + k->off.task_tasks;
	uint64_t head = init_task + k->off.task_tasks;
	memcpy(off_fx->ram + (head - VMI_KERNEL_MAP), &fake, 8);
	memcpy(off_fx->ram + (fake - VMI_KERNEL_MAP), &fake, 8);
	assert_int_equal(vmi_ps(k, &t, &n, &truncated), 0);
	assert_true(truncated);
	assert_int_equal(n, 2);
	free(t);
	vmi_kernel_close(k);

	/* Without type information the views fail closed and say why. */
	struct vmi_kernel k2;
	assert_int_equal(vmi_kernel_open(&k2, &off_fx->mem, VMI_OPEN_NO_BTF), 0);
	assert_int_equal(k2.ks.n, 87347);
	assert_int_equal(vmi_ps(&k2, &t, &n, &truncated), -ENOENT);
	assert_non_null(strstr(err_msg(), "type information"));
	assert_int_equal(vmi_lsmod(&k2, (struct vmi_module **)&t, &n, &truncated), -ENOENT);
	vmi_kernel_close(&k2);
}

/* ---- offline, >= 6.4 table order: bookworm-backports' 6.12 cloud kernel ---- */

static bool new_is_golden(void)
{
	size_t len;
	char *v = (char *)slurp(VERSION_NEW, &len);
	bool golden = v && len >= strlen(KVER_NEW) && !strncmp(v, KVER_NEW, strlen(KVER_NEW));
	if (!golden)
		print_message("%s is not %s: golden addresses not checked, structure only\n", VMLINUZ_NEW, KVER_NEW);
	free(v);
	return golden;
}

static void test_new_kallsyms(void **state)
{
	if (!off_new) {
		print_message("fixture %s missing: run scripts/vmi-fixture-newkernel.sh (skipping)\n", VMLINUZ_NEW);
		skip();
	}
	struct offline *o = off_new;
	struct vmi_kernel *k = &o->k;
	assert_int_equal(vmi_kernel_open(k, &o->mem, 0), 0);
	/* Version-independent: the 6.4+ order (num_syms, names, markers,
	 * token table/index, then offsets, relative_base, seqs_of_names). */
	assert_int_equal(k->ks.layout, VMI_KS_NEW);
	assert_true(k->ks.pa_offsets > k->ks.pa_token_index && k->ks.pa_names < k->ks.pa_markers);
	assert_true(k->ks.n > 100000);
	assert_true(k->ks.absolute_percpu);
	assert_int_equal(k->text, VMI_TEXT_DEFAULT);
	assert_int_equal(k->phys_base, 0);
	assert_true(k->have_pt);
	if (new_is_golden()) {
		/* Recorded from linux-image-6.12.95+deb12-cloud-amd64 (6.12.95-1~bpo12+1). */
		assert_string_equal(k->release, KVER_NEW);
		assert_int_equal(k->ks.n, 154334);
		assert_int_equal(sym(k, "startup_64"), 0xffffffff81000b53ULL);
		assert_int_equal(sym(k, "entry_SYSCALL_64"), 0xffffffff81e00080ULL);
		assert_int_equal(sym(k, "x64_sys_call"), 0xffffffff81008a50ULL);
		assert_int_equal(sym(k, "init_task"), 0xffffffff82c10940ULL);
		assert_int_equal(sym(k, "sys_call_table"), 0xffffffff820003c0ULL);
		assert_int_equal(sym(k, "__start_BTF"), 0xffffffff8262a6a0ULL);
		assert_int_equal(sym(k, "pcpu_hot"), 0x35000); /* absolute per-CPU */
	}
	expect_matches_vmlinux(o, k);
}

static void test_new_btf_ps(void **state)
{
	if (!off_new || !off_new->k.btf)
		skip();
	const struct vmi_kernel *k = &off_new->k;
	/* >= 6.4 modules: layouts became module.mem[MOD_MEM_NUM_TYPES]. */
	assert_int_equal(k->off.module_nmem, 7);
	assert_string_equal(k->off.err_ps, "");
	assert_string_equal(k->off.err_lsmod, "");
	assert_string_equal(k->off.err_netdev, "");
	uint64_t o;
	assert_int_equal(vmi_btf_offset(k->btf, "module", "core_layout", &o), -ENOENT);
	if (new_is_golden()) {
		assert_int_equal(vmi_btf_ntypes(k->btf), 107005);
		uint64_t size;
		assert_int_equal(vmi_btf_sizeof(k->btf, "task_struct", &size), 0);
		assert_int_equal(size, 9792);
		expect_off(k, "task_struct", "__state", 24);
		expect_off(k, "task_struct", "tasks", 2224);
		expect_off(k, "task_struct", "mm", 2304);
		expect_off(k, "task_struct", "pid", 2432);
		expect_off(k, "task_struct", "real_parent", 2448);
		expect_off(k, "task_struct", "cred", 2960);
		expect_off(k, "task_struct", "comm", 2976);
		expect_off(k, "module", "list", 8);
		expect_off(k, "module", "name", 24);
		expect_off(k, "module", "mem[0].base", 320);
		expect_off(k, "module", "mem[0].size", 328);
		expect_off(k, "net_device", "flags", 176);
		expect_off(k, "net_device", "promiscuity", 976);
	}
	/* The static init_task: the idle task alone. */
	struct vmi_task *t;
	size_t n;
	bool truncated;
	assert_int_equal(vmi_ps(k, &t, &n, &truncated), 0);
	assert_int_equal(n, 1);
	assert_false(truncated);
	assert_int_equal(t[0].pid, 0);
	assert_string_equal(t[0].comm, "swapper");
	free(t);
}

/* ---- live: QEMU core ---- */

struct live {
	const char *tag; /* build/vmi/TAG.elf, TAG-ps.txt, TAG-serial.log */
	int levels;
	bool ok, tried;
	struct vmi_mem mem;
	struct vmi_kernel k;
	char path[128];
};
static struct live live4 = { .tag = "guest", .levels = 4 }, live5 = { .tag = "guest-la57", .levels = 5 };

static const char *fix_path(struct live *l, const char *suffix)
{
	snprintf(l->path, sizeof(l->path), FIXDIR "%s%s", l->tag, suffix);
	return l->path;
}

/* Open the core once, on first use; l->ok stays false if it is missing. */
static struct live *live_get(void **state)
{
	struct live *l = *state;
	if (l->ok || l->tried)
		return l;
	l->tried = true;
	FILE *f = fopen(fix_path(l, ".elf"), "rb");
	if (!f)
		return l;
	fclose(f);
	if (vmi_mem_open_file(&l->mem, l->path) < 0 || vmi_kernel_open(&l->k, &l->mem, 0) < 0) {
		vmi_mem_close(&l->mem);
		fail_msg("opening %s: %s", l->path, err_msg());
	}
	l->ok = true;
	return l;
}

static void live_close(struct live *l)
{
	if (l->ok) {
		vmi_kernel_close(&l->k);
		vmi_mem_close(&l->mem);
		l->ok = false;
	}
}

static void test_live_kernel(void **state)
{
	struct live *l = live_get(state);
	if (!l->ok) {
		fixture(fix_path(l, ".elf"));
		skip();
	}
	const struct vmi_kernel *k = &l->k;
	assert_string_equal(k->release, KVER);
	assert_int_equal(k->ks.n, 87347);
	assert_string_equal(k->hints, "");    /* phys_base variable, QEMU CR3 all agree */
	assert_true(k->have_pt);
	assert_int_equal(k->levels, l->levels);
	assert_int_equal(k->kaslr_slide & 0x1fffff, 0);
	assert_true(k->kaslr_slide < (1ULL << 30));
	assert_int_equal(l->mem.ncpus, 1);
	assert_int_equal(!!(l->mem.cpu[0].cr4 & (1 << 12)), l->levels == 5); /* QEMU's note agrees */
	/* Symbols moved by the slide relative to the file's golden values. */
	assert_int_equal(sym(k, "entry_SYSCALL_64"), 0xffffffff81c00080ULL + k->kaslr_slide);
	assert_int_equal(sym(k, "init_task"), 0xffffffff82a1aa40ULL + k->kaslr_slide);
	assert_int_equal(sym(k, "current_task"), 0x1fb80);

	/* VMCOREINFO (written by the guest's qemu_fw_cfg) agreed, as hints is
	 * empty. A lying one is reported and not adopted. */
	assert_non_null(l->mem.vmcoreinfo);
	assert_non_null(strstr(l->mem.vmcoreinfo, "KERNELOFFSET="));
	char *saved = l->mem.vmcoreinfo;
	l->mem.vmcoreinfo = "OSRELEASE=9.9.9\nKERNELOFFSET=1000\nSYMBOL(kallsyms_token_table)=ffffffff81000000\n";
	struct vmi_kernel k2;
	assert_int_equal(vmi_kernel_open(&k2, &l->mem, VMI_OPEN_NO_BTF), 0);
	l->mem.vmcoreinfo = saved;
	assert_non_null(strstr(k2.hints, "KERNELOFFSET"));
	assert_non_null(strstr(k2.hints, "OSRELEASE"));
	assert_non_null(strstr(k2.hints, "kallsyms_token_table"));
	assert_int_equal(k2.kaslr_slide, k->kaslr_slide);
	vmi_kernel_close(&k2);
}

struct guest_proc {
	int pid, ppid;
	unsigned uid;
	char state;
	char comm[64];
};

/* The guest's /proc shows full kthread names and "kworker/0:1-wq"; task_struct.comm
 * keeps 15 bytes and no workqueue suffix. */
static bool comm_matches(const char *ours, const char *guest)
{
	size_t n = strlen(ours);
	if (!strcmp(ours, guest))
		return true;
	if (strncmp(ours, guest, n))
		return false;
	return n == 15 || guest[n] == '-';
}

static void test_live_ps(void **state)
{
	struct live *l = live_get(state);
	if (!l->ok || !fixture(fix_path(l, "-ps.txt")))
		skip();
	size_t len;
	char *txt = (char *)slurp(l->path, &len);
	assert_non_null(txt);
	txt = realloc(txt, len + 1);
	txt[len] = 0;
	struct guest_proc g[512];
	size_t ng = 0;
	for (char *line = strtok(txt, "\n"); line && ng < 512; line = strtok(NULL, "\n")) {
		if (sscanf(line, "%d %d %u %c %63[^\n]", &g[ng].pid, &g[ng].ppid, &g[ng].uid, &g[ng].state,
			   g[ng].comm) == 5)
			ng++;
	}
	free(txt);
	assert_true(ng >= 10);
	struct vmi_task *t;
	size_t n;
	bool truncated;
	assert_int_equal(vmi_ps(&l->k, &t, &n, &truncated), 0);
	assert_false(truncated);
	/* Same set of processes (the guest's /proc has no pid 0)... */
	assert_int_equal(n, ng + 1);
	int workers = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i].pid == 0) {
			assert_string_equal(t[i].comm, "swapper/0");
			continue;
		}
		size_t j = 0;
		while (j < ng && g[j].pid != t[i].pid)
			j++;
		if (j == ng)
			fail_msg("pid %d (%s) is not in the guest's own list", t[i].pid, t[i].comm);
		/* ...with the same parent, uid, name and state. */
		assert_int_equal(t[i].ppid, g[j].ppid);
		assert_int_equal(t[i].uid, g[j].uid);
		if (!comm_matches(t[i].comm, g[j].comm))
			fail_msg("pid %d: comm '%s', guest says '%s'", t[i].pid, t[i].comm, g[j].comm);
		/* init printed the list while running; at dump time it waits. */
		if (t[i].pid != 1 && t[i].state_char != g[j].state)
			fail_msg("pid %d (%s): state %c, guest says %c", t[i].pid, t[i].comm, t[i].state_char,
				 g[j].state);
		if (!strncmp(t[i].comm, "vmi_worker_", 11))
			workers++;
		if (!strcmp(t[i].comm, "vmi_worker_c"))
			assert_int_equal(t[i].uid, 65534);
	}
	assert_int_equal(workers, 3);
	free(t);
}

/* Lines "VMI-MOD name size refs deps state addr" / "VMI-NET name 0xflags" from the serial log. */
static void test_live_lsmod_netdev(void **state)
{
	struct live *l = live_get(state);
	if (!l->ok || !fixture(fix_path(l, "-serial.log")))
		skip();
	size_t len;
	char *txt = (char *)slurp(l->path, &len);
	assert_non_null(txt);
	txt = realloc(txt, len + 1);
	txt[len] = 0;
	struct vmi_module *m;
	struct vmi_netdev *d;
	size_t nm, nd, gm = 0, gd = 0;
	bool truncated;
	assert_int_equal(vmi_lsmod(&l->k, &m, &nm, &truncated), 0);
	assert_false(truncated);
	assert_int_equal(vmi_netdev(&l->k, &d, &nd, &truncated), 0);
	assert_false(truncated);
	for (char *line = strtok(txt, "\r\n"); line; line = strtok(NULL, "\r\n")) {
		char name[64], rest[256];
		unsigned long long size, addr;
		unsigned flags;
		if (sscanf(line, "VMI-MOD %63s %llu %255[^\n]", name, &size, rest) == 3) {
			char *a = strstr(rest, "0x");
			assert_non_null(a);
			addr = strtoull(a, NULL, 16);
			size_t i = 0;
			while (i < nm && strcmp(m[i].name, name))
				i++;
			if (i == nm)
				fail_msg("module %s missing", name);
			assert_int_equal(m[i].size, size);
			assert_int_equal(m[i].base, addr);
			gm++;
		} else if (sscanf(line, "VMI-NET %63s %x", name, &flags) == 2) {
			size_t i = 0;
			while (i < nd && strcmp(d[i].name, name))
				i++;
			if (i == nd)
				fail_msg("netdev %s missing", name);
			assert_int_equal(d[i].flags, flags);
			gd++;
		}
	}
	assert_int_equal(gm, nm);
	assert_int_equal(gd, nd);
	assert_true(nm >= 5);
	for (size_t i = 0; i < nd; i++)
		if (!strcmp(d[i].name, "eth0"))
			assert_false(d[i].flags & VMI_IFF_PROMISC); /* clean guests are not promiscuous (see test_vmi_check) */
	free(m);
	free(d);
	free(txt);
}

int main(void)
{
	const struct CMUnitTest offline[] = {
		cmocka_unit_test(test_offline_kallsyms),
		cmocka_unit_test(test_offline_btf),
		cmocka_unit_test(test_offline_ps),
		cmocka_unit_test(test_new_kallsyms),
		cmocka_unit_test(test_new_btf_ps),
	};
#define LIVE_TESTS(l)                                                                                   \
	cmocka_unit_test_prestate(test_live_kernel, &l), cmocka_unit_test_prestate(test_live_ps, &l),     \
		cmocka_unit_test_prestate(test_live_lsmod_netdev, &l)
	const struct CMUnitTest live_4level[] = { LIVE_TESTS(live4) };
	const struct CMUnitTest live_5level[] = { LIVE_TESTS(live5) };
	int rc = cmocka_run_group_tests_name("vmi offline (vmlinuz)", offline, offline_setup, offline_teardown);
	rc += cmocka_run_group_tests_name("vmi live, 4-level (QEMU core)", live_4level, NULL, NULL);
	rc += cmocka_run_group_tests_name("vmi live, 5-level (QEMU core)", live_5level, NULL, NULL);
	live_close(&live4);
	live_close(&live5);
	return rc;
}
