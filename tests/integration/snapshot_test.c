/* Snapshot/restore equivalence through the C API, on real guests.
 * usage: snapshot_test SNAPSHOT_GUEST.elf NCPUS WORKDIR
 *  1. run the guest; snapshot it mid-run (it keeps running) -> it must PASS;
 *     restore the snapshot into a new VM in this process -> it must PASS too,
 *     continuing from the middle (no boot banner in its console output);
 *  2. same with stop: the first VM ends at the snapshot, the restore PASSes;
 *  3. a damaged snapshot (flipped byte in `state`, short `memory`) is refused.
 * usage: snapshot_test SNAPSHOT_IO.elf NCPUS WORKDIR io   -- disk I/O in flight (io_test)
 * Prints the restore latency (restore start -> first KVM_RUN). Exit 77: no KVM. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmstate.h>
#include "devices/virtio_blk_internal.h"

#define MEM (512ULL << 20)
#define IO_ROUNDS 40

struct runner {
	struct vm *vm;
	int status;
	pthread_t t;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;
	r->status = vm_run(r->vm);
	return NULL;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strdup(buf);
}

/* Wait until the console file shows `needle` (the guest is mid-run). */
static int wait_for(const char *path, const char *needle, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		char *s = slurp(path);
		int found = strstr(s, needle) != NULL;
		free(s);
		if (found)
			return 0;
		usleep(10000);
	}
	return -1;
}

static int boot(const char *kernel, int ncpus, const char *out_path, struct runner *r)
{
	static char append[64];
	snprintf(append, sizeof(append), "cpus=%d rounds=40", ncpus);
	int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct vm_config cfg = { .kernel = kernel, .cmdline = append, .mem_size = MEM, .ncpus = ncpus,
				 .serial_out_fd = out, .serial_in_fd = -1 };
	if (vm_create(&cfg, &r->vm) < 0) {
		fprintf(stderr, "vm_create: %s\n", err_msg());
		return -1;
	}
	pthread_create(&r->t, NULL, run_thread, r);
	return 0;
}

static int restore(const char *dir, const char *out_path, struct runner *r, double *ms)
{
	int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct vm_config cfg = { .restore_dir = dir, .serial_out_fd = out, .serial_in_fd = -1 };
	uint64_t t0 = mono_ns();
	if (vm_create(&cfg, &r->vm) < 0) {
		fprintf(stderr, "restore %s: %s\n", dir, err_msg());
		close(out);
		return -1;
	}
	pthread_create(&r->t, NULL, run_thread, r);
	for (int i = 0; i < 5000 && !__atomic_load_n(&r->vm->first_run_ns, __ATOMIC_RELAXED); i++)
		usleep(100);
	*ms = (double)(r->vm->first_run_ns - t0) / 1e6;
	return 0;
}

static int check(bool ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAILED", what);
	return ok ? 0 : 1;
}

static int copy_file(const char *from, const char *to)
{
	char cmd[9000];
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	return system(cmd);
}

/* The guest's last "snapshot_io: N rounds, ..." line ("" if none), static. */
static const char *io_summary(const char *console)
{
	static char line[256];
	line[0] = 0;
	const char *p = console, *last = NULL;
	while ((p = strstr(p, "snapshot_io: ")) != NULL) {
		if (strstr(p, " rounds, ") && (!strchr(p, '\n') || strstr(p, " rounds, ") < strchr(p, '\n')))
			last = p;
		p++;
	}
	if (last) {
		size_t n = strcspn(last, "\r\n");
		snprintf(line, sizeof(line), "%.*s", (int)n, last);
	}
	return line;
}

static int io_vm(const char *kernel, int ncpus, const char *disk, const char *restore_dir, const char *out_path,
		 struct runner *r, double *ms)
{
	static char append[64];
	snprintf(append, sizeof(append), "cpus=%d rounds=%d", ncpus, IO_ROUNDS);
	int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct vm_config cfg = { .kernel = restore_dir ? NULL : kernel, .cmdline = append, .mem_size = MEM,
				 .ncpus = ncpus, .serial_out_fd = out, .serial_in_fd = -1, .ndisks = 1,
				 .restore_dir = restore_dir };
	static bool direct = true;   /* cache=none until the file system refuses it */
	static char spec[4200];   /* the VM keeps pointing at it (one VM at a time here) */
	snprintf(spec, sizeof(spec), "%s%s", disk, direct ? ",cache=none" : "");
	cfg.disks[0] = spec;
	uint64_t t0 = mono_ns();
	if (vm_create(&cfg, &r->vm) < 0 && direct) {
		fprintf(stderr, "with cache=none: %s; trying without\n", err_msg());
		direct = false;
		snprintf(spec, sizeof(spec), "%s", disk);
		t0 = mono_ns();
		vm_create(&cfg, &r->vm);
	}
	if (!r->vm) {
		fprintf(stderr, "%s: %s\n", restore_dir ? restore_dir : "boot", err_msg());
		close(out);
		return -1;
	}
	pthread_create(&r->t, NULL, run_thread, r);
	if (ms) {
		for (int i = 0; i < 5000 && !__atomic_load_n(&r->vm->first_run_ns, __ATOMIC_RELAXED); i++)
			usleep(100);
		*ms = (double)(r->vm->first_run_ns - t0) / 1e6;
	}
	return 0;
}

/* Requests the VM's first virtio-blk found in flight at snapshots so far. */
static uint64_t blk_snapshot_completed(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i].ops->name, "virtio-blk"))
			return ((struct virtio_blk *)vm->devices[i].dev)->snapshot_completed;
	return 0;
}

/* io mode: the snapshot_io guest on a scratch disk (cache=none where the file
 * system allows it, so that requests stay in flight long enough to be caught).
 * An uninterrupted run gives the reference summary. A second run is
 * snapshotted at a random moment of every round until IO_WANT_HITS snapshots
 * caught requests in flight (virtio-blk's quiesce completes them before the
 * vCPU state is captured) plus one that caught none; it must match the
 * reference. Every kept snapshot is then restored on the same disk (each round
 * writes a fresh area, so a restored run rewrites what the original wrote) and
 * must continue mid-run and match the reference too. */
#define IO_WANT_HITS 3
static int io_test(const char *kernel, int ncpus, const char *work)
{
	char disk[4096], out[4096], dir[IO_WANT_HITS + 1][4200], tmpdir[4200], needle[32];
	int round_of[IO_WANT_HITS + 1];
	uint64_t caught[IO_WANT_HITS + 1];
	snprintf(disk, sizeof(disk), "%s/disk.img", work);
	snprintf(out, sizeof(out), "%s/io.out", work);
	snprintf(tmpdir, sizeof(tmpdir), "%s/snap-try", work);
	int fd = open(disk, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 192 << 20) < 0) {
		perror(disk);
		return 1;
	}
	close(fd);
	int fails = 0;
	struct runner ref = { 0 };
	if (io_vm(kernel, ncpus, disk, NULL, out, &ref, NULL) < 0)
		return 1;
	pthread_join(ref.t, NULL);
	char *s = slurp(out);
	char want[256];
	snprintf(want, sizeof(want), "%s", io_summary(s));
	fails += check(ref.status == 1 && strstr(s, "PASS") && want[0], "uninterrupted run PASSes");
	if (ref.status != 1)
		fprintf(stderr, "uninterrupted run: status %d, console:\n%s\n", ref.status, s);
	free(s);
	vm_destroy(ref.vm);
	printf("reference: %s\n", want);

	struct runner a = { 0 };
	if (io_vm(kernel, ncpus, disk, NULL, out, &a, NULL) < 0)
		return 1;
	int hits = 0, kept = 0;
	bool kept_idle = false;
	srand((unsigned)mono_ns());
	for (int round = 1; round < IO_ROUNDS - 1 && (hits < IO_WANT_HITS || !kept_idle); round++) {
		snprintf(needle, sizeof(needle), "round %d ", round);
		if (wait_for(out, needle, 60000) < 0)
			break;
		usleep((useconds_t)(rand() % 15000));   /* somewhere in the next round */
		uint64_t before = blk_snapshot_completed(a.vm);
		int r = snapshot_save(a.vm, tmpdir, false);
		if (r < 0) {
			fprintf(stderr, "snapshot_save in round %d: %s\n", round, err_msg());
			fails += check(false, "snapshot_save with I/O running");
			break;
		}
		uint64_t n = blk_snapshot_completed(a.vm) - before;
		if ((n && hits < IO_WANT_HITS) || (!n && !kept_idle)) {
			snprintf(dir[kept], sizeof(dir[kept]), "%s/snap%d", work, kept);
			char cmd[9000];
			snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mv '%s' '%s'", dir[kept], tmpdir, dir[kept]);
			if (system(cmd) != 0)
				break;
			round_of[kept] = round;
			caught[kept++] = n;
			hits += n != 0;
			kept_idle = kept_idle || !n;
		}
	}
	printf("snapshots kept: %d, %d of them with requests in flight\n", kept, hits);
	fails += check(hits > 0, "at least one snapshot caught requests in flight");
	pthread_join(a.t, NULL);
	s = slurp(out);
	fails += check(a.status == 1 && strstr(s, "PASS") && !strcmp(io_summary(s), want),
		       "snapshotted run PASSes with the reference summary");
	if (a.status != 1)
		fprintf(stderr, "snapshotted run: status %d (%s), console:\n%s\n", a.status, a.vm->end_msg, s);
	free(s);
	vm_destroy(a.vm);

	for (int i = 0; i < kept; i++) {
		struct runner b = { 0 };
		double ms = 0;
		char banner[64];
		snprintf(banner, sizeof(banner), "snapshot_io: %d rounds of", IO_ROUNDS);
		if (io_vm(kernel, ncpus, disk, dir[i], out, &b, &ms) < 0) {
			fails += check(false, "restore");
			continue;
		}
		pthread_join(b.t, NULL);
		s = slurp(out);
		printf("restore of the round-%d snapshot (%llu requests were in flight): first KVM_RUN after %.3f ms; %s\n",
		       round_of[i], (unsigned long long)caught[i], ms, io_summary(s));
		fails += check(b.status == 1 && strstr(s, "PASS") && !strcmp(io_summary(s), want) && !strstr(s, banner),
			       "restored run continues mid-run and PASSes with the reference summary");
		if (b.status != 1 || strcmp(io_summary(s), want))
			fprintf(stderr, "restored run: status %d (%s), console:\n%s\n", b.status, b.vm->end_msg, s);
		free(s);
		vm_destroy(b.vm);
	}
	return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s SNAPSHOT_GUEST.elf NCPUS WORKDIR\n", argv[0]);
		return 2;
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		fprintf(stderr, "no /dev/kvm: skipped\n");
		return 77;
	}
	const char *kernel = argv[1], *work = argv[3];
	int ncpus = atoi(argv[2]);
	mkdir(work, 0700);
	if (argc > 4 && !strcmp(argv[4], "io"))
		return io_test(kernel, ncpus, work);
	char dir[4096], out_a[4096], out_b[4096], bad[4096], path[4200];
	snprintf(dir, sizeof(dir), "%s/snap", work);
	snprintf(out_a, sizeof(out_a), "%s/a.out", work);
	snprintf(out_b, sizeof(out_b), "%s/b.out", work);
	int fails = 0;

	/* 1: snapshot while running, original continues. */
	struct runner a = { 0 }, b = { 0 };
	if (boot(kernel, ncpus, out_a, &a) < 0 || wait_for(out_a, "round 5 ", 60000) < 0)
		return 1;
	uint64_t t0 = mono_ns();
	int r = snapshot_save(a.vm, dir, false);
	double save_ms = (double)(mono_ns() - t0) / 1e6;
	if (r < 0)
		fprintf(stderr, "snapshot_save: %s\n", err_msg());
	fails += check(r == 0, "snapshot_save while running");
	pthread_join(a.t, NULL);
	char *sa = slurp(out_a);
	fails += check(a.status == 1 && strstr(sa, "PASS"), "snapshotted VM continues to PASS");
	free(sa);
	vm_destroy(a.vm);
	double ms = 0;
	if (r == 0 && restore(dir, out_b, &b, &ms) == 0) {
		pthread_join(b.t, NULL);
		char *sb = slurp(out_b);
		printf("restore: %d vCPU(s), %llu MiB: restore start -> first KVM_RUN %.3f ms; snapshot took %.1f ms\n",
		       ncpus, MEM >> 20, ms, save_ms);
		fails += check(b.status == 1 && strstr(sb, "PASS"), "restored VM PASSes");
		fails += check(!strstr(sb, "snapshot_guest: 40 rounds of"), "restored VM continued mid-run (no boot banner)");
		if (b.status != 1)
			fprintf(stderr, "restored VM: status %d (%s), console:\n%s\n", b.status, b.vm->end_msg, sb);
		free(sb);
		vm_destroy(b.vm);
	} else {
		fails += check(false, "restore");
	}

	/* 2: snapshot with stop. */
	struct runner c = { 0 }, d = { 0 };
	if (boot(kernel, ncpus, out_a, &c) < 0 || wait_for(out_a, "round 3 ", 60000) < 0)
		return 1;
	r = snapshot_save(c.vm, dir, true);
	pthread_join(c.t, NULL);
	fails += check(r == 0 && c.vm->end_reason == VM_END_USER, "snapshot --stop ends the VM");
	vm_destroy(c.vm);
	if (restore(dir, out_b, &d, &ms) == 0) {
		pthread_join(d.t, NULL);
		char *sd = slurp(out_b);
		fails += check(d.status == 1 && strstr(sd, "PASS"), "restore after --stop PASSes");
		free(sd);
		vm_destroy(d.vm);
	} else {
		fails += check(false, "restore after --stop");
	}

	/* 3: damaged snapshots are refused before anything runs. */
	snprintf(bad, sizeof(bad), "%s/bad", work);
	mkdir(bad, 0700);
	snprintf(path, sizeof(path), "%s/state", dir);
	char to[4200];
	snprintf(to, sizeof(to), "%s/state", bad);
	copy_file(path, to);
	snprintf(path, sizeof(path), "%s/memory", dir);
	snprintf(to, sizeof(to), "%s/memory", bad);
	copy_file(path, to);
	snprintf(to, sizeof(to), "%s/state", bad);
	int fd = open(to, O_RDWR);
	unsigned char byte;
	pread(fd, &byte, 1, 300);
	byte ^= 0x10;
	pwrite(fd, &byte, 1, 300);
	struct vm *x = NULL;
	struct vm_config cfg = { .restore_dir = bad, .serial_out_fd = -1, .serial_in_fd = -1 };
	r = vm_create(&cfg, &x);
	printf("flipped byte: %s\n", err_msg());
	fails += check(r < 0 && strstr(err_msg(), "offset"), "flipped byte in state refused with an offset");
	byte ^= 0x10;
	pwrite(fd, &byte, 1, 300);
	close(fd);
	snprintf(to, sizeof(to), "%s/memory", bad);
	truncate(to, MEM - 4096);
	r = vm_create(&cfg, &x);
	printf("short memory: %s\n", err_msg());
	fails += check(r < 0 && strstr(err_msg(), "memory"), "short memory file refused");
	return fails ? 1 : 0;
}
