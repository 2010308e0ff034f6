/* `vmsvc resume FILE`: continue a VM saved by `vmsvc suspend`. The whole file is
 * read and authenticated first (guest RAM into a fresh memfd); only then is the
 * VM built from it and run exactly as `vmsvc run --restore` would. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vm.h>
#include "cli/cli.h"

#define EXIT_START_FAILURE 2

static void resume_usage(FILE *f)
{
	fprintf(f,
		"usage: vmsvc resume FILE [--passphrase-file F | --key-file F] [options]\n"
		"Continue a VM saved with 'vmsvc suspend'. A wrong key or a damaged, truncated or\n"
		"newer file is refused (exit status 2) before anything runs.\n"
		"options (as for 'vmsvc run'): --serial stdio|file:PATH|none, --disk SPEC (the same\n"
		"number and images as when suspended), --net SPEC, --name NAME, --control PATH, --paused,\n"
		"--stats, -v, -q\n"
		"A disk suspended with an overlay (overlay=FILE or ephemeral) gets its blocks back in\n"
		"a new overlay: give its base image with ,overlay=NEWFILE or ,ephemeral (a bare base\n"
		"image means ,ephemeral). An image that differs from the suspended one is refused.\n");
}

static void resume_progress(uint64_t done, uint64_t total, void *arg)
{
	(void)arg;
	cli_progress_draw(done, total);
}

int cmd_resume_file(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, 0, 'P' }, { "key-file", required_argument, 0, 'K' },
		{ "serial", required_argument, 0, 's' },          { "disk", required_argument, 0, 'd' },
		{ "net", required_argument, 0, 'n' },             { "name", required_argument, 0, 'N' },
		{ "control", required_argument, 0, 'C' },         { "stats", no_argument, 0, 'S' },
		{ "verbose", no_argument, 0, 'v' },               { "quiet", no_argument, 0, 'q' },
		{ "help", no_argument, 0, 'h' },                  { "paused", no_argument, 0, 'p' },
		{ 0, 0, 0, 0 },
	};
	struct vm_config cfg = { .serial_out_fd = STDOUT_FILENO, .serial_in_fd = STDIN_FILENO, .restore_mem_fd = -1 };
	struct control_config ctl_cfg = { 0 };
	const char *serial = "stdio", *pass = NULL, *keyf = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:d:n:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 'P': pass = optarg; break;
		case 'K': keyf = optarg; break;
		case 's': serial = optarg; break;
		case 'N': ctl_cfg.name = optarg; break;
		case 'C': ctl_cfg.path = optarg; break;
		case 'p': ctl_cfg.start_paused = true; break;
		case 'S': cfg.stats = true; break;
		case 'd':
		case 'n':
			if (cli_add_device_spec(&cfg, c, optarg) < 0)
				return EXIT_START_FAILURE;
			break;
		case 'v': log_set_level(2); break;
		case 'q': log_set_level(0); break;
		case 'h': resume_usage(stdout); return 0;
		default: resume_usage(stderr); return EXIT_START_FAILURE;
		}
	}
	if (optind + 1 != argc || !pass == !keyf) {
		resume_usage(stderr);
		return EXIT_START_FAILURE;
	}
	const char *file = argv[optind];
	struct sealed_key *key = NULL;
	int r = pass ? sealed_key_from_passphrase_file(pass, &key) : sealed_key_from_key_file(keyf, &key);
	struct suspend_image img = { .mem_fd = -1 };
	struct timespec t0, t1;
	struct rusage ru0, ru1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	getrusage(RUSAGE_SELF, &ru0);
	/* Reader progress: file bytes read of the file size. */
	struct sealed_opts lo = { 0 };
	if (cli_progress_start())
		lo.progress = resume_progress;
	if (r == 0)
		r = suspend_load_file(file, key, &lo, &cfg, &img);
	cli_progress_end(r == 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru1);
	sealed_key_free(key);
	if (r == 0)
		r = suspend_image_configure(&img, &cfg);
	if (r < 0) {
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		suspend_image_free(&img);
		return EXIT_START_FAILURE;
	}
	struct stat st;
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	if (fstat(img.mem_fd, &st) == 0)   /* scripts/bench/state.sh parses this line */
		log_info("resume: %s read and verified in %.1f ms, %.1f CPU-ms: %.3f GB/s of guest memory", file, s * 1e3,
			 cpu * 1e3, (double)st.st_size / s / 1e9);
	cfg.restore_state = img.state;
	cfg.restore_state_len = img.state_len;
	cfg.restore_mem_fd = img.mem_fd;
	cfg.restore_name = file;
	int status = run_configured(cfg, serial, &ctl_cfg);
	if (status == EXIT_START_FAILURE)   /* guest statuses are never 2: the VM did not start */
		suspend_image_discard_new_overlays(&img);
	suspend_image_free(&img);
	return status;
}
