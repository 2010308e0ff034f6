/* CLI internals: subcommands and the terminal console. */
#ifndef VMSVC_CLI_H
#define VMSVC_CLI_H
#include <stdbool.h>
#include <stdint.h>

struct vm;
int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
/* Control socket clients (src/cli/ctl.c). */
int cmd_ls(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_regs(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_suspend(int argc, char **argv);
/* `vmsvc resume FILE` (src/cli/resume.c), reached through cmd_resume. */
int cmd_resume_file(int argc, char **argv);

/* Run a configured VM with its console, control socket and signal handling until
 * it ends; returns the exit status (src/cli/run.c). `serial`: stdio, file:PATH, none. */
struct vm_config;
struct control_config;
int run_configured(struct vm_config cfg, const char *serial, const struct control_config *ctl_cfg);

/* Parse "512M", "2G", "65536K", "1048576B"; a bare number means MiB (like QEMU). */
int parse_size(const char *s, uint64_t *out);

struct vm_config;
/* Record a --disk ('d') or --net ('n') spec in cfg; -1 (message printed) when full. */
int cli_add_device_spec(struct vm_config *cfg, int opt, const char *spec);

/* Progress bar on stderr (src/cli/progress.c): start returns false (and the
 * others do nothing) when stderr is not a terminal. draw: bytes done of total,
 * with the rate since start; end: clears the bar on success, keeps it (new
 * line) before an error message. */
bool cli_progress_start(void);
void cli_progress_draw(uint64_t done, uint64_t total);
void cli_progress_end(bool ok);

/* Terminal console: raw mode + escape sequence (Ctrl-A x) + input to the UART.
 * The terminal is restored on every exit path (normal, signal, crash, exit()). */
int console_start(struct vm *vm, int in_fd);
void console_stop(void);
void console_restore_terminal(void);

/* Connect to a VM's control socket (name or path) with send/receive timeouts.
 * Returns the fd, or -ENOENT (no socket), -ECONNREFUSED (stale), -errno; message set. */
int cli_control_connect(const char *name_or_path, int timeout_s);

#endif
