/* Introspection checks (vmsvc inspect check) on real guests:
 *  - the clean dumps (4- and 5-level paging) give no warning or critical
 *    finding, and every check ran;
 *  - the infected dump (tests/vmi/rootkit loaded) gives each expected finding:
 *    hidden process, hidden module, hooked sys_call_table[kill] naming the
 *    module and its function, inline hook of __x64_sys_acct, promiscuous eth0,
 *    the rootkit's ETH_P_ALL kernel socket and arping's packet socket with its
 *    owner;
 *  - the text baseline taken from the same boot before the rootkit loaded
 *    names the patched function, and a baseline of another boot is refused;
 *  - MSR values, when given, are compared with entry_SYSCALL_64.
 * Fixtures come from scripts/vmi-fixtures.sh; tests skip when they are missing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#include "services/vmi_check_internal.h"

#define FIXDIR "build/vmi/"

struct fx {
	const char *path;
	bool tried, ok;
	struct vmi_mem mem;
	struct vmi_kernel k;
};
static struct fx clean = { FIXDIR "guest.elf" }, la57 = { FIXDIR "guest-la57.elf" },
		 infected = { FIXDIR "guest-infected.elf" }, pre = { FIXDIR "guest-infected-pre.elf" };

static struct vmi_kernel *open_fx(struct fx *f)
{
	if (!f->tried) {
		f->tried = true;
		if (access(f->path, R_OK) != 0) {
			print_message("fixture %s missing: run scripts/vmi-fixtures.sh (skipping)\n", f->path);
			return NULL;
		}
		assert_int_equal(vmi_mem_open_file(&f->mem, f->path), 0);
		if (vmi_kernel_open(&f->k, &f->mem, 0) < 0)
			fail_msg("%s: %s", f->path, err_msg());
		f->ok = true;
	}
	return f->ok ? &f->k : NULL;
}

static int close_all(void **state)
{
	struct fx *all[] = { &clean, &la57, &infected, &pre };
	for (size_t i = 0; i < 4; i++)
		if (all[i]->ok) {
			vmi_kernel_close(&all[i]->k);
			vmi_mem_close(&all[i]->mem);
			all[i]->ok = false;
		}
	return 0;
}

static void dump(const struct vmi_findings *fs)
{
	for (size_t i = 0; i < fs->n; i++)
		print_message("  [%d] %s: %s | %s\n", fs->f[i].sev, fs->f[i].check, fs->f[i].what, fs->f[i].evidence);
}

/* The finding of `check` whose what (and evidence, if given) contain the strings. */
static const struct vmi_finding *find(const struct vmi_findings *fs, const char *check, const char *what,
				      const char *evidence)
{
	for (size_t i = 0; i < fs->n; i++)
		if (!strcmp(fs->f[i].check, check) && strstr(fs->f[i].what, what) &&
		    (!evidence || strstr(fs->f[i].evidence, evidence)))
			return &fs->f[i];
	dump(fs);
	fail_msg("no %s finding '%s' with evidence '%s'", check, what, evidence ? evidence : "");
	return NULL;
}

/* ---- without fixtures ---- */

static void test_findings_api(void **state)
{
	struct vmi_findings fs = { 0 };
	for (int i = 0; i < 40; i++) /* grows past the first allocation */
		assert_int_equal(vmi_finding_add(&fs, i % 3, "x", "what", "evidence %d", i), 0);
	assert_int_equal(fs.n, 40);
	assert_int_equal(vmi_findings_count(&fs, VMI_SEV_INFO), 40);
	assert_int_equal(vmi_findings_count(&fs, VMI_SEV_WARNING), 26);
	assert_int_equal(vmi_findings_count(&fs, VMI_SEV_CRITICAL), 13);
	assert_string_equal(fs.f[39].evidence, "evidence 39");
	/* Long text is cut, never overflows. */
	char big[2000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(vmi_finding_add(&fs, VMI_SEV_INFO, big, big, "%s", big), 0);
	assert_int_equal(strlen(fs.f[40].what), sizeof(fs.f[40].what) - 1);
	vmi_findings_free(&fs);
	assert_int_equal(fs.n, 0);
	char buf[8];
	assert_string_equal(vmi_printable("a\x01\xff" "bcdefgh", buf, sizeof(buf)), "a??bcde");
}

/* A baseline file that is not ours is rejected before any guest memory is read. */
static void test_baseline_rejects_garbage(void **state)
{
	struct vmi_findings fs = { 0 };
	struct vmi_kernel k;
	memset(&k, 0, sizeof(k));
	assert_int_equal(vmi_check_text_buf(&k, (const uint8_t *)"short", 5, &fs), -EINVAL);
	uint8_t hdr[128] = "NOTMAGIC";
	assert_int_equal(vmi_check_text_buf(&k, hdr, sizeof(hdr), &fs), -EINVAL);
	memcpy(hdr, "VMITXT01", 8);
	uint32_t huge = 0xffffffff; /* nfuncs far beyond the file */
	memcpy(hdr + 8 + 64 + 24, &huge, 4);
	assert_int_equal(vmi_check_text_buf(&k, hdr, sizeof(hdr), &fs), -EINVAL);
	assert_int_equal(fs.n, 0);
}

/* ---- clean guests ---- */

static void expect_clean(struct fx *f)
{
	struct vmi_kernel *k = open_fx(f);
	if (!k)
		skip();
	struct vmi_findings fs = { 0 };
	assert_int_equal(vmi_check(k, NULL, &fs), 0);
	if (vmi_findings_count(&fs, VMI_SEV_WARNING))
		dump(&fs);
	assert_int_equal(vmi_findings_count(&fs, VMI_SEV_WARNING), 0);
	/* Only notes: what an image cannot give, and (pre-infection dump)
	 * arping's ordinary packet socket. */
	for (size_t i = 0; i < fs.n; i++)
		assert_true(!strcmp(fs.f[i].check, "msr") || !strcmp(fs.f[i].check, "text") ||
			    (!strcmp(fs.f[i].check, "packet") && f == &pre));
	vmi_findings_free(&fs);
}

static void test_clean_no_findings(void **state) { expect_clean(&clean); }
static void test_clean_la57_no_findings(void **state) { expect_clean(&la57); }
static void test_pre_infection_no_findings(void **state) { expect_clean(&pre); }

/* ---- the infected guest ---- */

static void test_infected_findings(void **state)
{
	struct vmi_kernel *k = open_fx(&infected);
	if (!k)
		skip();
	struct vmi_findings fs = { 0 };
	assert_int_equal(vmi_check(k, NULL, &fs), 0);
	const struct vmi_finding *f;
	f = find(&fs, "tasks", "'vmi_hidden' is not in the task list", "pid-idr");
	assert_int_equal(f->sev, VMI_SEV_CRITICAL);
	f = find(&fs, "modules", "hidden module 'vmi_rk'", "carving");
	assert_int_equal(f->sev, VMI_SEV_CRITICAL);
	assert_non_null(strstr(f->evidence, "sysfs"));
	f = find(&fs, "syscalls", "sys_call_table[62] (kill) hooked", "module vmi_rk: rk_kill+0");
	assert_int_equal(f->sev, VMI_SEV_CRITICAL);
	f = find(&fs, "syscalls", "inline hook: __x64_sys_acct", "module vmi_rk: rk_acct");
	assert_int_equal(f->sev, VMI_SEV_CRITICAL);
	f = find(&fs, "netdev", "interface eth0 is promiscuous", "IFF_PROMISC");
	assert_int_equal(f->sev, VMI_SEV_WARNING);
	f = find(&fs, "packet", "ETH_P_ALL", "no owning process");
	assert_int_equal(f->sev, VMI_SEV_WARNING);
	f = find(&fs, "packet", "AF_PACKET socket", "'arping'");
	assert_int_equal(f->sev, VMI_SEV_INFO);
	/* Nothing else: exactly these warnings/criticals. */
	if (vmi_findings_count(&fs, VMI_SEV_WARNING) != 6)
		dump(&fs);
	assert_int_equal(vmi_findings_count(&fs, VMI_SEV_WARNING), 6);
	vmi_findings_free(&fs);
}

static void test_msrs(void **state)
{
	struct vmi_kernel *k = open_fx(&clean);
	if (!k)
		skip();
	uint64_t entry, other;
	assert_int_equal(vmi_ksym(k, "entry_SYSCALL_64", &entry), 0);
	assert_int_equal(vmi_ksym(k, "do_syscall_64", &other), 0);
	struct vmi_msrs m = { .lstar = entry };
	struct vmi_findings fs = { 0 };
	assert_int_equal(vmi_check_msrs(k, &m, &fs), 0);
	assert_int_equal(fs.n, 0);
	m.lstar = other;
	assert_int_equal(vmi_check_msrs(k, &m, &fs), 0);
	const struct vmi_finding *f = find(&fs, "msr", "syscall entry MSR hooked", "LSTAR");
	assert_int_equal(f->sev, VMI_SEV_CRITICAL);
	assert_non_null(strstr(f->evidence, "do_syscall_64"));
	vmi_findings_free(&fs);
	assert_int_equal(vmi_check_msrs(k, NULL, &fs), 0);
	assert_int_equal(fs.n, 1);
	assert_int_equal(fs.f[0].sev, VMI_SEV_INFO);
	vmi_findings_free(&fs);
}

static void test_text_baseline(void **state)
{
	struct vmi_kernel *kp = open_fx(&pre), *ki = open_fx(&infected);
	if (!kp || !ki)
		skip();
	char path[] = "/tmp/vmsvc-test-baseline-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	struct vmi_findings fs = { 0 };
	/* First use writes the baseline (a note), the second compares: equal. */
	assert_int_equal(vmi_check_text(kp, path, &fs), 0);
	assert_int_equal(fs.n, 1);
	assert_int_equal(fs.f[0].sev, VMI_SEV_INFO);
	vmi_findings_free(&fs);
	assert_int_equal(vmi_check_text(kp, path, &fs), 0);
	assert_int_equal(fs.n, 0);
	/* The same boot after the rootkit: the patched function is named. Static keys
	 * flipped between the two dumps (e.g. networking keys enabled by the packet
	 * socket) legitimately repatch a few more functions, depending on timing. */
	assert_int_equal(vmi_check_text(ki, path, &fs), 0);
	if (fs.n != 2)
		dump(&fs);
	find(&fs, "text", "kernel text changed: __x64_sys_acct", "now starts e9");
	find(&fs, "text", "kernel text differs from the baseline", "functions");
	vmi_findings_free(&fs);
	/* Another boot (another KASLR slide) is refused, not compared. */
	struct vmi_kernel *kc = open_fx(&clean);
	if (kc && kc->kaslr_slide != kp->kaslr_slide) {
		assert_int_equal(vmi_check_text(kc, path, &fs), -EINVAL);
		assert_non_null(strstr(err_msg(), "another boot"));
	}
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_findings_api),
		cmocka_unit_test(test_baseline_rejects_garbage),
		cmocka_unit_test(test_clean_no_findings),
		cmocka_unit_test(test_clean_la57_no_findings),
		cmocka_unit_test(test_pre_infection_no_findings),
		cmocka_unit_test(test_infected_findings),
		cmocka_unit_test(test_msrs),
		cmocka_unit_test(test_text_baseline),
	};
	return cmocka_run_group_tests(tests, NULL, close_all);
}
