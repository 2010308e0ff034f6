/* Snapshot state file format (src/services/snapshot.c) and the structural checks
 * of the KVM state blobs (src/vmm/vmstate.c): round trip, every kind of damage
 * refused with a file offset, future versions refused. No KVM needed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <linux/kvm.h>
#include <vmsvc/err.h>
#include <vmsvc/vmstate.h>

static const char cfg_text[] = "rng=0\nhugepages=0\ndisks=0\nnets=0\ndevices=1\n";
static const uint8_t vcpu_blob[] = { 'K', 'V', 'C', '1', 1, 0, 0, 0, 0, 0, 0, 0 };
static const uint8_t dev_blob[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };

static struct snap_header sample_header(void)
{
	struct snap_header h = { .version = SNAP_FORMAT_VERSION, .created_ns = 1234567890123ULL,
				 .mem_size = 64ULL << 20, .ncpus = 1, .nregions = 1, .cpuid_hash = 0x1122334455667788ULL };
	strcpy(h.vmsvc_version, "0.1.0");
	h.region[0].size = 64ULL << 20;
	return h;
}

static void build_sample(uint8_t **buf, size_t *len, uint32_t version)
{
	struct snap_header h = sample_header();
	h.version = version;
	struct snap_section s[3] = {
		{ .type = SNAP_SEC_CONFIG, .name = "config", .data = (const uint8_t *)cfg_text, .len = sizeof(cfg_text) - 1 },
		{ .type = SNAP_SEC_VCPU, .id = 0, .name = "vcpu", .data = vcpu_blob, .len = sizeof(vcpu_blob) },
		{ .type = SNAP_SEC_DEVICE, .id = 0, .name = "uart", .data = dev_blob, .len = sizeof(dev_blob) },
	};
	assert_int_equal(snap_build(&h, s, 3, buf, len), 0);
}

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(snap_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(snap_crc32c(0, "", 0), 0);
}

static void test_round_trip(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION);
	struct snap_header h;
	struct snap_section *sec;
	unsigned n;
	assert_int_equal(snap_parse(buf, len, "state", &h, &sec, &n), 0);
	struct snap_header want = sample_header();
	assert_int_equal(h.version, want.version);
	assert_string_equal(h.vmsvc_version, "0.1.0");
	assert_int_equal(h.created_ns, want.created_ns);
	assert_int_equal(h.mem_size, want.mem_size);
	assert_int_equal(h.ncpus, 1);
	assert_int_equal(h.nregions, 1);
	assert_int_equal(h.region[0].size, want.region[0].size);
	assert_int_equal(h.cpuid_hash, want.cpuid_hash);
	assert_int_equal(n, 3);
	assert_int_equal(sec[0].type, SNAP_SEC_CONFIG);
	assert_string_equal(sec[0].name, "config");
	assert_int_equal(sec[0].len, sizeof(cfg_text) - 1);
	assert_memory_equal(sec[0].data, cfg_text, sizeof(cfg_text) - 1);
	assert_int_equal(sec[1].type, SNAP_SEC_VCPU);
	assert_memory_equal(sec[1].data, vcpu_blob, sizeof(vcpu_blob));
	assert_int_equal(sec[2].type, SNAP_SEC_DEVICE);
	assert_string_equal(sec[2].name, "uart");
	assert_memory_equal(sec[2].data, dev_blob, sizeof(dev_blob));
	/* offsets point at the payload in the file */
	assert_memory_equal(buf + sec[2].offset, dev_blob, sizeof(dev_blob));
	free(sec);
	free(buf);
}

static void expect_refused(const uint8_t *buf, size_t len, const char *what)
{
	struct snap_header h;
	struct snap_section *sec = NULL;
	unsigned n;
	err_clear();
	int r = snap_parse(buf, len, "DIR/state", &h, &sec, &n);
	if (r == 0) {
		free(sec);
		fail_msg("%s: accepted", what);
	}
	assert_int_equal(r, -EINVAL);
	/* one line, naming the file and an offset */
	const char *m = err_msg();
	if (strncmp(m, "DIR/state: offset ", 18) != 0 || strchr(m, '\n'))
		fail_msg("%s: message \"%s\"", what, m);
}

static void test_every_bit_flip_refused(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION);
	for (size_t off = 0; off < len; off++)
		for (int bit = 0; bit < 8; bit += 3) {
			buf[off] ^= (uint8_t)(1u << bit);
			char what[64];
			snprintf(what, sizeof(what), "bit %d of byte %zu", bit, off);
			expect_refused(buf, len, what);
			buf[off] ^= (uint8_t)(1u << bit);
		}
	free(buf);
}

static void test_every_truncation_refused(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION);
	for (size_t l = 0; l < len; l++) {
		uint8_t *copy = malloc(l ? l : 1);   /* exact size: ASan sees overreads */
		memcpy(copy, buf, l);
		char what[64];
		snprintf(what, sizeof(what), "truncated to %zu bytes", l);
		expect_refused(copy, l, what);
		free(copy);
	}
	free(buf);
}

static void test_trailing_data_refused(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION);
	uint8_t *big = calloc(1, len + 7);
	memcpy(big, buf, len);
	expect_refused(big, len + 7, "trailing bytes");
	assert_non_null(strstr(err_msg(), "trailing"));
	free(big);
	free(buf);
}

static void test_future_version_refused(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION + 1);
	expect_refused(buf, len, "future version");
	assert_non_null(strstr(err_msg(), "format version 2 not supported"));
	free(buf);
}

/* Section lengths that point past the end, with valid checksums otherwise. */
static void test_section_length_past_end(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_sample(&buf, &len, SNAP_FORMAT_VERSION);
	uint8_t *s = buf + SNAP_HEADER_LEN;
	uint64_t huge = ~0ULL - 5;
	memcpy(s + 8, &huge, 8);
	uint32_t c = snap_crc32c(0, s, 36);
	memcpy(s + 36, &c, 4);
	expect_refused(buf, len, "huge section length");
	assert_non_null(strstr(err_msg(), "runs past the end"));
	free(buf);
}

static void test_not_a_snapshot(void **state)
{
	(void)state;
	const char junk[] = "#!/bin/sh\necho hello\n";
	expect_refused((const uint8_t *)junk, sizeof(junk), "junk");
	assert_non_null(strstr(err_msg(), "bad magic"));
}

/* ---- KVM blob checks ---- */
static uint8_t *rec(uint8_t *p, uint32_t tag, uint32_t len)
{
	memcpy(p, &tag, 4);
	memcpy(p + 4, &len, 4);
	memset(p + 8, 0, len);
	return p + 8 + len;
}

static size_t make_vcpu_blob(uint8_t *b, bool with_lapic)
{
	uint8_t *p = b;
	memcpy(p, "KVC1", 4);
	p += 4;
	p = rec(p, 1, sizeof(struct kvm_regs));
	p = rec(p, 2, sizeof(struct kvm_sregs));
	p = rec(p, 4, 4096);
	p = rec(p, 6, 32);
	if (with_lapic)
		p = rec(p, 7, sizeof(struct kvm_lapic_state));
	p = rec(p, 8, sizeof(struct kvm_vcpu_events));
	p = rec(p, 10, sizeof(struct kvm_mp_state));
	return (size_t)(p - b);
}

static void test_vcpu_blob_checks(void **state)
{
	(void)state;
	uint8_t *b = calloc(1, 16384);
	size_t n = make_vcpu_blob(b, true);
	assert_int_equal(vmstate_vcpu_check(b, n), 0);
	for (size_t l = 0; l < n; l++)
		assert_true(vmstate_vcpu_check(b, l) < 0);   /* every truncation */
	n = make_vcpu_blob(b, false);
	assert_true(vmstate_vcpu_check(b, n) < 0);       /* LAPIC missing */
	assert_non_null(strstr(err_msg(), "missing"));
	n = make_vcpu_blob(b, true);
	uint32_t bad = 99;
	memcpy(b + 4, &bad, 4);                          /* first record: unknown tag */
	assert_true(vmstate_vcpu_check(b, n) < 0);
	free(b);
}

static void test_vm_blob_checks(void **state)
{
	(void)state;
	uint8_t *b = calloc(1, 8192), *p = b;
	memcpy(p, "KVV1", 4);
	p += 4;
	for (uint32_t chip = 0; chip < 3; chip++) {
		uint8_t *d = p + 8;
		p = rec(p, chip + 1, sizeof(struct kvm_irqchip));
		memcpy(d, &chip, 4);   /* chip_id */
	}
	p = rec(p, 4, sizeof(struct kvm_pit_state2));
	p = rec(p, 5, sizeof(struct kvm_clock_data));
	size_t n = (size_t)(p - b);
	assert_int_equal(vmstate_vm_check(b, n), 0);
	for (size_t l = 0; l < n; l++)
		assert_true(vmstate_vm_check(b, l) < 0);
	b[12] = 2;   /* PIC master record claims chip 2 */
	assert_true(vmstate_vm_check(b, n) < 0);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_bit_flip_refused),
		cmocka_unit_test(test_every_truncation_refused),
		cmocka_unit_test(test_trailing_data_refused),
		cmocka_unit_test(test_future_version_refused),
		cmocka_unit_test(test_section_length_past_end),
		cmocka_unit_test(test_not_a_snapshot),
		cmocka_unit_test(test_vcpu_blob_checks),
		cmocka_unit_test(test_vm_blob_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
