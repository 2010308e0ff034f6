/* Snapshot/restore equivalence through the C API, on real guests.
 * usage: snapshot_test SNAPSHOT_GUEST.elf NCPUS WORKDIR
 *  1. run the guest; snapshot it mid-run (it keeps running) -> it must PASS;
 *     restore the snapshot into a new VM in this process -> it must PASS too,
 *     continuing from the middle (no boot banner in its console output);
 *  2. same with stop: the first VM ends at the snapshot, the restore PASSes;
 *  3. a damaged snapshot (flipped byte in `state`, short `memory`) is refused.
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

#define MEM (512ULL << 20)

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
