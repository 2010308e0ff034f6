/* One-line error messages, recorded per thread, printed by the CLI. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <vmsvc/err.h>

static __thread char err_buf[512];
static int log_level = 1;
static int log_crlf;

int err_set(int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err_buf, sizeof(err_buf), fmt, ap);
	va_end(ap);
	return errnum > 0 ? -errnum : (errnum ? errnum : -1);
}

int err_prefix(int ret, const char *fmt, ...)
{
	char prefix[192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	/* Shift the old message right and put "prefix: " in front, truncating the tail. */
	size_t pl = strlen(prefix), ol = strlen(err_buf);
	if (pl + 2 >= sizeof(err_buf))
		return ret;
	if (ol > sizeof(err_buf) - 1 - pl - 2)
		ol = sizeof(err_buf) - 1 - pl - 2;
	memmove(err_buf + pl + 2, err_buf, ol);
	err_buf[pl + 2 + ol] = 0;
	memcpy(err_buf, prefix, pl);
	err_buf[pl] = ':';
	err_buf[pl + 1] = ' ';
	return ret;
}

const char *err_msg(void) { return err_buf; }
void err_clear(void) { err_buf[0] = 0; }
void log_set_level(int level) { log_level = level; }
void log_set_crlf(int on) { log_crlf = on; }

static void log_v(int level, const char *tag, const char *fmt, va_list ap)
{
	char line[1024];
	if (level > log_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	/* One write so lines from several threads don't interleave; \r for raw terminals. */
	fprintf(stderr, "vmsvc: %s%s%s", tag, line, log_crlf ? "\r\n" : "\n");
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(2, "", fmt, ap);
	va_end(ap);
}
void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(1, "warning: ", fmt, ap);
	va_end(ap);
}
void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(0, "", fmt, ap);
	va_end(ap);
}
