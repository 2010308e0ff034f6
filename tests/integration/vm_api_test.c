/* The VM API inside one process: two VMs at once (clones will need it), and
 * pause/resume of a running VM with several vCPUs. Runs real guests on /dev/kvm.
 * usage: vm_api_test HELLO.elf CPL3.elf */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

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

static int make_vm(const char *kernel, int ncpus, const char *append, struct vm **vm)
{
	int out = open("/dev/null", O_WRONLY);
	struct vm_config cfg = { .kernel = kernel, .cmdline = append, .mem_size = 64ULL << 20, .ncpus = ncpus,
				 .serial_out_fd = out, .serial_in_fd = -1 };
	if (vm_create(&cfg, vm) < 0) {
		fprintf(stderr, "vm_create %s: %s\n", kernel, err_msg());
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s HELLO.elf CPL3.elf\n", argv[0]);
		return 2;
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		fprintf(stderr, "no /dev/kvm: skipped\n");
		return 77;
	}
	struct runner a = { 0 }, b = { 0 };
	if (make_vm(argv[2], 2, "cpus=2", &a.vm) < 0 || make_vm(argv[1], 1, "cpus=1", &b.vm) < 0)
		return 1;
	pthread_create(&a.t, NULL, run_thread, &a);
	pthread_create(&b.t, NULL, run_thread, &b);
	/* Pause and resume the long-running VM many times while it computes. */
	int pauses = 0;
	for (int i = 0; i < 200 && !a.vm->ending; i++) {
		if (vm_pause(a.vm) == 0) {
			if (!vm_is_paused(a.vm) || (a.vm->parked != a.vm->running_threads && !a.vm->ending)) {
				fprintf(stderr, "pause returned with %d of %d vCPUs parked\n", a.vm->parked,
					a.vm->running_threads);
				return 1;
			}
			pauses++;
			usleep(200);
			vm_resume(a.vm);
		}
		usleep(1000);
	}
	pthread_join(a.t, NULL);
	pthread_join(b.t, NULL);
	printf("cpl3: status %d (%s), hello: status %d (%s), %d pauses\n", a.status, a.vm->end_msg, b.status,
	       b.vm->end_msg, pauses);
	int ok = a.status == 1 && b.status == 1 && pauses > 0;
	vm_destroy(a.vm);
	vm_destroy(b.vm);
	return ok ? 0 : 1;
}
