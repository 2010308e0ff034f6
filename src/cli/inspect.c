/* vmsvc inspect: introspect a Linux guest from outside.
 *
 *   vmsvc inspect NAME [--pause] [--json] [--timing] [--repeat N] info|ps|lsmod|netdev
 *   vmsvc inspect --image FILE|DIR [--json] [--timing] [--repeat N] info|ps|lsmod|netdev
 *   vmsvc inspect NAME|--image FILE [--json] [--baseline FILE] check
 *
 * `check` exits 0 when there is no warning or critical finding, 3 when there
 * is one (1 on errors), so scripts can act on it.
 * Guest strings (comm, module and device names) are hostile: the table output
 * replaces non-printable bytes, JSON escapes them. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#include "cli/cli.h"
#include "cli/inspect.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: vmsvc inspect NAME [--pause] [--json] [--timing] [--repeat N] info|ps|lsmod|netdev|check\n"
		   "       vmsvc inspect --image FILE|DIR [--json] [--timing] [--repeat N] info|ps|lsmod|netdev|check\n"
		   "       (check also takes --baseline FILE)\n"
		   "\n"
		   "Reads a Linux guest's kernel state without a profile: symbols from the kernel's\n"
		   "kallsyms tables and types from its BTF, both found in guest memory.\n"
		   "NAME is a running vmsvc VM (see 'vmsvc ls'): its RAM is mapped read-only into this\n"
		   "process through the control socket; the VM keeps running while it is read (every\n"
		   "walk is bounded; a list changing under the reader shows up as a broken list) unless\n"
		   "--pause holds it paused for the duration. Its syscall MSRs are checked by 'check'.\n"
		   "FILE is a vmsvc snapshot (its directory, or the state or memory file in it), a QEMU\n"
		   "'dump-guest-memory' ELF core (not compressed) or a raw memory image.\n"
		   "  info     kernel release, KASLR slide, phys_base, symbol and type counts, hints\n"
		   "  ps       processes: pid, ppid, uid, state, command name\n"
		   "  lsmod    loaded modules: name, base address, size\n"
		   "  netdev   network interfaces of the initial namespace: name, flags, promiscuous\n"
		   "  check    intrusion checks: hidden processes (task list vs PID IDR vs runqueues vs\n"
		   "           parent links), hidden modules (list vs sysfs vs carving the module area),\n"
		   "           sys_call_table/x64_sys_call/IDT hooks, syscall MSRs (live VM, snapshot),\n"
		   "           promiscuous interfaces, packet sockets, kernel text vs --baseline FILE\n"
		   "           (written if it does not exist: take it from a clean boot of the same\n"
		   "           kernel). Exit status 3 if anything of severity warning or critical is found.\n"
		   "  --pause      (NAME) pause the VM while reading it: a consistent view\n"
		   "  --timing     print the time of kernel recovery and of the view\n"
		   "  --repeat N   run the view N times in the same process (prints once; with --timing\n"
		   "               reports the median of the repeated runs: the warm query time)\n");
}

/* Printable copy of a guest string for tables. */
static const char *clean(const char *s, char *buf, size_t len)
{
	size_t i = 0;
	for (; s[i] && i + 1 < len; i++)
		buf[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
	buf[i] = 0;
	return buf;
}

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static const char *layout_name(enum vmi_ks_layout l)
{
	return l == VMI_KS_NEW ? "6.4+" : l == VMI_KS_OLD_SEQS ? "6.2-6.3 (seqs_of_names)" : "<=6.1";
}

static int show_info(const struct vmi_kernel *k, const char *source, bool json)
{
	if (json) {
		printf("{\"source\":");
		json_str(source);
		printf(",\"release\":");
		json_str(k->release);
		printf(",\"text\":\"%#" PRIx64 "\",\"kaslr_slide\":\"%#" PRIx64 "\",\"phys_base\":\"%#" PRIx64
		       "\",\"symbols\":%zu,\"kallsyms_layout\":\"%s\",\"btf_types\":%u,\"page_tables\":%s,"
		       "\"levels\":%d,\"hints\":",
		       k->text, k->kaslr_slide, k->phys_base, k->ks.n, layout_name(k->ks.layout),
		       k->btf ? vmi_btf_ntypes(k->btf) : 0, k->have_pt ? "true" : "false", k->levels);
		json_str(k->hints);
		printf(",\"btf_error\":");
		json_str(k->btf_err);
		if (k->mem->have_msrs)
			printf(",\"lstar\":\"%#" PRIx64 "\"", k->mem->msrs.lstar);
		printf("}\n");
		return 0;
	}
	printf("source:       %s\n", source);
	printf("release:      %s\n", k->release);
	printf("_text:        %#" PRIx64 " (KASLR slide %#" PRIx64 ")\n", k->text, k->kaslr_slide);
	printf("phys_base:    %#" PRIx64 "\n", k->phys_base);
	printf("symbols:      %zu (kallsyms layout %s, tables at pa %#" PRIx64 ")\n", k->ks.n,
	       layout_name(k->ks.layout), k->ks.pa_token_table);
	if (k->btf)
		printf("BTF types:    %u\n", vmi_btf_ntypes(k->btf));
	else
		printf("BTF types:    none (%s)\n", k->btf_err);
	if (k->have_pt)
		printf("page tables:  %d-level, init_top_pgt at pa %#" PRIx64 "\n", k->levels, k->pt.cr3);
	else
		printf("page tables:  not found (only the kernel image is readable)\n");
	if (k->mem->have_msrs)
		printf("LSTAR:        %#" PRIx64 " (vCPU 0)\n", k->mem->msrs.lstar);
	if (k->hints[0])
		printf("hints:        %s\n", k->hints);
	return 0;
}

/* A running VM (not paused) changes while it is read: a list read twice can
 * differ. Such reads are repeated until two consecutive ones agree (at most
 * STABLE_READS); *unstable says they never did. Entries are zero-filled before
 * they are written (vmi_views.c), so memcmp compares them whole. */
#define STABLE_READS 4
typedef int (*view_fn)(const struct vmi_kernel *k, void **out, size_t *n, bool *truncated);
static int ps_fn(const struct vmi_kernel *k, void **o, size_t *n, bool *t)
{
	return vmi_ps(k, (struct vmi_task **)o, n, t);
}
static int lsmod_fn(const struct vmi_kernel *k, void **o, size_t *n, bool *t)
{
	return vmi_lsmod(k, (struct vmi_module **)o, n, t);
}
static int netdev_fn(const struct vmi_kernel *k, void **o, size_t *n, bool *t)
{
	return vmi_netdev(k, (struct vmi_netdev **)o, n, t);
}

static int read_view(const struct vmi_kernel *k, view_fn fn, size_t elem, bool racy, void **out, size_t *n,
		     bool *truncated, bool *unstable)
{
	*unstable = false;
	int rc = fn(k, out, n, truncated);
	if (rc < 0 || !racy)
		return rc;
	for (int i = 1; i < STABLE_READS; i++) {
		void *again;
		size_t n2;
		bool t2;
		if ((rc = fn(k, &again, &n2, &t2)) < 0) {
			free(*out);
			return rc;
		}
		bool same = n2 == *n && t2 == *truncated && (!n2 || !memcmp(again, *out, n2 * elem));
		free(*out);
		*out = again;
		*n = n2;
		*truncated = t2;
		if (same)
			return 0;
	}
	*unstable = true;
	return 0;
}

static void unstable_note(bool json, bool unstable, const char *what)
{
	if (!unstable)
		return;
	if (json)
		printf(",\"unstable\":true");
	else
		printf("warning: the %s changed on each of %d reads of the running VM; use --pause for a "
		       "consistent view\n", what, STABLE_READS);
}

static int cmp_task(const void *a, const void *b)
{
	const struct vmi_task *x = a, *y = b;
	return (x->pid > y->pid) - (x->pid < y->pid);
}

static int show_ps(const struct vmi_kernel *k, bool json, bool racy)
{
	struct vmi_task *t;
	size_t n;
	bool truncated, unstable;
	int rc = read_view(k, ps_fn, sizeof(*t), racy, (void **)&t, &n, &truncated, &unstable);
	if (rc < 0)
		return rc;
	qsort(t, n, sizeof(*t), cmp_task);
	char buf[32];
	if (json) {
		printf("{\"processes\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"pid\":%d,\"tgid\":%d,\"ppid\":%d,\"uid\":%" PRIu32 ",\"state\":\"%c\",\"comm\":",
			       i ? "," : "", t[i].pid, t[i].tgid, t[i].ppid, t[i].uid, t[i].state_char);
			json_str(t[i].comm);
			printf(",\"kthread\":%s,\"task\":\"%#" PRIx64 "\"}", t[i].kthread ? "true" : "false", t[i].addr);
		}
		printf("],\"truncated\":%s", truncated ? "true" : "false");
		unstable_note(json, unstable, "task list");
		printf("}\n");
	} else {
		printf("%7s %7s %10s %s %-16s %s\n", "PID", "PPID", "UID", "S", "COMM", "TASK");
		for (size_t i = 0; i < n; i++)
			printf("%7d %7d %10" PRIu32 " %c %-16s %#" PRIx64 "\n", t[i].pid, t[i].ppid, t[i].uid,
			       t[i].state_char, clean(t[i].comm, buf, sizeof(buf)), t[i].addr);
		if (truncated)
			printf("warning: the task list is broken or loops; the list above is incomplete\n");
		unstable_note(json, unstable, "task list");
	}
	free(t);
	return 0;
}

static int show_lsmod(const struct vmi_kernel *k, bool json, bool racy)
{
	struct vmi_module *m;
	size_t n;
	bool truncated, unstable;
	int rc = read_view(k, lsmod_fn, sizeof(*m), racy, (void **)&m, &n, &truncated, &unstable);
	if (rc < 0)
		return rc;
	char buf[64];
	if (json) {
		printf("{\"modules\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(m[i].name);
			printf(",\"base\":\"%#" PRIx64 "\",\"size\":%" PRIu64 ",\"state\":%" PRIu32 ",\"module\":\"%#" PRIx64
			       "\"}",
			       m[i].base, m[i].size, m[i].state, m[i].addr);
		}
		printf("],\"truncated\":%s", truncated ? "true" : "false");
		unstable_note(json, unstable, "module list");
		printf("}\n");
	} else {
		printf("%-24s %-18s %8s\n", "NAME", "BASE", "SIZE");
		for (size_t i = 0; i < n; i++)
			printf("%-24s %#-18" PRIx64 " %8" PRIu64 "\n", clean(m[i].name, buf, sizeof(buf)), m[i].base,
			       m[i].size);
		if (truncated)
			printf("warning: the module list is broken or loops; the list above is incomplete\n");
		unstable_note(json, unstable, "module list");
	}
	free(m);
	return 0;
}

static int show_netdev(const struct vmi_kernel *k, bool json, bool racy)
{
	struct vmi_netdev *d;
	size_t n;
	bool truncated, unstable;
	int rc = read_view(k, netdev_fn, sizeof(*d), racy, (void **)&d, &n, &truncated, &unstable);
	if (rc < 0)
		return rc;
	char buf[32];
	if (json) {
		printf("{\"netdevs\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(d[i].name);
			printf(",\"flags\":\"%#" PRIx32 "\",\"up\":%s,\"promisc\":%s,\"promiscuity\":%" PRIu32 "}",
			       d[i].flags, d[i].flags & VMI_IFF_UP ? "true" : "false",
			       d[i].flags & VMI_IFF_PROMISC ? "true" : "false", d[i].promiscuity);
		}
		printf("],\"truncated\":%s", truncated ? "true" : "false");
		unstable_note(json, unstable, "device list");
		printf("}\n");
	} else {
		printf("%-16s %-8s %s\n", "NAME", "FLAGS", "");
		for (size_t i = 0; i < n; i++)
			printf("%-16s %#-8" PRIx32 " %s%s\n", clean(d[i].name, buf, sizeof(buf)), d[i].flags,
			       d[i].flags & VMI_IFF_UP ? "UP" : "DOWN", d[i].flags & VMI_IFF_PROMISC ? " PROMISC" : "");
		if (truncated)
			printf("warning: the device list is broken or loops; the list above is incomplete\n");
		unstable_note(json, unstable, "device list");
	}
	free(d);
	return 0;
}

static const char *sev_name(enum vmi_severity s)
{
	return s == VMI_SEV_CRITICAL ? "critical" : s == VMI_SEV_WARNING ? "warning" : "info";
}

static bool same_finding(const struct vmi_finding *a, const struct vmi_finding *b)
{
	return a->sev == b->sev && !strcmp(a->check, b->check) && !strcmp(a->what, b->what) &&
	       !strcmp(a->evidence, b->evidence);
}

static int run_check(const struct vmi_kernel *k, const char *baseline, bool json, bool print, bool racy,
		     size_t *nfind)
{
	struct vmi_findings fs = { 0 };
	struct vmi_check_opts o = { .msrs = k->mem->have_msrs ? &k->mem->msrs : NULL, .baseline = baseline };
	int rc = vmi_check(k, &o, &fs);
	if (rc < 0) {
		vmi_findings_free(&fs);
		return rc;
	}
	/* Reading a running VM, the views a check compares are read at different
	 * moments: a process forked between the task-list walk and the PID IDR
	 * walk looks hidden. A real finding persists, so check again and keep as
	 * findings only what both runs saw; the rest become notes. */
	if (racy && vmi_findings_count(&fs, VMI_SEV_WARNING)) {
		struct vmi_findings again = { 0 };
		rc = vmi_check(k, &o, &again);
		if (rc < 0) {
			vmi_findings_free(&fs);
			vmi_findings_free(&again);
			return rc;
		}
		for (size_t i = 0; i < again.n; i++) {
			struct vmi_finding *f = &again.f[i];
			bool seen = f->sev == VMI_SEV_INFO;
			for (size_t j = 0; j < fs.n && !seen; j++)
				seen = same_finding(f, &fs.f[j]);
			if (!seen) {
				char what[sizeof(f->what)];
				snprintf(what, sizeof(what), "transient (one read of the running VM only): %.110s", f->what);
				memcpy(f->what, what, sizeof(what));
				f->sev = VMI_SEV_INFO;
			}
		}
		vmi_findings_free(&fs);
		fs = again;
	}
	size_t bad = vmi_findings_count(&fs, VMI_SEV_WARNING);
	*nfind = bad;
	if (!print) {
		vmi_findings_free(&fs);
		return 0;
	}
	if (json) {
		printf("{\"findings\":[");
		for (size_t i = 0; i < fs.n; i++) {
			printf("%s{\"severity\":\"%s\",\"check\":", i ? "," : "", sev_name(fs.f[i].sev));
			json_str(fs.f[i].check);
			printf(",\"what\":");
			json_str(fs.f[i].what);
			printf(",\"evidence\":");
			json_str(fs.f[i].evidence);
			printf("}");
		}
		printf("],\"warnings_or_worse\":%zu,\"critical\":%zu}\n", bad,
		       vmi_findings_count(&fs, VMI_SEV_CRITICAL));
	} else {
		for (size_t i = 0; i < fs.n; i++)
			printf("%-8s %-9s %s\n         %s\n", sev_name(fs.f[i].sev), fs.f[i].check, fs.f[i].what,
			       fs.f[i].evidence);
		printf("%zu finding%s (%zu critical), %zu note%s\n", bad, bad == 1 ? "" : "s",
		       vmi_findings_count(&fs, VMI_SEV_CRITICAL), fs.n - bad, fs.n - bad == 1 ? "" : "s");
	}
	vmi_findings_free(&fs);
	return 0;
}

/* One run of a view without output (for --repeat): the same work as the view. */
static int run_quiet(const struct vmi_kernel *k, const char *view)
{
	bool truncated;
	size_t n;
	int rc = 0;
	if (!strcmp(view, "ps")) {
		struct vmi_task *t;
		if ((rc = vmi_ps(k, &t, &n, &truncated)) == 0)
			free(t);
	} else if (!strcmp(view, "lsmod")) {
		struct vmi_module *m;
		if ((rc = vmi_lsmod(k, &m, &n, &truncated)) == 0)
			free(m);
	} else if (!strcmp(view, "netdev")) {
		struct vmi_netdev *d;
		if ((rc = vmi_netdev(k, &d, &n, &truncated)) == 0)
			free(d);
	} else if (!strcmp(view, "check")) {
		rc = run_check(k, NULL, false, false, false, &n);
	}
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* --pause: a VM must not stay paused because `inspect` was interrupted. On
 * SIGINT/SIGTERM/SIGHUP the handler writes a resume request on the open
 * control connection (send() is async-signal-safe; the reply is not awaited)
 * and exits. Only SIGKILL can leave the VM paused (then: vmsvc resume NAME). */
static volatile sig_atomic_t resume_fd = -1;

static void resume_and_exit(int sig)
{
	static const char req[] = "{\"id\":99,\"cmd\":\"resume\"}\n";
	if (resume_fd >= 0) {
		ssize_t w = send(resume_fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
		(void)w;
	}
	_exit(128 + sig);
}

static void guard_pause(int fd)
{
	resume_fd = fd;
	struct sigaction sa = { .sa_handler = resume_and_exit };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int cmd_inspect(int argc, char **argv)
{
	const char *image = NULL, *name = NULL, *view = NULL, *baseline = NULL;
	bool json = false, timing = false, pause = false;
	long repeat = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--image") && i + 1 < argc) {
			image = argv[++i];
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--pause")) {
			pause = true;
		} else if (!strcmp(argv[i], "--timing")) {
			timing = true;
		} else if (!strcmp(argv[i], "--baseline") && i + 1 < argc) {
			baseline = argv[++i];
		} else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
			char *end;
			repeat = strtol(argv[++i], &end, 10);
			if (*end || repeat < 1 || repeat > 1000000) {
				fprintf(stderr, "vmsvc inspect: --repeat needs a count from 1 to 1000000\n");
				return 2;
			}
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "vmsvc inspect: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		} else if (!image && !name && i + 1 < argc) {
			name = argv[i];
		} else if (!view) {
			view = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!view || (!image && !name)) {
		usage(stderr);
		return 2;
	}
	if (strcmp(view, "info") && strcmp(view, "ps") && strcmp(view, "lsmod") && strcmp(view, "netdev") &&
	    strcmp(view, "check")) {
		fprintf(stderr, "vmsvc inspect: unknown view '%s' (info, ps, lsmod, netdev, check)\n", view);
		return 2;
	}
	if (pause && image) {
		fprintf(stderr, "vmsvc inspect: --pause is for a running VM (NAME), not --image\n");
		return 2;
	}
	double t0 = now_ms();
	struct vmi_mem mem;
	struct vmi_kernel k;
	struct live_vm lv = { .fd = -1 };
	bool paused_here = false, racy = false;
	int rc;
	if (image) {
		rc = vmi_mem_open_file(&mem, image);
	} else {
		rc = live_open(&lv, name);
		char state[32] = "";
		if (rc == 0)
			rc = live_call(&lv, "info", state, sizeof(state));
		/* A VM that keeps running is read racily (read_view, run_check). */
		racy = rc == 0 && !pause && strcmp(state, "paused");
		/* Pause only a running VM, and resume only what we paused: a VM the
		 * user paused stays paused. */
		if (rc == 0 && pause && strcmp(state, "paused")) {
			guard_pause(lv.fd); /* before the pause: no window without the guard */
			rc = live_call(&lv, "pause", NULL, 0);
			paused_here = rc == 0;
		}
		if (rc == 0)
			rc = live_attach(&lv, &mem);
	}
	double t_mem = now_ms();
	if (rc == 0) {
		rc = vmi_kernel_open(&k, &mem, 0);
		if (rc < 0)
			vmi_mem_close(&mem);
	}
	if (rc < 0) {
		fprintf(stderr, "vmsvc inspect: %s\n", err_msg());
		if (paused_here && live_call(&lv, "resume", NULL, 0) < 0)
			fprintf(stderr, "vmsvc inspect: %s (the VM is still paused: vmsvc resume %s)\n", err_msg(), name);
		live_close(&lv);
		return 1;
	}
	double t1 = now_ms();
	size_t findings = 0;
	if (!strcmp(view, "check"))
		rc = run_check(&k, baseline, json, true, racy, &findings);
	else if (!strcmp(view, "info")) {
		char source[300];
		if (image)
			snprintf(source, sizeof(source), "image %s", image);
		else
			snprintf(source, sizeof(source), "running VM %s (%s)", name,
				 lv.copied ? "RAM copied: restored from a snapshot directory" : "RAM shared read-only");
		rc = show_info(&k, source, json);
	}
	else if (!strcmp(view, "ps"))
		rc = show_ps(&k, json, racy);
	else if (!strcmp(view, "lsmod"))
		rc = show_lsmod(&k, json, racy);
	else
		rc = show_netdev(&k, json, racy);
	double t2 = now_ms();
	/* Warm runs: symbols and types are already recovered. */
	double *runs = repeat > 1 ? calloc((size_t)repeat - 1, sizeof(double)) : NULL;
	long nruns = 0;
	for (long r = 1; r < repeat && rc == 0 && runs; r++) {
		double a = now_ms();
		rc = run_quiet(&k, view);
		runs[nruns++] = now_ms() - a;
	}
	if (rc < 0)
		fprintf(stderr, "vmsvc inspect: %s\n", err_msg());
	else if (k.hints[0] && strcmp(view, "info"))
		fprintf(stderr, "vmsvc inspect: note: %s\n", k.hints);
	if (timing) {
		fprintf(stderr, "vmsvc inspect: open %.1f ms, %s %.3f ms\n", t1 - t0, view, t2 - t1);
		fprintf(stderr,
			"vmsvc inspect: open = memory %.1f + kallsyms find %.1f, decode %.1f, sort %.1f, index %.1f"
			" + layout %.1f + BTF %.1f + offsets %.1f ms\n",
			t_mem - t0, k.ks.ms_find, k.ks.ms_decode, k.ks.ms_sort, k.ks.ms_index, k.ms_layout, k.ms_btf,
			k.ms_offsets);
	}
	if (timing && nruns) {
		qsort(runs, (size_t)nruns, sizeof(double), cmp_double);
		fprintf(stderr, "vmsvc inspect: warm %s: median %.3f ms, min %.3f ms over %ld runs\n", view,
			runs[nruns / 2], runs[0], nruns);
	}
	free(runs);
	vmi_kernel_close(&k);
	vmi_mem_close(&mem);
	if (paused_here && live_call(&lv, "resume", NULL, 0) < 0) {
		fprintf(stderr, "vmsvc inspect: %s (the VM is still paused: vmsvc resume %s)\n", err_msg(), name);
		rc = -EIO;
	}
	resume_fd = -1;
	live_close(&lv);
	return rc < 0 ? 1 : findings ? 3 : 0;
}
