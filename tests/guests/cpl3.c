/* User-mode work: a prime sieve and an integer loop run at CPL3 (natively on
 * this host), return through ud2, and their results are checked. Privileged
 * or invalid instructions at CPL3 must come back as the right exceptions. */
#include "lib/kit.h"

#define SIEVE_N 10000000UL
#define SIEVE_PRIMES 664579L    /* pi(10^7) */
#define SIEVE_BASE 0x01000000UL /* 16 MiB: free RAM, identity mapped, user accessible */

static long sieve(long n)
{
	volatile uint8_t *composite = (volatile uint8_t *)SIEVE_BASE;
	for (long i = 0; i < n; i++)
		composite[i] = 0;
	long count = 0;
	for (long i = 2; i < n; i++) {
		if (composite[i])
			continue;
		count++;
		for (long j = i * i; j < n; j += i)
			composite[j] = 1;
	}
	return count;
}

/* sum of i*i for i < n, mod 2^64; closed form checked below. */
static long sum_squares(long n)
{
	uint64_t s = 0;
	for (uint64_t i = 0; i < (uint64_t)n; i++) {
		s += i * i;
		__asm__ volatile("" : "+r"(s));   /* keep the loop a loop */
	}
	return (long)s;
}

static long do_hlt(long arg)
{
	__asm__ volatile("hlt");
	return arg;
}

static long do_ud2(long arg)
{
	__asm__ volatile("ud2");
	return arg;
}

static long do_io(long arg)
{
	outb(0x80, 0);   /* IOPL 0, no bitmap: #GP */
	return arg;
}

/* (n-1) n (2n-1) / 6 mod 2^64: divide the 2 and the 3 out of the factors
 * first (no 128-bit division, so no libgcc). */
static uint64_t sum_squares_formula(uint64_t n)
{
	uint64_t f[3] = { n - 1, n, 2 * n - 1 };
	for (int i = 0; i < 3; i++)
		if (f[i] % 2 == 0) {
			f[i] /= 2;
			break;
		}
	for (int i = 0; i < 3; i++)
		if (f[i] % 3 == 0) {
			f[i] /= 3;
			break;
		}
	return f[0] * f[1] * f[2];
}

int kit_main(void)
{
	long r = kit_user_call(sieve, SIEVE_N);
	kit_printf("cpl3: sieve(%lu) = %ld\n", SIEVE_N, r);
	if (r != SIEVE_PRIMES)
		kit_fail("sieve returned %ld, expected %ld (fault vector %lu)", r, SIEVE_PRIMES, kit_user_fault_vector);

	long n = 100000000;
	r = kit_user_call(sum_squares, n);
	uint64_t want = sum_squares_formula((uint64_t)n);
	kit_printf("cpl3: sum_squares(%ld) = %lx\n", n, (uint64_t)r);
	if ((uint64_t)r != want)
		kit_fail("sum_squares returned %lx, expected %lx", (uint64_t)r, want);

	static const struct { long (*fn)(long); unsigned vector; const char *what; } faults[] = {
		{ do_hlt, 13, "hlt" }, { do_ud2, 6, "ud2" }, { do_io, 13, "outb" },
	};
	for (unsigned i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		r = kit_user_call(faults[i].fn, 0);
		if (r != KIT_USER_FAULT || kit_user_fault_vector != faults[i].vector)
			kit_fail("%s at CPL3: result %lx vector %lu, expected fault %u", faults[i].what, (uint64_t)r,
				 kit_user_fault_vector, faults[i].vector);
	}
	kit_puts("cpl3: hlt, ud2 and outb at CPL3 faulted as expected\n");
	return 0;
}
