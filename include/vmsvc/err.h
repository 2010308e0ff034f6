/* Error reporting below the CLI: functions return a negative errno and record a
 * one-line, human-readable message that the caller (ultimately the CLI) prints.
 * The message buffer is thread-local, so two VMs in one process do not clash. */
#ifndef VMSVC_ERR_H
#define VMSVC_ERR_H
#include <stdarg.h>

/* Record a message and return -errnum (errnum > 0, e.g. EINVAL). */
int err_set(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading kernel: ..."); returns ret. */
int err_prefix(int ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last recorded message of this thread ("" if none). */
const char *err_msg(void);
void err_clear(void);

/* Logging to stderr, prefixed with "vmsvc: ". Used for diagnostics, never for control flow. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set once by the CLI: 0 = errors only, 1 = + warnings (default), 2 = + info. */
void log_set_level(int level);
/* Terminal in raw mode: end log lines with \r\n. */
void log_set_crlf(int on);

#endif
