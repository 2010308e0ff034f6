/* CPUID adjustment (APIC IDs, topology, hypervisor bit, hiding with dependents)
 * and --cpu-features parsing, on a fake KVM_GET_SUPPORTED_CPUID result. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <vmsvc/err.h>
#include <vmsvc/platform.h>

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* A typical Intel-like supported set: leaf 1 with cx16/xsave/avx/..., leaf 4 caches,
 * leaf 7 with avx2/smap/..., leaf 0xb with only subleaf 0 (as some KVMs give),
 * leaf 0xd, 0x80000001/8, KVM signature. */
static const struct kvm_cpuid_entry2 typical[] = {
	{ .function = 0, .eax = 0xd, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	{ .function = 1, .eax = 0x906ea, .ebx = 0x00000800,
	  .ecx = (1u << 0) | (1u << 9) | (1u << 12) | (1u << 13) | (1u << 19) | (1u << 20) | (1u << 23) |
		 (1u << 26) | (1u << 28) | (1u << 29) | (1u << 30),
	  .edx = 0x078bfbff },
	{ .function = 4, .index = 0, .flags = SIG, .eax = 0x1c004121 }, /* L1d: type 1 level 1 */
	{ .function = 4, .index = 1, .flags = SIG, .eax = 0x1c004122 }, /* L1i */
	{ .function = 4, .index = 2, .flags = SIG, .eax = 0x1c004143 }, /* L2 */
	{ .function = 4, .index = 3, .flags = SIG, .eax = 0x1c03c163 }, /* L3 */
	{ .function = 4, .index = 4, .flags = SIG, .eax = 0 },
	{ .function = 7, .index = 0, .flags = SIG, .eax = 0,
	  .ebx = (1u << 0) | (1u << 5) | (1u << 16) | (1u << 20) | (1u << 30),
	  .ecx = (1u << 3) | (1u << 22) },
	{ .function = 0xb, .index = 0, .flags = SIG, .edx = 7 },
	{ .function = 0xd, .index = 0, .flags = SIG, .eax = 0x207, .ebx = 0x988, .ecx = 0x988 },
	{ .function = 0xd, .index = 1, .flags = SIG, .eax = 0xf },
	{ .function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b, .ecx = 0x564b4d56, .edx = 0x4d },
	{ .function = 0x40000001, .eax = 0x01007efb },
	{ .function = 0x80000000, .eax = 0x80000008 },
	{ .function = 0x80000001, .edx = (1u << 27) | (1u << 29) },
	{ .function = 0x80000008, .eax = 0x3030, .ecx = 0x7001 },
};
#define NTYPICAL (sizeof(typical) / sizeof(typical[0]))

/* Exact-size buffer (no slack), as a caller copying a CPUID set would make. */
static struct kvm_cpuid2 *raw(const struct kvm_cpuid_entry2 *e, uint32_t n)
{
	struct kvm_cpuid2 *c = malloc(sizeof(*c) + n * sizeof(c->entries[0]));
	assert_non_null(c);
	c->nent = n;
	c->padding = 0;
	memcpy(c->entries, e, n * sizeof(e[0]));
	return c;
}

/* The typical set as cpuid_get_supported would return it (topology leaves
 * completed), copied into an exact-size buffer: adjust must not grow it. */
static struct kvm_cpuid2 *make(void)
{
	struct kvm_cpuid2 *c = raw(typical, NTYPICAL);
	assert_int_equal(cpuid_add_topology_leaves(&c), 0);
	assert_int_equal(c->nent, NTYPICAL + 2); /* 0xb.1 and 0xb.2 added */
	struct kvm_cpuid2 *copy = raw(c->entries, c->nent);
	free(c);
	return copy;
}

static struct kvm_cpuid_entry2 *get(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == leaf && c->entries[i].index == sub)
			return &c->entries[i];
	return NULL;
}

static void test_apic_ids_and_topology(void **state)
{
	(void)state;
	for (unsigned idx = 0; idx < 4; idx++) {
		struct kvm_cpuid2 *c = make();
		cpuid_adjust(c, idx, 4, NULL);
		struct kvm_cpuid_entry2 *e = get(c, 1, 0);
		assert_int_equal(e->ebx >> 24, idx);
		assert_int_equal((e->ebx >> 16) & 0xff, 4);
		assert_int_equal(e->ebx & 0xffff, 0x0800); /* CLFLUSH size kept */
		assert_true(e->edx & (1u << 28));          /* HTT */
		assert_true(e->ecx & (1u << 31));          /* hypervisor */
		/* leaf 0xb: SMT, core, invalid (two subleaves were added) */
		struct kvm_cpuid_entry2 *s0 = get(c, 0xb, 0), *s1 = get(c, 0xb, 1), *s2 = get(c, 0xb, 2);
		assert_non_null(s0);
		assert_non_null(s1);
		assert_non_null(s2);
		assert_int_equal(s0->eax, 0);
		assert_int_equal(s0->ebx, 1);
		assert_int_equal(s0->ecx, 0x100);
		assert_int_equal(s1->eax, 2);
		assert_int_equal(s1->ebx, 4);
		assert_int_equal(s1->ecx, 0x201);
		assert_int_equal(s2->ebx, 0);
		assert_int_equal(s2->ecx, 2);
		assert_int_equal(s0->edx, idx);
		assert_int_equal(s1->edx, idx);
		assert_int_equal(s2->edx, idx);
		assert_true(s1->flags & SIG);
		/* no leaf 0x1f in the input: not added */
		assert_null(get(c, 0x1f, 0));
		/* leaf 4: 4 cores per package; L1/L2 private, L3 shared by 4 */
		assert_int_equal(get(c, 4, 0)->eax >> 26, 3);
		assert_int_equal((get(c, 4, 0)->eax >> 14) & 0xfff, 0);
		assert_int_equal((get(c, 4, 2)->eax >> 14) & 0xfff, 0);
		assert_int_equal((get(c, 4, 3)->eax >> 14) & 0xfff, 3);
		assert_int_equal(get(c, 4, 3)->eax & 0x3fff, 0x0163);
		assert_int_equal(get(c, 4, 4)->eax, 0); /* terminator untouched */
		/* 0x80000008: NC = 3, ApicIdSize = 2 */
		assert_int_equal(get(c, 0x80000008, 0)->ecx & 0xff, 3);
		assert_int_equal((get(c, 0x80000008, 0)->ecx >> 12) & 0xf, 2);
		/* KVM signature kept */
		assert_int_equal(get(c, 0x40000000, 0)->eax, 0x40000001);
		assert_memory_equal(&get(c, 0x40000000, 0)->ebx, "KVMKVMKVM\0\0\0", 12);
		/* adjusting again adds nothing */
		cpuid_adjust(c, idx, 4, NULL);
		assert_int_equal(c->nent, NTYPICAL + 2);
		free(c);
	}
}

static void test_single_cpu(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c = make();
	cpuid_adjust(c, 0, 1, NULL);
	assert_false(get(c, 1, 0)->edx & (1u << 28));
	assert_int_equal((get(c, 1, 0)->ebx >> 16) & 0xff, 1);
	assert_int_equal(get(c, 0xb, 1)->eax, 0);
	assert_int_equal(get(c, 0xb, 1)->ebx, 1);
	free(c);
}

static void test_leaf_1f_and_missing_signature(void **state)
{
	(void)state;
	static const struct kvm_cpuid_entry2 e[] = {
		{ .function = 0, .eax = 0x1f },
		{ .function = 0x1f, .index = 0, .flags = SIG },
		{ .function = 0x1f, .index = 1, .flags = SIG },
	};
	struct kvm_cpuid2 *c = raw(e, 3);
	assert_int_equal(cpuid_add_topology_leaves(&c), 0);
	assert_int_equal(c->nent, 3 + 3 + 1); /* 0xb.0-2, 0x1f.2 */
	assert_int_equal(cpuid_add_topology_leaves(&c), 0); /* idempotent */
	assert_int_equal(c->nent, 7);
	cpuid_adjust(c, 5, 64, NULL);
	assert_int_equal(c->nent, 7);
	assert_int_equal(get(c, 0x1f, 1)->eax, 6);
	assert_int_equal(get(c, 0x1f, 1)->ebx, 64);
	assert_int_equal(get(c, 0x1f, 2)->ecx, 2);
	assert_int_equal(get(c, 0x1f, 0)->edx, 5);
	assert_int_equal(get(c, 0xb, 1)->ebx, 64);
	assert_int_equal(get(c, 0xb, 2)->edx, 5);
	assert_null(get(c, 0x40000000, 0)); /* nothing invented */
	free(c);

	/* basic range below 0xb: nothing to add */
	static const struct kvm_cpuid_entry2 old[] = { { .function = 0, .eax = 7 }, { .function = 1 } };
	c = raw(old, 2);
	assert_int_equal(cpuid_add_topology_leaves(&c), 0);
	assert_int_equal(c->nent, 2);
	cpuid_adjust(c, 1, 2, NULL);
	assert_int_equal(c->nent, 2);
	assert_int_equal(get(c, 1, 0)->ebx >> 24, 1);
	free(c);
}

static void test_hide_cx16(void **state)
{
	(void)state;
	struct cpuid_hide h;
	assert_int_equal(cpuid_parse_features("-cx16", &h), 0);
	assert_int_equal(h.n, 1);
	struct kvm_cpuid2 *c = make();
	cpuid_adjust(c, 0, 2, &h);
	assert_false(get(c, 1, 0)->ecx & (1u << 13));
	assert_true(get(c, 1, 0)->ecx & (1u << 26)); /* xsave untouched */
	free(c);
}

static void test_hide_xsave_dependents(void **state)
{
	(void)state;
	struct cpuid_hide h;
	assert_int_equal(cpuid_parse_features("-xsave", &h), 0);
	struct kvm_cpuid2 *c = make();
	cpuid_adjust(c, 0, 2, &h);
	uint32_t ecx1 = get(c, 1, 0)->ecx;
	assert_false(ecx1 & (1u << 26)); /* xsave */
	assert_false(ecx1 & (1u << 28)); /* avx */
	assert_false(ecx1 & (1u << 12)); /* fma */
	assert_false(ecx1 & (1u << 29)); /* f16c */
	assert_true(ecx1 & (1u << 13));  /* cx16 kept */
	assert_true(ecx1 & (1u << 20));  /* sse4_2 kept */
	assert_true(ecx1 & (1u << 31));  /* hypervisor */
	uint32_t ebx7 = get(c, 7, 0)->ebx;
	assert_false(ebx7 & (1u << 5));  /* avx2 */
	assert_false(ebx7 & (1u << 16)); /* avx512f */
	assert_false(ebx7 & (1u << 30)); /* avx512bw (via avx512f) */
	assert_true(ebx7 & (1u << 0));   /* fsgsbase kept */
	assert_true(ebx7 & (1u << 20));  /* smap kept */
	assert_false(get(c, 7, 0)->ecx & (1u << 3)); /* pku needs xsave */
	assert_true(get(c, 7, 0)->ecx & (1u << 22)); /* rdpid kept */
	assert_int_equal(get(c, 0xd, 0)->eax, 0);
	assert_int_equal(get(c, 0xd, 0)->ebx, 0);
	assert_int_equal(get(c, 0xd, 1)->eax, 0);
	free(c);

	/* -avx keeps xsave but drops avx2/fma */
	assert_int_equal(cpuid_parse_features("-avx", &h), 0);
	c = make();
	cpuid_adjust(c, 0, 1, &h);
	assert_true(get(c, 1, 0)->ecx & (1u << 26));
	assert_false(get(c, 1, 0)->ecx & (1u << 28));
	assert_false(get(c, 1, 0)->ecx & (1u << 12));
	assert_false(get(c, 7, 0)->ebx & (1u << 5));
	assert_int_equal(get(c, 0xd, 0)->eax, 0x207);
	free(c);
}

static void test_parse_errors(void **state)
{
	(void)state;
	struct cpuid_hide h;
	assert_int_equal(cpuid_parse_features("-foo", &h), -EINVAL);
	assert_non_null(strstr(err_msg(), "unknown CPU feature 'foo'"));
	assert_non_null(strstr(err_msg(), "cx16"));
	assert_int_equal(cpuid_parse_features("-cx16,+avx", &h), -EINVAL);
	assert_non_null(strstr(err_msg(), "+avx"));
	assert_int_equal(cpuid_parse_features("cx16", &h), -EINVAL);
	assert_non_null(strstr(err_msg(), "-cx16"));
	assert_int_equal(cpuid_parse_features("turbo", &h), -EINVAL);
	assert_int_equal(cpuid_parse_features("-", &h), -EINVAL);
	/* empty items, spaces and NULL are fine */
	assert_int_equal(cpuid_parse_features(" -cx16 , ,-aes,", &h), 0);
	assert_int_equal(h.n, 2);
	assert_int_equal(cpuid_parse_features("", &h), 0);
	assert_int_equal(h.n, 0);
	assert_int_equal(cpuid_parse_features(NULL, &h), 0);
	assert_int_equal(h.n, 0);
	/* duplicates collapse */
	assert_int_equal(cpuid_parse_features("-cx16,-cx16", &h), 0);
	assert_int_equal(h.n, 1);
}

static bool hides(const struct cpuid_hide *h, uint32_t leaf, uint32_t sub, unsigned reg, unsigned bit)
{
	for (unsigned i = 0; i < h->n; i++)
		if (h->item[i].leaf == leaf && h->item[i].subleaf == sub && h->item[i].reg == reg && h->item[i].bit == bit)
			return true;
	return false;
}

static void test_preset(void **state)
{
	(void)state;
	struct cpuid_hide h;
	assert_int_equal(cpuid_parse_features("emulator-safe", &h), 0);
	assert_true(hides(&h, 1, 0, 2, 13));          /* cx16 */
	assert_true(hides(&h, 1, 0, 2, 26));          /* xsave */
	assert_true(hides(&h, 1, 0, 2, 23));          /* popcnt */
	assert_true(hides(&h, 1, 0, 2, 20));          /* sse4_2 */
	assert_true(hides(&h, 0x80000001, 0, 3, 27)); /* rdtscp */
	assert_true(hides(&h, 7, 0, 2, 22));          /* rdpid */
	assert_true(hides(&h, 7, 0, 1, 20));          /* smap */
	assert_true(hides(&h, 7, 0, 1, 0));           /* fsgsbase */
	assert_false(hides(&h, 1, 0, 2, 21));         /* x2apic stays */
	unsigned n = h.n;
	assert_int_equal(cpuid_parse_features("emulator-safe,-aes,-x2apic", &h), 0);
	assert_int_equal(h.n, n + 1); /* aes already in the preset */
	assert_true(hides(&h, 1, 0, 2, 21));

	struct kvm_cpuid2 *c = make();
	cpuid_adjust(c, 1, 2, &h);
	assert_int_equal(get(c, 1, 0)->ecx & ~((1u << 31) | (1u << 30)), 0); /* only hypervisor, rdrand */
	assert_int_equal(get(c, 7, 0)->ebx, 0);
	assert_int_equal(get(c, 7, 0)->ecx, 0);
	assert_int_equal(get(c, 0x80000001, 0)->edx, 1u << 29); /* lm stays */
	assert_int_equal(get(c, 1, 0)->ebx >> 24, 1);
	free(c);
}


int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apic_ids_and_topology),
		cmocka_unit_test(test_single_cpu),
		cmocka_unit_test(test_leaf_1f_and_missing_signature),
		cmocka_unit_test(test_hide_cx16),
		cmocka_unit_test(test_hide_xsave_dependents),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_preset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
