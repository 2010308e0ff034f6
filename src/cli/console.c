/* The serial console on the user's terminal: raw mode, an escape key sequence to
 * quit (Ctrl-A x, like QEMU), and a thread feeding keystrokes into the UART. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include "cli/cli.h"

#define ESCAPE_CHAR 0x01 /* Ctrl-A */

/* Process-wide: there is one terminal, whatever the number of VMs. */
static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;
static int tio_fd = -1;
static pthread_t input_thread;
static bool input_running;
static int stop_pipe[2] = { -1, -1 };
static struct vm *console_vm;
static int console_in = -1;

void console_restore_terminal(void)
{
	if (tio_saved) {
		tcsetattr(tio_fd, TCSAFLUSH, &saved_tio);
		tio_saved = 0;
		log_set_crlf(0);
	}
}

static void crash_handler(int sig)
{
	console_restore_terminal();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void feed_uart(const uint8_t *buf, size_t len)
{
	/* The FIFO is 16 bytes: wait (briefly, repeatedly) for the guest to drain it. */
	while (len && !console_vm->ending) {
		size_t n = uart_receive(console_vm->uart, buf, len);
		buf += n;
		len -= n;
		if (len) {
			struct pollfd p = { .fd = stop_pipe[0], .events = POLLIN };
			if (poll(&p, 1, 5) > 0)
				return;
		}
	}
}

static void *input_main(void *arg)
{
	(void)arg;
	bool escape = false;
	uint8_t buf[256], out[256];
	for (;;) {
		struct pollfd p[2] = { { .fd = console_in, .events = POLLIN }, { .fd = stop_pipe[0], .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & (POLLIN | POLLHUP)))
			continue;
		ssize_t n = read(console_in, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			break; /* EOF: no more input, the guest keeps running */
		}
		size_t o = 0;
		for (ssize_t i = 0; i < n; i++) {
			uint8_t ch = buf[i];
			if (tio_saved && escape) {
				escape = false;
				if (ch == 'x' || ch == 'X') {
					vm_request_end(console_vm, VM_END_USER, 0, "quit from the console (Ctrl-A x)");
					return NULL;
				}
				if (ch == 'h' || ch == '?') {
					fprintf(stderr, "\r\nvmsvc console: Ctrl-A x quit, Ctrl-A Ctrl-A send Ctrl-A\r\n");
					continue;
				}
				if (ch != ESCAPE_CHAR)
					continue;
			} else if (tio_saved && ch == ESCAPE_CHAR) {
				escape = true;
				continue;
			}
			out[o++] = ch;
		}
		if (o && console_vm->uart)
			feed_uart(out, o);
	}
	return NULL;
}

int console_start(struct vm *vm, int in_fd)
{
	console_vm = vm;
	console_in = in_fd;
	if (in_fd < 0)
		return 0;
	if (isatty(in_fd)) {
		struct termios raw;
		if (tcgetattr(in_fd, &saved_tio) == 0) {
			tio_fd = in_fd;
			raw = saved_tio;
			cfmakeraw(&raw);
			raw.c_oflag |= OPOST | ONLCR; /* keep host log lines readable */
			tio_saved = 1;
			atexit(console_restore_terminal);
			signal(SIGSEGV, crash_handler);
			signal(SIGABRT, crash_handler);
			signal(SIGBUS, crash_handler);
			signal(SIGFPE, crash_handler);
			tcsetattr(in_fd, TCSAFLUSH, &raw);
		}
	}
	if (pipe2(stop_pipe, O_CLOEXEC) < 0)
		return err_set(errno, "pipe: %s", strerror(errno));
	int r = pthread_create(&input_thread, NULL, input_main, NULL);
	if (r)
		return err_set(r, "console thread: %s", strerror(r));
	input_running = true;
	return 0;
}

void console_stop(void)
{
	if (input_running) {
		if (write(stop_pipe[1], "x", 1) < 0) { /* nothing else to do */ }
		pthread_join(input_thread, NULL);
		input_running = false;
	}
	for (int i = 0; i < 2; i++)
		if (stop_pipe[i] >= 0) {
			close(stop_pipe[i]);
			stop_pipe[i] = -1;
		}
	console_restore_terminal();
}
