/* Control API: a unix socket per running VM speaking newline-delimited JSON
 * (docs/api.md). One control thread serves every client with epoll; command
 * handlers run on that thread, so a handler may block briefly (vm_pause) but
 * never for long without delaying other clients.
 *
 * Other services add commands without touching the dispatcher:
 *   control_register_command(ctl, "snapshot", snapshot_cmd, snap);
 * A handler reads its arguments from the request object (json-c) and returns
 * 0 with an optional result object (ownership passes to the control service),
 * or a negative errno with err_set() called: the message becomes the one-line
 * "error" of the response. */
#ifndef VMSVC_CONTROL_H
#define VMSVC_CONTROL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_PROTOCOL_VERSION 1
#define CONTROL_MAX_LINE 65536          /* longest request line accepted, without '\n' */
#define CONTROL_MAX_OUT (1u << 20)      /* per-client pending output before it is dropped */
#define CONTROL_MAX_CLIENTS 64
#define CONTROL_MAX_NAME 64             /* VM names: [A-Za-z0-9._-], not starting with '.' */
#define CONTROL_EXIT_EVENTS_PER_SEC 1000 /* per-client rate limit for high-frequency events */

struct vm;
struct control;
struct json_object;   /* json-c */

typedef int (*control_cmd_fn)(void *opaque, struct json_object *req, struct json_object **result);

struct control_config {
	const char *name;   /* VM name; NULL = "vm-PID" */
	const char *path;   /* socket path; NULL = control_default_path(name) */
	bool start_paused;  /* vmsvc run --paused: the CLI takes the socket's pause before vm_run */
};

/* Create the service for vm (NULL: no VM, only the dispatcher — unit tests):
 * registers the built-in commands and subscribes to vm's bus. Must run before
 * vm_run() (bus subscriptions are made while the VM is not running). */
int control_create(struct vm *vm, struct control **out);
/* Bind the socket (refusing a name a live VM owns, replacing a stale socket)
 * and start the control thread. */
int control_start(struct control *ctl, const struct control_config *cfg);
/* Stop the thread (after flushing pending output briefly), close every client,
 * remove the socket. Safe on a control that never started. */
void control_stop(struct control *ctl);
/* Unsubscribe from the bus and free. Call after vm_run() returned. */
void control_destroy(struct control *ctl);

/* Add or replace a command. name: 1..31 chars. Thread-safe. */
int control_register_command(struct control *ctl, const char *name, control_cmd_fn fn, void *opaque);
void control_unregister_command(struct control *ctl, const char *name);
/* From inside a command handler: send {"progress": progress} (takes it) to the
 * client whose request is running, before its response (long commands such as
 * suspend). Best effort: nothing happens outside a socket client's request. */
void control_progress(struct json_object *progress);

/* From inside a command handler: send fd (SCM_RIGHTS) with this command's
 * response; ownership passes to the control service, which closes it after
 * sending (or at once if the command fails or has no socket client). */
void control_reply_fd(struct control *ctl, int fd);

/* The socket path the service listens on ("" before control_start). */
const char *control_socket_path(const struct control *ctl);
const char *control_name(const struct control *ctl);

/* Handle one request line (no '\n') as a client connection would, without a
 * socket: *response is a malloc'd JSON line without '\n'. Subscribe is not
 * available here. For tests and for embedding. */
int control_handle_line(struct control *ctl, const char *line, size_t len, char **response);

/* Default socket directory: $XDG_RUNTIME_DIR/vmsvc, or /run/vmsvc when unset.
 * Returns 0 or -ENAMETOOLONG. */
int control_default_dir(char *buf, size_t size);
/* Socket path for a VM name, or the name itself when it contains '/'. */
int control_resolve_path(const char *name_or_path, char *buf, size_t size);
/* true if name is a valid VM name. */
int control_name_valid(const char *name);

#endif
