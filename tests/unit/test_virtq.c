/* Split virtqueue parser over a fake guest memory: well-formed chains, indirect
 * tables, EVENT_IDX decisions, and every hostile case (each must fail cleanly
 * with -EIO, report once, and never touch memory outside guest RAM). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include <vmsvc/mem.h>
#include <vmsvc/virtio.h>

#define RAM0_SIZE (512ULL << 20)   /* lazily backed: only touched pages cost */
#define RAM1_GPA (4ULL << 30)
#define RAM1_SIZE (64ULL << 10)
#define QSIZE 8
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define BUF 0x10000

struct fx {
	struct guest_mem mem;
	uint8_t *ram0, *ram1;
	struct virtq vq;
	unsigned errors_reported;
};

static void on_error(struct virtq *vq, const char *why)
{
	(void)why;
	struct fx *f = (struct fx *)((char *)vq - offsetof(struct fx, vq));
	f->errors_reported++;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->ram0 = mmap(NULL, RAM0_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	f->ram1 = calloc(1, RAM1_SIZE);
	if (f->ram0 == MAP_FAILED || !f->ram1)
		return -1;
	f->mem.nregions = 2;
	f->mem.region[0] = (struct mem_region){ 0, RAM0_SIZE, 0, f->ram0 };
	f->mem.region[1] = (struct mem_region){ RAM1_GPA, RAM1_SIZE, RAM0_SIZE, f->ram1 };
	f->mem.ram_size = RAM0_SIZE + RAM1_SIZE;
	f->vq.on_error = on_error;
	if (virtq_setup(&f->vq, &f->mem, QSIZE, DESC, AVAIL, USED, false, true) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	virtq_free(&f->vq);
	munmap(f->ram0, RAM0_SIZE);
	free(f->ram1);
	free(f);
	return 0;
}

/* ---- driver side helpers ---- */

static void put_desc(struct fx *f, uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = f->ram0 + table + 16 * i;
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static uint16_t *avail(struct fx *f) { return (uint16_t *)(f->ram0 + AVAIL); }
static uint16_t *used16(struct fx *f) { return (uint16_t *)(f->ram0 + USED); }
static uint32_t *used_ring(struct fx *f) { return (uint32_t *)(f->ram0 + USED + 4); }

/* Make descriptor `head` available (next slot). */
static void offer(struct fx *f, uint16_t head)
{
	uint16_t idx = avail(f)[1];
	avail(f)[2 + idx % QSIZE] = head;
	avail(f)[1] = (uint16_t)(idx + 1);
}

static int pop(struct fx *f, struct virtq_elem **e) { return virtq_pop(&f->vq, e); }

static void expect_broken(struct fx *f)
{
	struct virtq_elem *e = (void *)1;
	assert_int_equal(pop(f, &e), -EIO);
	assert_null(e);
	assert_true(f->vq.broken);
	assert_int_equal(f->errors_reported, 1);
	/* Stays broken, reported once. */
	assert_int_equal(pop(f, &e), -EIO);
	assert_int_equal(f->errors_reported, 1);
	assert_int_equal(virtq_pending(&f->vq), 0);
}

/* ---- well-formed ---- */

static void test_empty(void **state)
{
	struct fx *f = *state;
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 0);
	assert_int_equal(virtq_pending(&f->vq), 0);
}

static void test_simple_chain(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 5);
	put_desc(f, DESC, 5, BUF + 0x100, 32, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	put_desc(f, DESC, 1, RAM1_GPA + 0x40, 64, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 3);
	assert_int_equal(virtq_pending(&f->vq), 1);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	assert_int_equal(e->head, 3);
	assert_int_equal(e->out_num, 1);
	assert_int_equal(e->in_num, 2);
	assert_int_equal(e->out_len, 16);
	assert_int_equal(e->in_len, 96);
	assert_ptr_equal(e->iov[0].iov_base, f->ram0 + BUF);
	assert_ptr_equal(e->iov[1].iov_base, f->ram0 + BUF + 0x100);
	assert_ptr_equal(e->iov[2].iov_base, f->ram1 + 0x40);
	assert_int_equal(e->iov[2].iov_len, 64);
	assert_int_equal(virtq_push(&f->vq, e, 1000), 0);   /* clamped to in_len */
	assert_int_equal(used16(f)[1], 1);
	assert_int_equal(used_ring(f)[0], 3);
	assert_int_equal(used_ring(f)[1], 96);
	free(e);
	assert_int_equal(pop(f, &e), 0);
	assert_int_equal(f->errors_reported, 0);
}

static void test_zero_length_segment_skipped(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, 0xdead0000000ULL, 0, VIRTQ_DESC_F_NEXT, 1);   /* len 0: address not used */
	put_desc(f, DESC, 1, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	assert_int_equal(e->out_num, 0);
	assert_int_equal(e->in_num, 1);
	free(e);
}

static void test_wraparound(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
	/* 3 * QSIZE + 1 round trips cross the 16-bit ring positions many times. */
	for (unsigned n = 0; n < 3 * QSIZE + 1; n++) {
		offer(f, 0);
		struct virtq_elem *e;
		assert_int_equal(pop(f, &e), 1);
		assert_int_equal(virtq_push(&f->vq, e, 8), 0);
		free(e);
	}
	assert_int_equal(used16(f)[1], 3 * QSIZE + 1);
	/* Indices near 65535 wrap too. */
	f->vq.last_avail_idx = 0xffff;
	avail(f)[1] = 0xffff;
	offer(f, 0);
	offer(f, 0);
	assert_int_equal(virtq_pending(&f->vq), 2);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	free(e);
	assert_int_equal(pop(f, &e), 1);
	free(e);
	assert_int_equal(pop(f, &e), 0);
}

static void test_indirect(void **state)
{
	struct fx *f = *state;
	uint64_t table = 0x4000;
	put_desc(f, table, 0, BUF, 10, VIRTQ_DESC_F_NEXT, 2);
	put_desc(f, table, 2, BUF + 0x20, 20, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	put_desc(f, table, 1, BUF + 0x40, 30, VIRTQ_DESC_F_WRITE, 0);
	put_desc(f, DESC, 6, table, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 6);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	assert_int_equal(e->head, 6);
	assert_int_equal(e->out_num, 1);
	assert_int_equal(e->in_num, 2);
	assert_int_equal(e->in_len, 50);
	assert_ptr_equal(e->iov[2].iov_base, f->ram0 + BUF + 0x40);
	free(e);
}

static void test_unpop(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, 0, 0);
	offer(f, 0);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	free(e);
	virtq_unpop(&f->vq, 1);
	assert_int_equal(pop(f, &e), 1);
	free(e);
}

/* ---- EVENT_IDX and notification suppression ---- */

static void test_event_idx(void **state)
{
	struct fx *f = *state;
	assert_int_equal(virtq_setup(&f->vq, &f->mem, QSIZE, DESC, AVAIL, USED, true, true), 0);
	uint16_t *used_event = &avail(f)[2 + QSIZE];
	uint16_t *avail_event = &used16(f)[2 + 4 * QSIZE];
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
	struct virtq_elem *e;
	for (unsigned i = 0; i < 4; i++)
		offer(f, 0);
	assert_int_equal(pop(f, &e), 1);
	assert_int_equal(*avail_event, 1);   /* kick me when entry 1 is made available */
	*used_event = 0;                     /* driver wants an interrupt after used entry 0 */
	virtq_push(&f->vq, e, 8);
	assert_true(virtq_should_notify(&f->vq));    /* first time: always */
	free(e);
	assert_int_equal(pop(f, &e), 1);
	virtq_push(&f->vq, e, 8);
	free(e);
	assert_false(virtq_should_notify(&f->vq));   /* used_event 0 already passed */
	*used_event = 2;                             /* wants one when used idx passes 2 */
	assert_int_equal(pop(f, &e), 1);
	virtq_push(&f->vq, e, 8);
	free(e);
	assert_true(virtq_should_notify(&f->vq));
	assert_false(virtq_should_notify(&f->vq));   /* nothing new */
	/* Suppressing kicks leaves avail_event alone; enabling sets it to avail idx. */
	virtq_set_notification(&f->vq, false);
	assert_int_equal(pop(f, &e), 1);
	free(e);
	assert_int_equal(*avail_event, 3);
	virtq_set_notification(&f->vq, true);
	assert_int_equal(*avail_event, 4);
}

static void test_no_interrupt_flag(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	virtq_push(&f->vq, e, 8);
	free(e);
	assert_true(virtq_should_notify(&f->vq));
	avail(f)[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
	assert_false(virtq_should_notify(&f->vq));
	virtq_set_notification(&f->vq, false);
	assert_int_equal(used16(f)[0], VIRTQ_USED_F_NO_NOTIFY);
	virtq_set_notification(&f->vq, true);
	assert_int_equal(used16(f)[0], 0);
}

/* ---- ring setup ---- */

static void test_setup_rejects(void **state)
{
	struct fx *f = *state;
	struct virtq q = { 0 };
	assert_true(virtq_setup(&q, &f->mem, 6, DESC, AVAIL, USED, false, false) < 0);      /* not 2^n */
	assert_true(virtq_setup(&q, &f->mem, 0, DESC, AVAIL, USED, false, false) < 0);
	assert_true(virtq_setup(&q, &f->mem, 2048, DESC, AVAIL, USED, false, false) < 0);   /* > max */
	assert_true(virtq_setup(&q, &f->mem, 8, DESC + 8, AVAIL, USED, false, false) < 0);  /* misaligned */
	assert_true(virtq_setup(&q, &f->mem, 8, DESC, AVAIL + 1, USED, false, false) < 0);
	assert_true(virtq_setup(&q, &f->mem, 8, DESC, AVAIL, USED + 2, false, false) < 0);
	assert_true(virtq_setup(&q, &f->mem, 8, RAM0_SIZE - 64, AVAIL, USED, false, false) < 0); /* past RAM */
	assert_true(virtq_setup(&q, &f->mem, 8, 0xc0000000ULL, AVAIL, USED, false, false) < 0);  /* hole */
	assert_true(virtq_setup(&q, &f->mem, 8, DESC, AVAIL, ~0ULL - 3, false, false) < 0);      /* wraps */
	assert_false(q.ready);
	struct virtq_elem *e;
	assert_int_equal(virtq_pop(&q, &e), 0);   /* not ready: nothing, no crash */
	assert_int_equal(virtq_pending(&q), 0);
	virtq_free(&q);
}

/* ---- hostile chains ---- */

static void test_loop(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	put_desc(f, DESC, 1, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_self_loop(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 2, BUF, 8, VIRTQ_DESC_F_NEXT, 2);
	offer(f, 2);
	expect_broken(f);
}

static void test_full_length_chain_ok_then_loop(void **state)
{
	struct fx *f = *state;
	/* A chain through all QSIZE descriptors is legal... */
	for (unsigned i = 0; i < QSIZE; i++)
		put_desc(f, DESC, i, BUF, 8, i + 1 < QSIZE ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	offer(f, 0);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	assert_int_equal(e->out_num, QSIZE);
	free(e);
	/* ...one more link (back to 0) is a loop. */
	put_desc(f, DESC, QSIZE - 1, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_NEXT, QSIZE);
	offer(f, 0);
	expect_broken(f);
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;
	offer(f, 0xffff);
	expect_broken(f);
}

static void test_avail_idx_jump(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, 0, 0);
	avail(f)[1] = QSIZE + 1;
	expect_broken(f);
}

static void test_buffer_outside_ram(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, 0xc0000000ULL, 8, 0, 0);   /* the PCI hole */
	offer(f, 0);
	expect_broken(f);
}

static void test_buffer_straddles_region_end(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, RAM1_GPA + RAM1_SIZE - 4, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_buffer_straddles_hole(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, RAM0_SIZE - 8, 16, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_buffer_address_overflow(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, ~0ULL - 3, 0x100, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_absurd_total_length(void **state)
{
	struct fx *f = *state;
	/* Each buffer is inside RAM, but together they exceed VIRTQ_MAX_CHAIN_BYTES. */
	put_desc(f, DESC, 0, 0, 200u << 20, VIRTQ_DESC_F_NEXT, 1);
	put_desc(f, DESC, 1, 0, 200u << 20, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_huge_single_length(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 0xffffffffu, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_readable_after_writable(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	put_desc(f, DESC, 1, BUF, 8, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_not_negotiated(void **state)
{
	struct fx *f = *state;
	assert_int_equal(virtq_setup(&f->vq, &f->mem, QSIZE, DESC, AVAIL, USED, false, false), 0);
	put_desc(f, 0x4000, 0, BUF, 8, 0, 0);
	put_desc(f, DESC, 0, 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_nested(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	put_desc(f, 0x5000, 0, BUF, 8, 0, 0);
	put_desc(f, DESC, 0, 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_bad_len(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, BUF, 8, 0, 0);
	put_desc(f, DESC, 0, 0x4000, 24, VIRTQ_DESC_F_INDIRECT, 0);   /* not a multiple of 16 */
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_zero_len(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, 0x4000, 0, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_too_big(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, 0x100000, 16 * (VIRTQ_MAX_INDIRECT + 1), VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_outside_ram(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, RAM1_GPA + RAM1_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_with_next(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, BUF, 8, 0, 0);
	put_desc(f, DESC, 0, 0x4000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	put_desc(f, DESC, 1, BUF, 8, 0, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_after_direct(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, BUF, 8, 0, 0);
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	put_desc(f, DESC, 1, 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_loop(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	put_desc(f, 0x4000, 1, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
	put_desc(f, DESC, 0, 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_indirect_next_out_of_table(void **state)
{
	struct fx *f = *state;
	put_desc(f, 0x4000, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 5);   /* table has 2 entries */
	put_desc(f, DESC, 0, 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_broken(f);
}

static void test_reset_recovers(void **state)
{
	struct fx *f = *state;
	put_desc(f, DESC, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_broken(f);
	struct virtq_elem e0 = { .head = 0, .in_len = 8 };
	virtq_reset(&f->vq);
	assert_int_equal(virtq_push(&f->vq, &e0, 8), -EIO);   /* no rings after reset */
	memset(f->ram0 + AVAIL, 0, 0x100);
	memset(f->ram0 + USED, 0, 0x100);
	assert_int_equal(virtq_setup(&f->vq, &f->mem, QSIZE, DESC, AVAIL, USED, false, true), 0);
	put_desc(f, DESC, 0, BUF, 8, 0, 0);
	offer(f, 0);
	struct virtq_elem *e;
	assert_int_equal(pop(f, &e), 1);
	free(e);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_empty), T(test_simple_chain), T(test_zero_length_segment_skipped), T(test_wraparound),
		T(test_indirect), T(test_unpop), T(test_event_idx), T(test_no_interrupt_flag),
		T(test_setup_rejects), T(test_loop), T(test_self_loop), T(test_full_length_chain_ok_then_loop),
		T(test_next_out_of_range), T(test_head_out_of_range), T(test_avail_idx_jump),
		T(test_buffer_outside_ram), T(test_buffer_straddles_region_end), T(test_buffer_straddles_hole),
		T(test_buffer_address_overflow), T(test_absurd_total_length), T(test_huge_single_length),
		T(test_readable_after_writable), T(test_indirect_not_negotiated), T(test_indirect_nested),
		T(test_indirect_bad_len), T(test_indirect_zero_len), T(test_indirect_too_big),
		T(test_indirect_outside_ram), T(test_indirect_with_next), T(test_indirect_after_direct),
		T(test_indirect_loop), T(test_indirect_next_out_of_table), T(test_reset_recovers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
