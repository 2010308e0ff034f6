/* Host ceiling for scripts/bench/blk.sh: the blk guest's benchmark
 * (tests/guests/virtio_blk.c, blk.bench=1) done directly on the host, without
 * a VM. Same file region, request sizes, queue depths, op counts, random
 * offsets (the guest's LCG, continued across the four random rows), and the
 * same refill pattern (fill the queue up to the depth, then one new request
 * per completion), with io_uring readv/writev of one buffer each, O_DIRECT
 * with --direct. What no VMM on this host can beat for the same pattern.
 *
 * --merged: the sequential depth-32 rows as 2 MiB requests at depth 2 instead
 * (same bytes): what a VMM that merges adjacent requests (vmsvc does, up to
 * 2 MiB) could at best turn 32 x 128 KiB in flight into.
 *
 * usage: blk_host [--direct] [--merged] [--rand-ops N] FILE MiB
 * prints "bench: <row> qd=<n> bs=.. ops=.. bytes=.. ns=.. MB/s=x.yyy" lines
 * like the guest, then "PASS". Exit status 1 on any error (message on stderr). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR 512u
#define NSLOTS 32u
#define SLOT_BYTES (128u * 1024u)
#define MERGED_BYTES (2u << 20)
#define BLOCK_SECTORS 8u

/* The guest's generator, state shared by the random rows in order. */
static uint64_t lcg_state = 88172645463325252ULL;

static uint64_t random_sector(uint64_t span_blocks)
{
	lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((lcg_state >> 24) % span_blocks) * BLOCK_SECTORS;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct row {
	const char *name;
	bool write, seq;
	unsigned qd;
};

static const struct row rows[8] = {
	{ "seq-write", true, true, 1 },    { "seq-write", true, true, 32 },
	{ "seq-read", false, true, 1 },    { "seq-read", false, true, 32 },
	{ "rand-write", true, false, 1 },  { "rand-write", true, false, 32 },
	{ "rand-read", false, false, 1 },  { "rand-read", false, false, 32 },
};

static int queue_one(struct io_uring *ring, int fd, const struct row *rw, struct iovec *iov, unsigned slot,
		     uint64_t sector)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	if (!sqe) {
		fprintf(stderr, "blk_host: io_uring: no free SQE\n");
		return -1;
	}
	if (rw->write)
		io_uring_prep_writev(sqe, fd, &iov[slot], 1, sector * SECTOR);
	else
		io_uring_prep_readv(sqe, fd, &iov[slot], 1, sector * SECTOR);
	io_uring_sqe_set_data64(sqe, slot);
	return 0;
}

/* One row; returns the elapsed ns, or 0 on error. */
static uint64_t run_row(struct io_uring *ring, int fd, const struct row *rw, unsigned qd, uint8_t *bufs,
			unsigned count, uint32_t len, uint64_t span_blocks)
{
	struct iovec iov[NSLOTS];
	bool busy[NSLOTS] = { false };
	/* The slots tile the same 4 MiB whatever the request size (2 MiB ones: two slots). */
	for (unsigned s = 0; s < NSLOTS; s++)
		iov[s] = (struct iovec){ bufs + (size_t)s * len % ((size_t)NSLOTS * SLOT_BYTES), len };
	unsigned next = 0, inflight = 0;
	uint64_t t0 = now_ns();
	while (next < count || inflight) {
		bool added = false;
		for (unsigned s = 0; s < qd && next < count; s++) {
			if (busy[s])
				continue;
			uint64_t sector = rw->seq ? (uint64_t)next * (len / SECTOR) : random_sector(span_blocks);
			if (queue_one(ring, fd, rw, iov, s, sector) < 0)
				return 0;
			busy[s] = true;
			next++;
			inflight++;
			added = true;
		}
		if (added) {
			int r = io_uring_submit(ring);
			if (r < 0) {
				fprintf(stderr, "blk_host: io_uring_submit: %s\n", strerror(-r));
				return 0;
			}
		}
		struct io_uring_cqe *cqe;
		int r = io_uring_wait_cqe(ring, &cqe);
		if (r < 0) {
			fprintf(stderr, "blk_host: io_uring_wait_cqe: %s\n", strerror(-r));
			return 0;
		}
		uint64_t s = io_uring_cqe_get_data64(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		if (s >= NSLOTS || !busy[s]) {
			fprintf(stderr, "blk_host: completion for an idle slot %llu\n", (unsigned long long)s);
			return 0;
		}
		if (res != (int)len) {
			/* Short transfers do not happen on a fully written regular file. */
			fprintf(stderr, "blk_host: %s: %s (result %d, wanted %u)\n", rw->name,
				res < 0 ? strerror(-res) : "short transfer", res, len);
			return 0;
		}
		busy[s] = false;
		inflight--;
	}
	uint64_t t = now_ns() - t0;
	return t ? t : 1;
}

int main(int argc, char **argv)
{
	bool direct = false, merged = false;
	unsigned long rand_ops = 4096;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--direct"))
			direct = true;
		else if (!strcmp(argv[i], "--merged"))
			merged = true;
		else if (!strcmp(argv[i], "--rand-ops") && i + 1 < argc)
			rand_ops = strtoul(argv[++i], NULL, 0);
		else
			break;
	}
	if (argc - i != 2 || rand_ops == 0 || rand_ops > 1u << 24) {
		fprintf(stderr, "usage: blk_host [--direct] [--merged] [--rand-ops N] FILE MiB\n");
		return 2;
	}
	const char *path = argv[i];
	uint64_t mb = strtoull(argv[i + 1], NULL, 0);
	int fd = open(path, O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0));
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "blk_host: %s: %s\n", path, strerror(errno));
		return 1;
	}
	/* The guest's span: MiB in sectors, at most the disk, whole 128 KiB requests. */
	uint64_t capacity = (uint64_t)st.st_size / SECTOR, span = mb * 2048;
	if (span > capacity)
		span = capacity;
	span &= ~(uint64_t)255;
	if (span < 256) {
		fprintf(stderr, "blk_host: %s: smaller than the %llu MiB region\n", path, (unsigned long long)mb);
		return 1;
	}
	/* Anonymous THP memory, like guest RAM under both VMMs. */
	size_t total = (size_t)NSLOTS * SLOT_BYTES;
	uint8_t *bufs = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bufs == MAP_FAILED) {
		fprintf(stderr, "blk_host: mmap: %s\n", strerror(errno));
		return 1;
	}
	madvise(bufs, total, MADV_HUGEPAGE);
	for (size_t k = 0; k < total; k++)
		bufs[k] = (uint8_t)(k * 131 + 7);   /* paged in, non-zero */
	struct io_uring ring;
	int r = io_uring_queue_init(NSLOTS, &ring, 0);
	if (r < 0) {
		fprintf(stderr, "blk_host: io_uring_queue_init: %s\n", strerror(-r));
		return 1;
	}
	printf("bench: span_bytes=%llu rand_ops=%lu direct=%d\n", (unsigned long long)span * SECTOR, rand_ops, direct);
	for (unsigned k = 0; k < 8; k++) {
		const struct row *rw = &rows[k];
		uint32_t len = rw->seq ? 256 * SECTOR : BLOCK_SECTORS * SECTOR;
		unsigned count = rw->seq ? (unsigned)(span / 256) : (unsigned)rand_ops, qd = rw->qd;
		uint64_t bytes = (uint64_t)count * len;
		if (merged && rw->seq && qd == NSLOTS && span % (MERGED_BYTES / SECTOR) == 0) {
			len = MERGED_BYTES;
			count = (unsigned)(bytes / len);
			qd = NSLOTS * SLOT_BYTES / MERGED_BYTES;
		}
		uint64_t ns = run_row(&ring, fd, rw, qd, bufs, count, len, span / BLOCK_SECTORS);
		if (!ns)
			return 1;
		uint64_t kbps = bytes * 1000000u / ns;   /* bytes per ms = KB/s */
		printf("bench: %s qd=%u bs=%u ops=%u bytes=%llu ns=%llu MB/s=%llu.%03llu\n", rw->name, rw->qd, len, count,
		       (unsigned long long)bytes, (unsigned long long)ns, (unsigned long long)(kbps / 1000),
		       (unsigned long long)(kbps % 1000));
	}
	io_uring_queue_exit(&ring);
	close(fd);
	printf("PASS\n");
	return 0;
}
