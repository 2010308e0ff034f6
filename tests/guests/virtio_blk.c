/* virtio-blk: needs a disk of at least 8 MiB (its contents are overwritten).
 *
 * Default: capacity and serial (GET_ID), then at CPL3 (native speed; the
 * rings and BARs are user-accessible): sequential writes of a 4 MiB region
 * with 32 requests in flight, random 4 KiB writes over it, FLUSH, sequential
 * and random read-back with verification (every 512-byte sector carries its
 * sector number and the seed of the write), a queue-depth-1 pass,
 * out-of-range and unknown requests (IOERR / UNSUPP), WRITE_ZEROES (reads
 * back zeros) and DISCARD when offered; then, at CPL0, reads completed
 * through MSI-X interrupts (sti;hlt).
 * blk.verify=1: only read the 4 MiB region back and check it holds what a
 * finished default run wrote (zeros where it wrote zeroes, discarded range
 * skipped): used after a restart on an overlay. blk.wait_ticks=N first idles
 * N LAPIC ticks (100 Hz, sti;hlt, "blk: waiting, tick K" every second) with
 * the device set up: a suspend/resume test suspends it there.
 * blk.ro=1: the disk is read-only: VIRTIO_BLK_F_RO must be offered, reads
 * work, a write completes with VIRTIO_BLK_S_IOERR.
 * blk.denied=1: the same on a writable disk whose writes a service-bus gate
 * denies (tests/integration/bus_gate_test.c), then the MSI-X read phase.
 * blk.bench=1: sequential (128 KiB) and random (4 KiB) read/write throughput
 * at queue depth 1 and 32 over blk.bench_mb MiB (default 64); TSC calibrated
 * against PIT channel 2. Lines "bench: ..." are parsed by scripts/bench/blk.sh. */
#include "lib/virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_BOGUS 0x7f

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define STATUS_PENDING 0xee     /* what we put in the status byte before submitting */

#define CFG_CAPACITY 0
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX 12
#define CFG_BLK_SIZE 20

#define SECTOR 512u
#define NSLOTS 32
#define SLOT_BYTES (128u * 1024u)
#define DATA_BASE 0x02000000UL     /* 32 MiB: free RAM above the image (guests get >= 64 MiB) */
#define REGION_SECTORS 8192u       /* 4 MiB test region at sector 0 */
#define BLOCK_SECTORS 8u           /* 4 KiB random-I/O unit */
#define REGION_BLOCKS (REGION_SECTORS / BLOCK_SECTORS)
#define RANDOM_IOS 256u
#define WAIT_CYCLES 60000000000ULL /* ~20 s on any plausible TSC */
#define SEED_SEQ 0x5eedu
#define SEED_RAND 0xa11ceu

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_range {   /* DISCARD / WRITE_ZEROES payload */
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

struct slot {
	struct blk_hdr *hdr;
	uint8_t *status;
	struct blk_range *range;
	uint8_t *data;
	uint32_t len;
	bool busy;
};

static struct virtio_dev vd;
static struct virtq q;
static struct slot slots[NSLOTS];
static uint64_t capacity;
static uint8_t rand_written[REGION_BLOCKS];   /* 1: block holds SEED_RAND data */

/* CPL3 code cannot print (port I/O faults there): failures leave a note. */
static struct {
	const char *what;
	uint64_t a, b, c;
} err;

static long fail_note(const char *what, uint64_t a, uint64_t b, uint64_t c)
{
	err.what = what;
	err.a = a;
	err.b = b;
	err.c = c;
	return -1;
}

static bool has(unsigned bit)
{
	return (vd.features >> bit) & 1;
}

/* ---- patterns: word 0 = sector number, word 1 = seed, the rest mixed ---- */
static uint64_t mix(uint64_t s, uint64_t seed, uint64_t k)
{
	uint64_t x = s * 0x9e3779b97f4a7c15ULL + seed * 0xc2b2ae3d27d4eb4fULL + k;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 32);
}

static void fill(uint8_t *buf, uint64_t sector, uint32_t nsect, uint64_t seed)
{
	for (uint32_t i = 0; i < nsect; i++) {
		uint64_t *w = (uint64_t *)(buf + (size_t)i * SECTOR);
		uint64_t s = sector + i;
		w[0] = s;
		w[1] = seed;
		for (unsigned k = 2; k < SECTOR / 8; k++)
			w[k] = mix(s, seed, k);
	}
}

#define ZERO_FIRST 1024u      /* WRITE_ZEROES range of the read/write test */
#define ZERO_SECTORS 64u
#define DISCARD_FIRST 2048u    /* DISCARD range of the read/write test */
#define DISCARD_SECTORS 128u
#define SEED_ZERO 0
#define SEED_ANY 2             /* contents unspecified (discarded) */
static bool after_rw_test;     /* blk.verify=1: the disk holds a finished rw_test */

static uint64_t expected_seed(uint64_t s)
{
	if (after_rw_test && has(VIRTIO_BLK_F_WRITE_ZEROES) && s >= ZERO_FIRST && s < ZERO_FIRST + ZERO_SECTORS)
		return SEED_ZERO;
	if (after_rw_test && has(VIRTIO_BLK_F_DISCARD) && s >= DISCARD_FIRST && s < DISCARD_FIRST + DISCARD_SECTORS)
		return SEED_ANY;
	if (s < REGION_SECTORS && rand_written[s / BLOCK_SECTORS])
		return SEED_RAND;
	return SEED_SEQ;
}

/* seed 0 = expect zeros; seed 1 = per-block map (sequential or random seed). */
static long verify(const uint8_t *buf, uint64_t sector, uint32_t nsect, uint64_t seed)
{
	for (uint32_t i = 0; i < nsect; i++) {
		const uint64_t *w = (const uint64_t *)(buf + (size_t)i * SECTOR);
		uint64_t s = sector + i;
		uint64_t sd = seed == 1 ? expected_seed(s) : seed;
		if (sd == SEED_ANY)
			continue;
		if (sd == SEED_ZERO) {
			for (unsigned k = 0; k < SECTOR / 8; k++)
				if (w[k] != 0)
					return fail_note("non-zero data after WRITE_ZEROES (sector, word, value)", s, k, w[k]);
			continue;
		}
		if (w[0] != s || w[1] != sd)
			return fail_note("sector header mismatch (sector, found sector, found seed)", s, w[0], w[1]);
		for (unsigned k = 2; k < SECTOR / 8; k++)
			if (w[k] != mix(s, sd, k))
				return fail_note("sector data mismatch (sector, word, value)", s, k, w[k]);
	}
	return 0;
}

/* ---- request engine (runs at CPL0 or CPL3) ---- */
struct job {
	uint32_t type;
	unsigned count, qd;
	uint32_t nsect;                              /* per request */
	uint64_t (*sector_of)(unsigned i, const struct job *j);
	uint64_t fill_seed;                          /* writes: 0 = leave buffer as is */
	uint64_t verify_seed;                        /* reads: 0 zeros, 1 map, other = seed; see no_verify */
	bool no_verify;
	uint8_t want_status;
	uint64_t base;                               /* for sector_of */
	uint64_t span_blocks;
};

static int submit(struct slot *sl, uint32_t type, uint64_t sector, uint32_t len)
{
	struct virtq_sg sg[3];
	unsigned n_out = 1, n_in = 0;
	sl->hdr->type = type;
	sl->hdr->reserved = 0;
	sl->hdr->sector = (type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) ? 0 : sector;
	*sl->status = STATUS_PENDING;
	sl->len = len;
	sg[0] = (struct virtq_sg){ sl->hdr, sizeof(*sl->hdr) };
	if (type == VIRTIO_BLK_T_OUT) {
		sg[n_out++] = (struct virtq_sg){ sl->data, len };
	} else if (type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) {
		sl->range->sector = sector;
		sl->range->num_sectors = len / SECTOR;
		sl->range->flags = 0;
		sg[n_out++] = (struct virtq_sg){ sl->range, sizeof(*sl->range) };
	} else if (len) {
		sg[n_out + n_in++] = (struct virtq_sg){ sl->data, len };
	}
	sg[n_out + n_in++] = (struct virtq_sg){ sl->status, 1 };
	if (virtq_add(&q, sg, n_out, n_in, sl) != 0)
		return -1;
	sl->busy = true;
	return 0;
}

static uint64_t reqs_done;

static long run_job(const struct job *j)
{
	unsigned next = 0, inflight = 0;
	uint64_t sector_for[NSLOTS];
	if (j->qd == 0 || j->qd > NSLOTS || (uint64_t)j->nsect * SECTOR > SLOT_BYTES)
		return fail_note("bad job", j->qd, j->nsect, 0);
	while (next < j->count || inflight) {
		/* Fill the queue up to the depth, then kick once for the batch. */
		bool added = false;
		for (unsigned s = 0; s < j->qd && next < j->count; s++) {
			if (slots[s].busy)
				continue;
			uint64_t sector = j->sector_of(next, j);
			if (j->type == VIRTIO_BLK_T_OUT && j->fill_seed)
				fill(slots[s].data, sector, j->nsect, j->fill_seed);
			sector_for[s] = sector;
			if (submit(&slots[s], j->type, sector, j->nsect * SECTOR) != 0)
				return fail_note("virtq_add failed (request, in flight, free descriptors)", next, inflight,
						 q.num_free);
			next++;
			inflight++;
			added = true;
		}
		if (added)
			virtq_kick(&q);
		uint32_t len = 0;
		struct slot *sl = virtq_wait(&q, &len, WAIT_CYCLES);
		if (sl == NULL)
			return fail_note("request timed out (type, in flight, status register)", j->type, inflight,
					 virtio_status(&vd));
		if (sl == VIRTQ_BAD_USED || sl < slots || sl >= slots + NSLOTS || !sl->busy)
			return fail_note("used ring names a request we did not submit", (uintptr_t)sl, 0, 0);
		sl->busy = false;
		inflight--;
		reqs_done++;
		if (*sl->status != j->want_status)
			return fail_note("request status (type, status, wanted)", j->type, *sl->status, j->want_status);
		if (j->type == VIRTIO_BLK_T_IN && j->want_status == VIRTIO_BLK_S_OK) {
			if (len != sl->len + 1)
				return fail_note("read: used length (got, expected, type)", len, sl->len + 1, j->type);
			if (!j->no_verify) {
				long r = verify(sl->data, sector_for[sl - slots], j->nsect, j->verify_seed);
				if (r)
					return r;
			}
		}
	}
	return 0;
}

static uint64_t seq_sector(unsigned i, const struct job *j)
{
	return j->base + (uint64_t)i * j->nsect;
}

/* Distinct 4 KiB blocks in a scrambled order: i * odd stride mod a power of two. */
static uint64_t perm_sector(unsigned i, const struct job *j)
{
	uint64_t b = ((uint64_t)i * 389 + j->base) & (j->span_blocks - 1);
	return b * BLOCK_SECTORS;
}

static uint64_t lcg_state = 88172645463325252ULL;
static uint64_t random_sector(unsigned i, const struct job *j)
{
	(void)i;
	lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((lcg_state >> 24) % j->span_blocks) * BLOCK_SECTORS;
}

static uint64_t fixed_sector(unsigned i, const struct job *j)
{
	(void)i;
	return j->base;
}

static struct job random_write_job(void)
{
	return (struct job){ .type = VIRTIO_BLK_T_OUT, .count = RANDOM_IOS, .qd = 32, .nsect = BLOCK_SECTORS,
			     .sector_of = perm_sector, .fill_seed = SEED_RAND, .base = 17, .span_blocks = REGION_BLOCKS };
}

static void mark_random_writes(const struct job *j)
{
	for (unsigned i = 0; i < j->count; i++)
		rand_written[perm_sector(i, j) / BLOCK_SECTORS] = 1;
}

/* blk.verify=1: read the region a finished rw_test left (e.g. in an overlay
 * after a restart) and check it, without writing anything. */
static long verify_test(long arg)
{
	(void)arg;
	struct job j = random_write_job();
	mark_random_writes(&j);
	after_rw_test = true;
	j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = REGION_SECTORS / 128, .qd = 32, .nsect = 128,
			  .sector_of = seq_sector, .verify_seed = 1 };
	return run_job(&j);
}

/* ---- the read/write test, at CPL3 ---- */
static long rw_test(long arg)
{
	(void)arg;
	struct job j;
	long r;
	/* 1. sequential writes, 64 KiB each, 32 in flight */
	j = (struct job){ .type = VIRTIO_BLK_T_OUT, .count = REGION_SECTORS / 128, .qd = 32, .nsect = 128,
			  .sector_of = seq_sector, .fill_seed = SEED_SEQ };
	if ((r = run_job(&j)))
		return r;
	/* 2. random 4 KiB writes over distinct blocks */
	j = random_write_job();
	mark_random_writes(&j);
	if ((r = run_job(&j)))
		return r;
	/* 3. flush */
	if (has(VIRTIO_BLK_F_FLUSH)) {
		j = (struct job){ .type = VIRTIO_BLK_T_FLUSH, .count = 1, .qd = 1, .sector_of = fixed_sector };
		if ((r = run_job(&j)))
			return r;
	}
	/* 4. sequential read-back, 32 in flight */
	j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = REGION_SECTORS / 128, .qd = 32, .nsect = 128,
			  .sector_of = seq_sector, .verify_seed = 1 };
	if ((r = run_job(&j)))
		return r;
	/* 5. random read-back (another permutation), 32 in flight */
	j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = REGION_BLOCKS, .qd = 32, .nsect = BLOCK_SECTORS,
			  .sector_of = perm_sector, .verify_seed = 1, .base = 5, .span_blocks = REGION_BLOCKS };
	if ((r = run_job(&j)))
		return r;
	/* 6. queue depth 1, 16 KiB reads */
	j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = 64, .qd = 1, .nsect = 32, .sector_of = seq_sector,
			  .verify_seed = 1, .base = 4096 };
	if ((r = run_job(&j)))
		return r;
	/* 7. beyond the end: straddling and entirely outside -> IOERR */
	j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = 1, .qd = 1, .nsect = 8, .sector_of = fixed_sector,
			  .want_status = VIRTIO_BLK_S_IOERR, .base = capacity - 4 };
	if ((r = run_job(&j)))
		return r;
	j.base = capacity;
	j.nsect = 1;
	if ((r = run_job(&j)))
		return r;
	/* 8. unknown request type -> UNSUPP */
	j = (struct job){ .type = VIRTIO_BLK_T_BOGUS, .count = 1, .qd = 1, .sector_of = fixed_sector,
			  .want_status = VIRTIO_BLK_S_UNSUPP };
	if ((r = run_job(&j)))
		return r;
	/* 9. WRITE_ZEROES then read zeros */
	if (has(VIRTIO_BLK_F_WRITE_ZEROES)) {
		j = (struct job){ .type = VIRTIO_BLK_T_WRITE_ZEROES, .count = 1, .qd = 1, .nsect = ZERO_SECTORS,
				  .sector_of = fixed_sector, .base = ZERO_FIRST };
		if ((r = run_job(&j)))
			return r;
		j = (struct job){ .type = VIRTIO_BLK_T_IN, .count = 1, .qd = 1, .nsect = ZERO_SECTORS,
				  .sector_of = fixed_sector, .verify_seed = 0, .base = ZERO_FIRST };
		if ((r = run_job(&j)))
			return r;
		/* The neighbours are untouched. */
		j.base = ZERO_FIRST + ZERO_SECTORS;
		j.verify_seed = 1;
		if ((r = run_job(&j)))
			return r;
	}
	/* 10. DISCARD completes (contents afterwards are unspecified) */
	if (has(VIRTIO_BLK_F_DISCARD)) {
		j = (struct job){ .type = VIRTIO_BLK_T_DISCARD, .count = 1, .qd = 1, .nsect = DISCARD_SECTORS,
				  .sector_of = fixed_sector, .base = DISCARD_FIRST };
		if ((r = run_job(&j)))
			return r;
	}
	return 0;
}

/* ---- read-only disk ---- */
static long ro_test(long arg)
{
	(void)arg;
	struct job j = { .type = VIRTIO_BLK_T_IN, .count = 8, .qd = 8, .nsect = 8, .sector_of = seq_sector,
			 .no_verify = true };
	long r = run_job(&j);
	if (r)
		return r;
	j = (struct job){ .type = VIRTIO_BLK_T_OUT, .count = 1, .qd = 1, .nsect = 8, .sector_of = fixed_sector,
			  .fill_seed = SEED_SEQ, .want_status = VIRTIO_BLK_S_IOERR };
	return run_job(&j);
}

/* ---- benchmark ---- */
static struct job bench_jobs[8];
static const char *const bench_names[8] = {
	"seq-write", "seq-write", "seq-read", "seq-read", "rand-write", "rand-write", "rand-read", "rand-read",
};

static long bench_row(long row)
{
	uint64_t t0 = rdtsc();
	long r = run_job(&bench_jobs[row]);
	uint64_t t1 = rdtsc();
	return r ? r : (long)(t1 - t0);
}

/* TSC ticks per second from PIT channel 2 counting 50 ms (mode 0); 0 if the
 * PIT does not answer. */
static volatile unsigned long ticks;

static void on_tick(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

static void wait_ticks(unsigned long n)
{
	if (!n)
		return;
	kit_set_handler(0x41, on_tick);
	lapic_enable();
	lapic_timer_periodic(0x41, 16, 625000);   /* 1 GHz APIC bus / 16 / 625000 = 100 Hz */
	kit_printf("blk: waiting %lu ticks\n", n);
	unsigned long last = 0;
	while (ticks < n) {
		wait_for_interrupt();
		if (ticks / 100 != last) {
			last = ticks / 100;
			kit_printf("blk: waiting, tick %lu\n", ticks);
		}
	}
	irq_disable();
	lapic_timer_stop();
}

static uint64_t tsc_hz(void)
{
	const uint32_t latch = 59659;   /* 1193182 Hz * 0.05 s */
	outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
	outb(0x43, 0xb0);
	outb(0x42, (uint8_t)latch);
	outb(0x42, (uint8_t)(latch >> 8));
	uint64_t t0 = rdtsc(), t1 = t0;
	while (!(inb(0x61) & 0x20)) {
		t1 = rdtsc();
		if (t1 - t0 > 20000000000ULL)
			return 0;
	}
	return (t1 - t0) * 20;
}

static int bench(void)
{
	uint64_t hz = tsc_hz();
	uint64_t mb = kit_cmdline_ulong("blk.bench_mb", 64);
	uint64_t span = mb * 2048;   /* sectors */
	if (span > capacity)
		span = capacity;
	span &= ~(uint64_t)255;      /* whole 128 KiB requests */
	unsigned rand_ops = (unsigned)kit_cmdline_ulong("blk.bench_rand_ops", 4096);
	if (span < 256)
		kit_fail("disk too small for the benchmark");
	kit_printf("bench: tsc_hz=%lu span_bytes=%lu rand_ops=%u\n", hz, span * SECTOR, rand_ops);
	for (unsigned i = 0; i < NSLOTS; i++)
		fill(slots[i].data, i, SLOT_BYTES / SECTOR, 0xbe7c4);   /* page the buffers in, non-zero data */
	for (unsigned row = 0; row < 8; row++) {
		bool seq = row < 4, write = row < 2 || row == 4 || row == 5;
		struct job *j = &bench_jobs[row];
		*j = (struct job){
			.type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, .qd = (row & 1) ? 32 : 1,
			.nsect = seq ? 256 : BLOCK_SECTORS, .count = seq ? (unsigned)(span / 256) : rand_ops,
			.sector_of = seq ? seq_sector : random_sector, .no_verify = true,
			.span_blocks = span / BLOCK_SECTORS,
		};
		long cycles = kit_user_call(bench_row, row);
		if (cycles <= 0)
			kit_fail("bench %s qd%u: %s (%lx %lx %lx) fault %lu", bench_names[row], j->qd,
				 err.what ? err.what : "fault", err.a, err.b, err.c, kit_user_fault_vector);
		uint64_t bytes = (uint64_t)j->count * j->nsect * SECTOR;
		uint64_t kbps = hz ? bytes * (hz / 1000) / (uint64_t)cycles : 0;   /* bytes per ms = KB/s */
		kit_printf("bench: %s qd=%u bs=%u ops=%u bytes=%lu cycles=%ld MB/s=%lu.%03lu\n", bench_names[row], j->qd,
			   j->nsect * SECTOR, j->count, bytes, cycles, kbps / 1000, kbps % 1000);
	}
	return 0;
}

/* ---- interrupt-driven requests at CPL0: MSI-X, sti;hlt ---- */
#define VEC_BLK 0x50
#define VEC_WATCHDOG 0x51
#define WATCHDOG_TICKS 500      /* 10 ms each */
#define IRQ_READS 8
static volatile unsigned blk_irqs, watchdog_ticks;

static void on_blk_irq(struct kit_frame *f)
{
	(void)f;
	blk_irqs++;
	lapic_eoi();
}

static void on_watchdog(struct kit_frame *f)
{
	(void)f;
	watchdog_ticks++;
	lapic_eoi();
}

/* Reads of the written region, one at a time, each completion awaited with
 * sti;hlt; a LAPIC-timer watchdog turns a lost interrupt into a failure. */
/* verify: the data is what the read/write test wrote (not after blk.denied). */
static void irq_phase(bool verify_data)
{
	lapic_timer_periodic(VEC_WATCHDOG, 16, 625000);
	virtq_interrupts(&q, true);
	unsigned irqs_before = blk_irqs;
	for (unsigned i = 0; i < IRQ_READS; i++) {
		struct slot *sl = &slots[0];
		uint64_t sector = 4096 + (uint64_t)i * 24;
		if (submit(sl, VIRTIO_BLK_T_IN, sector, BLOCK_SECTORS * SECTOR) != 0)
			kit_fail("irq phase: virtq_add");
		unsigned n0 = blk_irqs;
		virtq_kick(&q);
		watchdog_ticks = 0;
		irq_disable();
		while (!virtq_has_used(&q) && watchdog_ticks < WATCHDOG_TICKS)
			wait_for_interrupt();
		irq_disable();
		while (blk_irqs == n0 && watchdog_ticks < WATCHDOG_TICKS)
			wait_for_interrupt();
		irq_disable();
		if (blk_irqs == n0)
			kit_fail("irq phase read %u: no MSI-X interrupt (used %d, status %x)", i, virtq_has_used(&q),
				 virtio_status(&vd));
		uint32_t len = 0;
		void *t = virtq_get(&q, &len);
		sl->busy = false;
		if (t != sl || *sl->status != VIRTIO_BLK_S_OK || len != BLOCK_SECTORS * SECTOR + 1)
			kit_fail("irq phase read %u: completion %p status %u length %u", i, t, *sl->status, len);
		if (verify_data && verify(sl->data, sector, BLOCK_SECTORS, 1) != 0)
			kit_fail("irq phase read %u: %s (%lx %lx %lx)", i, err.what, err.a, err.b, err.c);
	}
	virtq_interrupts(&q, false);
	lapic_timer_stop();
	kit_printf("blk: %u interrupt-driven reads%s (%u MSI-X interrupts)\n", IRQ_READS,
		   verify_data ? " verified" : "", blk_irqs - irqs_before);
}

/* ---- set-up at CPL0 ---- */
static void get_id(char serial[21])
{
	struct job j = { .type = VIRTIO_BLK_T_GET_ID, .count = 1, .qd = 1, .sector_of = fixed_sector };
	memset(serial, 0, 21);
	/* GET_ID's 20 bytes go to a data buffer like a read. */
	struct slot *sl = &slots[0];
	memset(sl->data, 0, 20);
	if (submit(sl, j.type, 0, 20) != 0)
		kit_fail("GET_ID: virtq_add");
	virtq_kick(&q);
	uint32_t len = 0;
	void *t = virtq_wait(&q, &len, WAIT_CYCLES);
	sl->busy = false;
	if (t != sl)
		kit_fail("GET_ID: no completion (%p)", t);
	if (*sl->status == VIRTIO_BLK_S_OK)
		memcpy(serial, sl->data, 20);
	else
		kit_printf("blk: GET_ID status %u\n", *sl->status);
}

int kit_main(void)
{
	bool ro = kit_cmdline_ulong("blk.ro", 0) != 0;
	bool denied = kit_cmdline_ulong("blk.denied", 0) != 0;
	bool do_bench = kit_cmdline_ulong("blk.bench", 0) != 0;
	if (virtio_open(VIRTIO_ID_BLOCK, &vd) != 0)
		kit_fail("no virtio-blk device");
	uint64_t want = virtio_ring_features_wanted() | 1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_BLK_F_FLUSH |
			1ULL << VIRTIO_BLK_F_BLK_SIZE | 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_SIZE_MAX |
			1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
	if (virtio_negotiate(&vd, want) != 0)
		kit_fail("feature negotiation");
	/* MSI-X entry 0 for the queue; interrupts stay suppressed while polling
	 * (any that arrive anyway are counted and acknowledged). */
	kit_set_handler(VEC_BLK, on_blk_irq);
	kit_set_handler(VEC_WATCHDOG, on_watchdog);
	lapic_enable();
	if (virtio_msix_route(&vd, 0, VEC_BLK) != 0)
		kit_fail("no usable MSI-X");
	if (virtio_queue_setup(&vd, &q, 0, 128, 0) != 0)
		kit_fail("queue set-up");
	virtq_interrupts(&q, false);
	for (unsigned i = 0; i < NSLOTS; i++) {
		slots[i].hdr = virtio_alloc(sizeof(struct blk_hdr), 16);
		slots[i].status = virtio_alloc(1, 1);
		slots[i].range = virtio_alloc(sizeof(struct blk_range), 16);
		slots[i].data = (uint8_t *)(DATA_BASE + (uintptr_t)i * SLOT_BYTES);
		if (!slots[i].hdr || !slots[i].status || !slots[i].range)
			kit_fail("out of memory");
	}
	virtio_driver_ok(&vd);
	capacity = virtio_cfg64(&vd, CFG_CAPACITY);
	uint32_t blk_size = has(VIRTIO_BLK_F_BLK_SIZE) ? virtio_cfg32(&vd, CFG_BLK_SIZE) : 512;
	char serial[21];
	get_id(serial);
	kit_printf("blk: capacity %lu sectors (%lu MiB), blk_size %u, serial \"%s\", ro %d flush %d discard %d "
		   "write_zeroes %d, indirect %d event_idx %d\n",
		   capacity, capacity / 2048, blk_size, serial, has(VIRTIO_BLK_F_RO), has(VIRTIO_BLK_F_FLUSH),
		   has(VIRTIO_BLK_F_DISCARD), has(VIRTIO_BLK_F_WRITE_ZEROES), q.indirect, q.event_idx);
	if (capacity < 2 * REGION_SECTORS)
		kit_fail("disk too small: %lu sectors, need %u", capacity, 2 * REGION_SECTORS);

	long r;
	const char *what;
	if (ro) {
		if (!has(VIRTIO_BLK_F_RO))
			kit_fail("blk.ro=1 but the device does not offer VIRTIO_BLK_F_RO");
		what = "read-only test";
		r = kit_user_call(ro_test, 0);
	} else if (denied) {
		what = "denied-writes test";
		r = kit_user_call(ro_test, 0);
	} else if (kit_cmdline_ulong("blk.verify", 0)) {
		what = "verify-only test";
		wait_ticks(kit_cmdline_ulong("blk.wait_ticks", 0));
		r = kit_user_call(verify_test, 0);
	} else if (do_bench) {
		if (has(VIRTIO_BLK_F_RO))
			kit_fail("benchmark on a read-only disk");
		return bench();
	} else {
		if (has(VIRTIO_BLK_F_RO))
			kit_fail("device offers VIRTIO_BLK_F_RO: read-write test needs a writable disk");
		what = "read/write test";
		r = kit_user_call(rw_test, 0);
	}
	if (r == KIT_USER_FAULT)
		kit_fail("%s: exception %lu at CPL3", what, kit_user_fault_vector);
	if (r != 0)
		kit_fail("%s: %s (%lx %lx %lx)", what, err.what, err.a, err.b, err.c);
	if (!ro)
		irq_phase(!denied);
	if (virtio_needs_reset(&vd))
		kit_fail("device signalled NEEDS_RESET");
	kit_printf("blk: %s passed: %lu requests, %lu kicks, %lu suppressed\n", what, reqs_done, q.kicks,
		   q.kicks_suppressed);
	virtio_reset(&vd);
	return 0;
}
