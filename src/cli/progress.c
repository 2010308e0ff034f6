/* A one-line progress bar on stderr for long commands (suspend, resume):
 * "[#########.....................]  31%  160/512 MiB  0.85 GB/s". Only on a
 * terminal: nothing at all is written when stderr is a file or a pipe. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "cli/cli.h"

#define BAR_WIDTH 30

static bool active, drawn;
static uint64_t t0_ns, last_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool cli_progress_start(void)
{
	active = isatty(STDERR_FILENO);
	drawn = false;
	t0_ns = mono_ns();
	last_ns = 0;
	return active;
}

void cli_progress_draw(uint64_t done, uint64_t total)
{
	if (!active || !total)
		return;
	uint64_t now = mono_ns();
	/* At most 20 redraws a second (a terminal is slow), but always the last one. */
	if (done < total && now - last_ns < 50000000ull)
		return;
	last_ns = now;
	if (done > total)
		done = total;
	double s = (double)(now - t0_ns) / 1e9;
	char bar[BAR_WIDTH + 1];
	unsigned fill = (unsigned)(done * BAR_WIDTH / total);
	for (unsigned i = 0; i < BAR_WIDTH; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[BAR_WIDTH] = 0;
	fprintf(stderr, "\r[%s] %3u%%  %llu/%llu MiB  %.2f GB/s ", bar, (unsigned)(done * 100 / total),
		(unsigned long long)(done >> 20), (unsigned long long)(total >> 20), s > 0 ? (double)done / s / 1e9 : 0.0);
	fflush(stderr);
	drawn = true;
}

void cli_progress_end(bool ok)
{
	if (active && drawn)
		fputs(ok ? "\r\033[K" : "\n", stderr);
	active = drawn = false;
}
