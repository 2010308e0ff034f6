/* Snapshot/restore equivalence with disk I/O in flight: snapshot_guest's timer
 * and memory-pattern rounds, plus a virtio-blk stream that keeps many requests
 * outstanding while the guest waits for timer ticks, i.e. while a snapshot may
 * be taken. Needs a writable disk of at least 192 MiB (overwritten).
 *
 * Round r: at CPL3, check round r-1's 16 MiB memory pattern and write round
 * r's; submit IO_HALF writes of round r's disk area (a fresh area per round,
 * so a restored run rewrites exactly what the original wrote) and IO_HALF reads
 * of round r-1's area, one kick; then at CPL0 wait for `ticks` timer
 * interrupts with completion interrupts on; then at CPL3 collect every
 * completion (each head exactly once: a head completed twice or never fails
 * the run), check the statuses and the data read. The last line sums up the
 * run and must be the same for an uninterrupted and a restored run.
 * Command line: rounds=N (default 24), ticks=N (default 8), cpus=N. With
 * cpus > 1 every AP runs its own LAPIC timer and steps an LCG (written to
 * memory) once per tick for AP_TICKS ticks while the BSP does the rounds, so
 * snapshots catch APs mid-work; the BSP checks each AP's final value at the end. */
#include "lib/virtio.h"

#define VEC_TIMER 0x40
#define VEC_BLK 0x50
#define BUF_ADDR (32ul << 20)             /* 16 MiB memory pattern at 32 MiB */
#define BUF_WORDS ((16ul << 20) / 8)
#define IO_BUF (64ul << 20)               /* request data at 64 MiB */
#define IO_HALF 60u                       /* writes (and reads) per round */
#define IO_SECTORS 128u                   /* 64 KiB per request */
#define AREA_SECTORS (IO_HALF * IO_SECTORS)
#define SECTOR 512u
#define WAIT_CYCLES 60000000000ULL

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define STATUS_PENDING 0xee

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct req {
	struct blk_hdr *hdr;
	uint8_t *status;
	uint8_t *data;
	bool busy, read;
	uint64_t sector;
};

static struct virtio_dev vd;
static struct virtq q;
static struct req reqs[2 * IO_HALF];
static volatile uint64_t ticks, blk_irqs;
static uint64_t requests_done, checksum;

static struct {
	const char *what;
	uint64_t a, b;
} err;

static long fail_note(const char *what, uint64_t a, uint64_t b)
{
	err.what = what;
	err.a = a;
	err.b = b;
	return -1;
}

/* APs: each runs its own 1 ms LAPIC timer and does one LCG step (written to
 * memory) per tick until AP_TICKS steps, sleeping in hlt in between: busy
 * vCPUs with live timers at the snapshots, little host CPU. */
#define VEC_AP_TIMER 0x41
#define AP_TICKS 400ul
static volatile uint64_t ap_result[KIT_MAX_CPUS];
static volatile uint64_t ap_scratch[KIT_MAX_CPUS][8];
static volatile uint64_t ap_ticks[256];   /* by APIC ID */
static volatile uint32_t ap_done;

static inline uint64_t ap_step(uint64_t x)
{
	return x * 6364136223846793005ULL + 1442695040888963407ULL;
}

static void on_ap_timer(struct kit_frame *f)
{
	(void)f;
	ap_ticks[lapic_id() & 0xff]++;
	lapic_eoi();
}

void kit_ap_work(uint32_t slot)
{
	if (slot >= KIT_MAX_CPUS)
		return;
	uint32_t id = lapic_id() & 0xff;
	lapic_enable();
	lapic_timer_periodic(VEC_AP_TIMER, 16, 62500);   /* 1 ms, this CPU's own timer */
	uint64_t x = slot, steps = 0;
	while (steps < AP_TICKS) {
		wait_for_interrupt();
		irq_disable();
		while (steps < ap_ticks[id] && steps < AP_TICKS) {
			x = ap_step(x);
			ap_scratch[slot][steps & 7] = x;
			steps++;
		}
	}
	lapic_timer_stop();
	ap_result[slot] = x;
	__atomic_fetch_add(&ap_done, 1, __ATOMIC_SEQ_CST);
}

/* CPL3 (native): what every AP must have ended with. */
static long user_check_aps(long cpus)
{
	for (long s = 1; s < cpus; s++) {
		uint64_t x = (uint64_t)s;
		for (unsigned long i = 0; i < AP_TICKS; i++)
			x = ap_step(x);
		if (ap_result[s] != x)
			return fail_note("AP result (slot, value)", (uint64_t)s, ap_result[s]);
	}
	return 0;
}

static void on_timer(struct kit_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

static void on_blk(struct kit_frame *f)
{
	(void)f;
	blk_irqs++;
	lapic_eoi();
}

static inline uint64_t pattern(uint64_t round, uint64_t i)
{
	uint64_t x = (round + 1) * 0x9e3779b97f4a7c15ULL ^ (i * 0xbf58476d1ce4e5b9ULL);
	return x ^ (x >> 31);
}

/* Disk words: a function of the sector and the word, so any misplaced or stale
 * sector is caught. */
static inline uint64_t disk_word(uint64_t sector, unsigned k)
{
	return pattern(sector, k) + sector;
}

static long user_memory_round(long round)
{
	volatile uint64_t *buf = (volatile uint64_t *)BUF_ADDR;
	for (uint64_t i = 0; i < BUF_WORDS; i++) {
		if (round > 0 && buf[i] != pattern((uint64_t)round - 1, i))
			return (long)i + 1;
		buf[i] = pattern((uint64_t)round, i);
	}
	return 0;
}

static uint64_t area(long round)
{
	return 2048 + (uint64_t)round * AREA_SECTORS;   /* 1 MiB in: away from sector 0 */
}

static int submit(struct req *r, bool read, uint64_t sector)
{
	r->hdr->type = read ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
	r->hdr->reserved = 0;
	r->hdr->sector = sector;
	*r->status = STATUS_PENDING;
	r->read = read;
	r->sector = sector;
	struct virtq_sg sg[3] = { { r->hdr, sizeof(*r->hdr) }, { r->data, IO_SECTORS * SECTOR }, { r->status, 1 } };
	if (virtq_add(&q, sg, read ? 1 : 2, read ? 2 : 1, r) != 0)
		return -1;
	r->busy = true;
	return 0;
}

/* CPL3: round's writes and the reads of the previous round's area, one kick. */
static long user_submit(long round)
{
	for (unsigned i = 0; i < IO_HALF; i++) {
		struct req *w = &reqs[i];
		uint64_t s = area(round) + (uint64_t)i * IO_SECTORS;
		for (unsigned k = 0; k < IO_SECTORS * SECTOR / 8; k++)
			((uint64_t *)w->data)[k] = disk_word(s + k / (SECTOR / 8), k % (SECTOR / 8));
		if (submit(w, false, s) != 0)
			return fail_note("virtq_add (write, free descriptors)", i, q.num_free);
		if (round > 0) {
			struct req *rd = &reqs[IO_HALF + i];
			memset(rd->data, 0, IO_SECTORS * SECTOR);
			if (submit(rd, true, area(round - 1) + (uint64_t)i * IO_SECTORS) != 0)
				return fail_note("virtq_add (read, free descriptors)", i, q.num_free);
		}
	}
	virtq_kick(&q);
	return 0;
}

/* CPL3: every request of the round comes back exactly once. */
static long user_collect(long round)
{
	unsigned want = round > 0 ? 2 * IO_HALF : IO_HALF;
	for (unsigned n = 0; n < want; n++) {
		uint32_t len = 0;
		struct req *r = virtq_wait(&q, &len, WAIT_CYCLES);
		if (!r)
			return fail_note("request never completed (collected, outstanding)", n, want - n);
		if (r == VIRTQ_BAD_USED || r < reqs || r >= reqs + 2 * IO_HALF || !r->busy)
			return fail_note("used ring names a request that is not outstanding (completed twice?)",
					 (uint64_t)(uintptr_t)r, n);
		r->busy = false;
		requests_done++;
		if (*r->status != 0)
			return fail_note("request status (sector, status)", r->sector, *r->status);
		if (!r->read)
			continue;
		if (len != IO_SECTORS * SECTOR + 1)
			return fail_note("read: used length (sector, length)", r->sector, len);
		const uint64_t *w = (const uint64_t *)r->data;
		uint64_t h = 0;
		for (unsigned k = 0; k < IO_SECTORS * SECTOR / 8; k++) {
			uint64_t s = r->sector + k / (SECTOR / 8);
			if (w[k] != disk_word(s, k % (SECTOR / 8)))
				return fail_note("read data mismatch (sector, word)", s, k % (SECTOR / 8));
			h = h * 31 + w[k];
		}
		checksum += h;   /* a sum: independent of the order completions arrive in */
	}
	if (virtq_get(&q, &(uint32_t){ 0 }))
		return fail_note("extra used entry after the round", 0, 0);
	return 0;
}

static void user(long (*fn)(long), long arg, const char *what, unsigned long round)
{
	long r = kit_user_call(fn, arg);
	if (r == KIT_USER_FAULT)
		kit_fail("round %lu: %s: exception %lu at CPL3", round, what, (unsigned long)kit_user_fault_vector);
	if (r == -1)
		kit_fail("round %lu: %s: %s (%lu %lu)", round, what, err.what, (unsigned long)err.a,
			 (unsigned long)err.b);
	if (r)
		kit_fail("round %lu: %s: word %ld wrong", round, what, r - 1);
}

int kit_main(void)
{
	unsigned long rounds = kit_cmdline_ulong("rounds", 24);
	unsigned long per = kit_cmdline_ulong("ticks", 8);
	unsigned long cpus = kit_cmdline_ulong("cpus", 1);
	kit_printf("snapshot_io: %lu rounds of %lu timer ticks, %u+%u requests in flight per round\n", rounds, per,
		   IO_HALF, IO_HALF);
	if (cpus > 1) {
		kit_set_handler(VEC_AP_TIMER, on_ap_timer);
		kit_smp_start();
		uint64_t t0 = rdtsc();
		while (kit_cpus_online < cpus && rdtsc() - t0 < 4000000000ULL)
			cpu_relax();
		if (kit_cpus_online != cpus)
			kit_fail("%u of %lu CPUs online", kit_cpus_online, cpus);
	}
	if (virtio_open(VIRTIO_ID_BLOCK, &vd) != 0)
		kit_fail("no virtio-blk device");
	if (virtio_negotiate(&vd, virtio_ring_features_wanted()) != 0)
		kit_fail("feature negotiation");
	kit_set_handler(VEC_TIMER, on_timer);
	kit_set_handler(VEC_BLK, on_blk);
	lapic_enable();
	if (virtio_msix_route(&vd, 0, VEC_BLK) != 0)
		kit_fail("no usable MSI-X");
	if (virtio_queue_setup(&vd, &q, 0, 128, 0) != 0)
		kit_fail("queue set-up");
	if (q.size < 2 * IO_HALF || !q.indirect)
		kit_fail("queue of %u entries (indirect %d): %u requests do not fit", q.size, q.indirect, 2 * IO_HALF);
	for (unsigned i = 0; i < 2 * IO_HALF; i++) {
		reqs[i].hdr = virtio_alloc(sizeof(struct blk_hdr), 16);
		reqs[i].status = virtio_alloc(1, 1);
		reqs[i].data = (uint8_t *)(IO_BUF + (uintptr_t)i * IO_SECTORS * SECTOR);
		if (!reqs[i].hdr || !reqs[i].status)
			kit_fail("out of memory");
	}
	virtio_driver_ok(&vd);
	uint64_t capacity = virtio_cfg64(&vd, 0);
	if (capacity < area((long)rounds + 1))
		kit_fail("disk of %lu sectors, need %lu", capacity, area((long)rounds + 1));
	virtq_interrupts(&q, true);
	bool aps_seen = false;
	lapic_timer_periodic(VEC_TIMER, 16, 62500);   /* 1 ms */
	for (unsigned long r = 0; r < rounds; r++) {
		user(user_memory_round, (long)r, "memory pattern", r);
		user(user_submit, (long)r, "submit", r);
		uint64_t want = (r + 1) * per, t0 = rdtsc();
		irq_enable();
		while (ticks < want) {
			if (rdtsc() - t0 > 40000000000ULL) {
				irq_disable();
				kit_fail("round %lu: timer stopped at %lu ticks", r, (unsigned long)ticks);
			}
			wait_for_interrupt();
		}
		irq_disable();
		user(user_collect, (long)r, "collect", r);
		kit_printf("round %lu ticks %lu\n", r, (unsigned long)ticks);
		if (cpus > 1 && !aps_seen && ap_done == cpus - 1) {
			aps_seen = true;   /* timing only: tells whether snapshots caught busy APs */
			kit_printf("APs done by round %lu\n", r);
		}
	}
	lapic_timer_stop();
	/* The last round's area, read back without new writes. */
	for (unsigned i = 0; i < IO_HALF; i++)
		if (submit(&reqs[IO_HALF + i], true, area((long)rounds - 1) + (uint64_t)i * IO_SECTORS) != 0)
			kit_fail("final reads: virtq_add");
	virtq_kick(&q);
	for (unsigned i = 0; i < IO_HALF; i++)
		reqs[i].busy = false;
	user(user_collect, 0, "final reads", rounds);
	user(user_memory_round, (long)rounds, "final memory pattern", rounds);
	if (cpus > 1) {
		uint64_t t0 = rdtsc();
		while (ap_done < cpus - 1)
			if (rdtsc() - t0 > 100000000000ULL)
				kit_fail("%u of %lu APs finished their work", ap_done, cpus - 1);
		user(user_check_aps, (long)cpus, "AP results", rounds);
	}
	if (virtio_needs_reset(&vd))
		kit_fail("device signalled NEEDS_RESET");
	/* Deterministic summary: identical for an uninterrupted and a restored run. */
	kit_printf("snapshot_io: %lu rounds, %lu requests, disk checksum %lx\n", rounds, (unsigned long)requests_done,
		   (unsigned long)checksum);
	return 0;
}
