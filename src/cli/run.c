/* `vmsvc run`: boot a guest with its serial console on the terminal or a file. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/imgboot.h>
#include <vmsvc/control.h>
#include <vmsvc/services.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vm.h>
#include <vmsvc/vmi.h>
#include <vmsvc/vmstate.h>
#include "cli/cli.h"

/* Exit statuses (documented in README). */
#define EXIT_START_FAILURE 2

static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: vmsvc run --kernel IMAGE [options]\n"
		"       vmsvc run DISK.img [options]\n"
		"       vmsvc run --restore DIR [--disk SPEC...] [--net SPEC...] [options]\n"
		"\n"
		"Boot IMAGE (bzImage, ELF vmlinux, or PVH ELF) and connect its serial console (COM1).\n"
		"With a disk image instead of --kernel, the kernel and initrd are taken from the\n"
		"image's ext2/3/4 file system (bare or in an MBR/GPT partition), the image is\n"
		"attached as /dev/vda and booted with root= pointing at it.\n"
		"\n"
		"options:\n"
		"  -k, --kernel IMAGE       kernel to boot\n"
		"  -i, --initrd FILE        initial ramdisk (PVH: module 0)\n"
		"  -a, --append CMDLINE     kernel command line (default: console=ttyS0 reboot=k panic=1)\n"
		"  -m, --mem SIZE           guest RAM, e.g. 512M, 2G (bare number = MiB; default 512M)\n"
		"  -c, --cpus N             number of vCPUs (default 1)\n"
		"      --cpu-features LIST  hide CPU features: -cx16,-xsave,... or the preset\n"
		"                           'emulator-safe' (for hosts whose KVM emulates guest kernel code)\n"
		"      --hugepages          back guest RAM with reserved 2 MiB huge pages (hugetlbfs)\n"
		"      --mem-shared         back guest RAM with a shareable memfd (default: anonymous\n"
		"                           memory with transparent huge pages)\n"
		"  -s, --serial WHERE       stdio (default), file:PATH, or none\n"
		"      --stats              print exit statistics when the guest ends\n"
		"      --rng                add a virtio-rng PCI device (host getrandom)\n"
		"      --name NAME          control socket name (default vm-PID): see 'vmsvc ls', docs/api.md\n"
		"      --control PATH       control socket path (default $XDG_RUNTIME_DIR/vmsvc/NAME.sock,\n"
		"                           /run/vmsvc/NAME.sock without XDG_RUNTIME_DIR)\n"
		"  -d, --disk SPEC          virtio-blk disk: PATH[,ro][,overlay=FILE|,ephemeral]\n"
		"                           [,serial=ID][,cache=none]  (repeatable)\n"
		"  -n, --net SPEC           virtio-net NIC: tap=NAME[,mac=MAC][,capture=FILE.pcap]\n"
		"                           [,create=on]  (repeatable)\n"
		"  -v, --verbose            more messages;  -q, --quiet  errors only\n"
		"      --restore DIR        continue the snapshot in DIR (vmsvc snapshot); memory,\n"
		"                           vCPUs and devices come from it; give the same --disk/--net\n"
		"      --paused             create the VM and its control socket but run no vCPU until\n"
		"                           'vmsvc resume NAME' (e.g. to inspect a restored snapshot)\n"
		"  -h, --help               this text\n"
		"\n"
		"Console: Ctrl-A x quits, Ctrl-A h helps.\n"
		"Exit status: 0 poweroff/reset/quit, (code << 1) | 1 for a write of code to the\n"
		"debug-exit port 0xf4 (QEMU isa-debug-exit compatible), 2 could not start,\n"
		"4 triple fault, 6 emulation failure, 8 other KVM/VMM failure, 128+N signal N.\n");
}

int cli_add_device_spec(struct vm_config *cfg, int opt, const char *spec)
{
	if (opt == 'd') {
		if (cfg->ndisks == VM_MAX_DISKS) {
			fprintf(stderr, "vmsvc: at most %d --disk options\n", VM_MAX_DISKS);
			return -1;
		}
		cfg->disks[cfg->ndisks++] = spec;
	} else {
		if (cfg->nnets == VM_MAX_NETS) {
			fprintf(stderr, "vmsvc: at most %d --net options\n", VM_MAX_NETS);
			return -1;
		}
		cfg->nets[cfg->nnets++] = spec;
	}
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	uint64_t mult = 1ULL << 20;
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'B': mult = 1; break;
	case 'K': mult = 1ULL << 10; break;
	case 'M': mult = 1ULL << 20; break;
	case 'G': mult = 1ULL << 30; break;
	case 'T': mult = 1ULL << 40; break;
	default: return -EINVAL;
	}
	if (*end && end[1] && !(toupper((unsigned char)end[1]) == 'I' && toupper((unsigned char)end[2]) == 'B' && !end[3]) &&
	    !(toupper((unsigned char)end[1]) == 'B' && !end[2]))
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

struct signal_waiter {
	struct vm *vm;
	sigset_t set;
};

static void *signal_thread(void *arg)
{
	struct signal_waiter *w = arg;
	int sig;
	/* SIGUSR2 is how cmd_run stops this thread (no pthread_cancel: sanitizers dislike it). */
	if (sigwait(&w->set, &sig) == 0 && sig != SIGUSR2) {
		char msg[64];
		snprintf(msg, sizeof(msg), "stopped by signal %d (%s)", sig, strsignal(sig));
		vm_request_end(w->vm, VM_END_USER, 128 + sig, msg);
	}
	return NULL;
}

/* KVM tears a VM down synchronously when its last file descriptor closes; with the
 * in-kernel PIT that takes ~20 ms on some hosts (its worker thread is stopped).
 * The guest has ended and its exit status is known, so the caller should not wait:
 * a short-lived child inherits the KVM descriptors, holds the last references and
 * pays for the teardown after we have exited. It closes stdio first so that nobody
 * waiting on our output pipes waits for it. VMSVC_SYNC_TEARDOWN=1 disables this. */
static void teardown_in_background(void)
{
	const char *sync = getenv("VMSVC_SYNC_TEARDOWN");
	if (sync && *sync && strcmp(sync, "0"))
		return;
	pid_t pid = fork();
	if (pid == 0) {
		/* Only async-signal-safe calls here: we are a fork of a threaded process. */
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		_exit(0);
	}
	/* On fork failure the teardown simply happens in this process. */
}

int run_configured(struct vm_config cfg, const char *serial, const struct control_config *ctl_cfg)
{
	bool start_paused = ctl_cfg->start_paused;
	int out_fd = -1;
	if (!strcmp(serial, "stdio")) {
		cfg.serial_out_fd = STDOUT_FILENO;
		cfg.serial_in_fd = STDIN_FILENO;
	} else if (!strncmp(serial, "file:", 5)) {
		out_fd = open(serial + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (out_fd < 0) {
			fprintf(stderr, "vmsvc: --serial %s: %s\n", serial, strerror(errno));
			return EXIT_START_FAILURE;
		}
		cfg.serial_out_fd = out_fd;
		cfg.serial_in_fd = -1;
	} else if (!strcmp(serial, "none")) {
		out_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		cfg.serial_out_fd = out_fd;
		cfg.serial_in_fd = -1;
	} else {
		fprintf(stderr, "vmsvc: --serial '%s': expected stdio, file:PATH or none\n", serial);
		return EXIT_START_FAILURE;
	}

	/* Process signals are taken by one thread and turned into a clean VM end. */
	struct signal_waiter w;
	sigemptyset(&w.set);
	sigaddset(&w.set, SIGINT);
	sigaddset(&w.set, SIGTERM);
	sigaddset(&w.set, SIGHUP);
	sigaddset(&w.set, SIGQUIT);
	sigaddset(&w.set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &w.set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct vm *vm;
	struct timespec restore_t0;
	clock_gettime(CLOCK_MONOTONIC, &restore_t0);
	if (vm_create(&cfg, &vm) < 0) {
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		if (out_fd >= 0)
			close(out_fd);
		return EXIT_START_FAILURE;
	}
	/* Every running VM has a control socket (docs/api.md); a name a live VM
	 * already owns is refused before the guest starts. Without --name or
	 * --control a socket that cannot be created is only a warning. */
	struct control *ctl = NULL;
	if (control_create(vm, &ctl) < 0 || control_start(ctl, ctl_cfg) < 0) {
		control_destroy(ctl);
		ctl = NULL;
		if (ctl_cfg->name || ctl_cfg->path) {
			fprintf(stderr, "vmsvc: %s\n", err_msg());
			vm_destroy(vm);
			if (out_fd >= 0)
				close(out_fd);
			return EXIT_START_FAILURE;
		}
		log_warn("no control socket: %s", err_msg());
	}
#ifdef HAVE_JSONC
	if (ctl) { /* "snapshot" (replaces the control service's placeholder), "suspend" */
		snapshot_control_register(ctl, vm);
		suspend_control_register(ctl, vm);
		vmi_control_register(ctl);   /* "memory": for vmsvc inspect NAME */
	}
#endif
	/* --paused: the pause is the control socket's own, so `vmsvc resume NAME`
	 * releases it; taken before any vCPU thread exists, so no guest
	 * instruction runs before that. */
	if (start_paused) {
		static const char req[] = "{\"cmd\":\"pause\"}";
		char *resp = NULL;
		if (!ctl || control_handle_line(ctl, req, sizeof(req) - 1, &resp) < 0 || !resp ||
		    !strstr(resp, "\"ok\":true")) {
			fprintf(stderr, "vmsvc: --paused needs the control socket (nothing could resume the VM)\n");
			free(resp);
			if (ctl) {
				control_stop(ctl);
				control_destroy(ctl);
			}
			vm_destroy(vm);
			if (out_fd >= 0)
				close(out_fd);
			return EXIT_START_FAILURE;
		}
		free(resp);
	}
	struct stats *stats = NULL;
	if (cfg.stats && stats_attach(vm, &stats) < 0)
		log_warn("%s", err_msg());
	w.vm = vm;
	pthread_t sig_thread;
	bool sig_started = pthread_create(&sig_thread, NULL, signal_thread, &w) == 0;
	if (console_start(vm, cfg.serial_in_fd) < 0)
		log_warn("console input disabled: %s", err_msg());

	int status = vm_run(vm);
	if ((cfg.restore_dir || cfg.restore_state) && vm->first_run_ns) {
		uint64_t t0 = (uint64_t)restore_t0.tv_sec * 1000000000ULL + (uint64_t)restore_t0.tv_nsec;
		log_info("restore: first KVM_RUN %.3f ms after restore start (CLOCK_MONOTONIC %llu ns)",
			 (double)(vm->first_run_ns - t0) / 1e6, (unsigned long long)vm->first_run_ns);
	}

	console_stop();
	control_stop(ctl);   /* flushes vm.stopped to event streams, removes the socket */
	if (sig_started) {
		pthread_kill(sig_thread, SIGUSR2);
		pthread_join(sig_thread, NULL);
	}
	if (vm->end_reason == VM_END_TRIPLE_FAULT || vm->end_reason == VM_END_EMUL_FAILURE ||
	    vm->end_reason == VM_END_INTERNAL)
		log_error("guest ended: %s (exit status %d)", vm->end_msg, status);
	else
		log_info("guest ended: %s (exit status %d)", vm->end_msg, status);
	uint64_t unassigned = vm->io.pio.unhandled + vm->io.mmio.unhandled;
	if (unassigned)
		log_warn("guest made %llu accesses to unassigned I/O ports (%llu) and MMIO (%llu); they were ignored",
			 (unsigned long long)unassigned, (unsigned long long)vm->io.pio.unhandled,
			 (unsigned long long)vm->io.mmio.unhandled);
	if (stats) {
		stats_print(stats, stderr);
		stats_detach(vm, stats);
	}
	control_destroy(ctl);
	teardown_in_background();
	vm_destroy(vm);
	if (out_fd >= 0)
		close(out_fd);
	return status;
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, 0, 'k' },  { "initrd", required_argument, 0, 'i' },
		{ "append", required_argument, 0, 'a' },  { "mem", required_argument, 0, 'm' },
		{ "cpus", required_argument, 0, 'c' },    { "cpu-features", required_argument, 0, 'F' },
		{ "hugepages", no_argument, 0, 'H' },     { "serial", required_argument, 0, 's' },
		{ "stats", no_argument, 0, 'S' },         { "verbose", no_argument, 0, 'v' },
		{ "quiet", no_argument, 0, 'q' },         { "help", no_argument, 0, 'h' },
		{ "rng", no_argument, 0, 'R' },
		{ "name", required_argument, 0, 'N' },    { "control", required_argument, 0, 'C' },
		{ "disk", required_argument, 0, 'd' },    { "net", required_argument, 0, 'n' },
		{ "restore", required_argument, 0, 'r' },
		{ "mem-shared", no_argument, 0, 'M' },
		{ "paused", no_argument, 0, 'P' },
		{ 0, 0, 0, 0 },
	};
	struct vm_config cfg = { .mem_size = 512ULL << 20, .ncpus = 1, .serial_out_fd = STDOUT_FILENO,
				 .serial_in_fd = STDIN_FILENO };
	const char *serial = "stdio";
	struct control_config ctl_cfg = { 0 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "k:i:a:m:c:s:d:n:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 'k': cfg.kernel = optarg; break;
		case 'i': cfg.initrd = optarg; break;
		case 'a': cfg.cmdline = optarg; break;
		case 'm':
			if (parse_size(optarg, &cfg.mem_size) < 0) {
				fprintf(stderr, "vmsvc: --mem '%s': not a size (e.g. 512M, 2G)\n", optarg);
				return EXIT_START_FAILURE;
			}
			break;
		case 'c': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > VM_MAX_CPUS) {
				fprintf(stderr, "vmsvc: --cpus '%s': expected 1..%d\n", optarg, VM_MAX_CPUS);
				return EXIT_START_FAILURE;
			}
			cfg.ncpus = (int)n;
			break;
		}
		case 'F': cfg.cpu_features = optarg; break;
		case 'H': cfg.hugepages = true; break;
		case 'M': cfg.mem_shared = true; break;
		case 's': serial = optarg; break;
		case 'S': cfg.stats = true; break;
		case 'R': cfg.rng = true; break;
		case 'r': cfg.restore_dir = optarg; break;
		case 'N': ctl_cfg.name = optarg; break;
		case 'P': ctl_cfg.start_paused = true; break;
		case 'C': ctl_cfg.path = optarg; break;
		case 'd':
		case 'n':
			if (cli_add_device_spec(&cfg, c, optarg) < 0)
				return EXIT_START_FAILURE;
			break;
		case 'v': log_set_level(2); break;
		case 'q': log_set_level(0); break;
		case 'h': run_usage(stdout); return 0;
		default: run_usage(stderr); return EXIT_START_FAILURE;
		}
	}
	/* `vmsvc run guest.img`: the kernel comes from inside the image. */
	struct imgboot_result img = { .kernel_fd = -1, .initrd_fd = -1 };
	char *img_cmdline = NULL, *img_disk = NULL;
	if (optind < argc) {
		if (cfg.kernel || cfg.restore_dir || optind + 1 < argc) {
			fprintf(stderr, "vmsvc: unexpected argument '%s' (a disk image replaces --kernel)\n",
				argv[cfg.kernel || cfg.restore_dir ? optind : optind + 1]);
			return EXIT_START_FAILURE;
		}
		if (cfg.ndisks == VM_MAX_DISKS) {
			fprintf(stderr, "vmsvc: too many disks\n");
			return EXIT_START_FAILURE;
		}
		const char *image = argv[optind];
		if (imgboot_find(image, &img) < 0) {
			fprintf(stderr, "vmsvc: %s\n", err_msg());
			return EXIT_START_FAILURE;
		}
		cfg.kernel = img.kernel_path;
		if (img.initrd_path[0] && !cfg.initrd)
			cfg.initrd = img.initrd_path;
		/* The image is the first disk (/dev/vda), so root= names it; the user's
		 * --append comes last and wins. Disk options (,overlay=...) may be given
		 * by repeating the image in --disk; otherwise it is attached read-write. */
		if (asprintf(&img_cmdline, "console=ttyS0 reboot=k panic=1 root=%s rootfstype=%s rw%s%s", img.root_dev,
			     img.fs_type, cfg.cmdline ? " " : "", cfg.cmdline ? cfg.cmdline : "") < 0 ||
		    asprintf(&img_disk, "%s", image) < 0) {
			fprintf(stderr, "vmsvc: out of memory\n");
			imgboot_release(&img);
			return EXIT_START_FAILURE;
		}
		cfg.cmdline = img_cmdline;
		bool have = false;
		for (unsigned i = 0; i < cfg.ndisks; i++)
			if (!strncmp(cfg.disks[i], image, strlen(image)) &&
			    (cfg.disks[i][strlen(image)] == 0 || cfg.disks[i][strlen(image)] == ','))
				have = true;
		if (!have) {
			memmove(&cfg.disks[1], &cfg.disks[0], cfg.ndisks * sizeof(cfg.disks[0]));
			cfg.disks[0] = img_disk;
			cfg.ndisks++;
		}
		if (img.partition > 0)
			log_info("%s: booting %s%s%s from %s partition %d, root=%s", image, img.kernel_file,
				 img.initrd_file[0] ? " with " : "", img.initrd_file, img.table, img.partition,
				 img.root_dev);
		else /* a bare file system: "none partition 0" would read like an error */
			log_info("%s: booting %s%s%s from the whole disk (no partition table), root=%s", image,
				 img.kernel_file, img.initrd_file[0] ? " with " : "", img.initrd_file, img.root_dev);
	}
	if (!cfg.kernel && !cfg.restore_dir) {
		fprintf(stderr, "vmsvc: run: --kernel IMAGE or a disk image is required (see 'vmsvc run --help')\n");
		return EXIT_START_FAILURE;
	}
	int status = run_configured(cfg, serial, &ctl_cfg);
	imgboot_release(&img);
	free(img_cmdline);
	free(img_disk);
	return status;
}
