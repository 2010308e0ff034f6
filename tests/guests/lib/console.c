/* Serial output (COM1 THR, no LSR polling: both VMMs accept every byte), a
 * minimal printf, the isa-debug-exit, and the few libc routines gcc may emit. */
#include "kit.h"

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4

void kit_putc(char c)
{
	outb(COM1, (uint8_t)c);
}

void kit_puts(const char *s)
{
	while (*s)
		kit_putc(*s++);
}

static void put_unsigned(uint64_t v, unsigned base, int width)
{
	char buf[24];
	int n = 0;
	do {
		unsigned d = v % base;
		buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v && n < (int)sizeof(buf));
	while (n < width--)
		kit_putc('0');
	while (n)
		kit_putc(buf[--n]);
}

/* %s %c %d %u %x %lx %lu %ld %p %%; a leading 0<width> pads with zeros. */
void kit_vprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			kit_putc(*fmt);
			continue;
		}
		fmt++;
		int width = 0;
		if (*fmt == '0')
			fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		bool is_long = false;
		while (*fmt == 'l') {
			is_long = true;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			kit_puts(s ? s : "(null)");
			break;
		}
		case 'c':
			kit_putc((char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = is_long ? va_arg(ap, long) : va_arg(ap, int);
			if (v < 0) {
				kit_putc('-');
				put_unsigned((uint64_t)0 - (uint64_t)v, 10, width);
			} else {
				put_unsigned((uint64_t)v, 10, width);
			}
			break;
		}
		case 'u':
			put_unsigned(is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10, width);
			break;
		case 'x':
			put_unsigned(is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16, width);
			break;
		case 'p':
			kit_puts("0x");
			put_unsigned((uintptr_t)va_arg(ap, void *), 16, width);
			break;
		case '%':
			kit_putc('%');
			break;
		case '\0':
			return;
		default:
			kit_putc('%');
			kit_putc(*fmt);
		}
	}
}

void kit_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kit_vprintf(fmt, ap);
	va_end(ap);
}

void kit_exit(uint32_t value)
{
	outl(DEBUG_EXIT_PORT, value);
	/* No debug-exit device: stop here (interrupts off, so for good). */
	for (;;)
		__asm__ volatile("cli; hlt");
}

void kit_pass(void)
{
	kit_puts("PASS\n");
	kit_exit(0);
}

void kit_fail(const char *fmt, ...)
{
	va_list ap;
	kit_puts("FAIL: ");
	va_start(ap, fmt);
	kit_vprintf(fmt, ap);
	va_end(ap);
	kit_putc('\n');
	kit_exit(1);
}

/* rep movsb/stosb: one emulated instruction instead of a loop at CPL0. */
void *memcpy(void *d, const void *s, size_t n)
{
	void *ret = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return ret;
}

void *memset(void *d, int c, size_t n)
{
	void *ret = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return ret;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}
