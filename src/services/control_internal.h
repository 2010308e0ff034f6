/* Control service internals shared by control.c (socket, thread, clients),
 * control_proto.c (request parsing, command table, dispatch) and
 * control_cmds.c (built-in commands, event formatting). */
#ifndef VMSVC_CONTROL_INTERNAL_H
#define VMSVC_CONTROL_INTERNAL_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>
#include <vmsvc/bus.h>
#include <vmsvc/control.h>

#define CTL_MAX_CMDS 32
#define CTL_CMD_NAME 32
#define CTL_RING 4096   /* queued bus events waiting for the control thread */
#define CTL_RING_RESERVE 256   /* ring slots only low-frequency events may use */

struct ctl_cmd {
	char name[CTL_CMD_NAME];
	control_cmd_fn fn;
	void *opaque;
};

/* A bus event copied off the publishing thread (pointers in it are not kept). */
struct ctl_event {
	struct bus_event ev;
	char mnemonic[16];
	uint64_t time_ns;   /* CLOCK_REALTIME */
};

struct ctl_client {
	int fd;
	char *in;           /* partial request line; CONTROL_MAX_LINE + 1 bytes */
	size_t in_len;
	bool discard;       /* skipping the rest of an oversized line */
	char *out;          /* pending output */
	size_t out_len, out_off, out_cap;
	bool closing;       /* close once the output is flushed */
	uint64_t closing_since;
	uint32_t watching;  /* epoll events currently registered */
	bool dead;          /* close now */
	uint64_t sub_mask;  /* events this client streams (0 = not subscribed) */
	uint64_t seen_lost, seen_lost_hf; /* ring losses already reported */
	uint64_t rate_window_ns;
	unsigned rate_count;
	uint64_t rate_dropped;
};

struct control {
	struct vm *vm;
	char name[CONTROL_MAX_NAME + 1];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t start_mono_ns;
	dev_t sock_dev;                   /* identity of our socket file, to remove only ours */
	ino_t sock_ino;
	int sub_id;
	int pause_held;                   /* the control socket holds one vm_pause (atomic) */
	int reply_fd_plus1;               /* fd to pass with the current response + 1 (0: none) */

	pthread_mutex_t cmd_lock;
	struct ctl_cmd cmds[CTL_MAX_CMDS];

	uint64_t counts[BUS_EV__COUNT];   /* low-frequency bus events seen, by type (atomic) */

	/* Events for streaming clients: the bus handler queues only types in
	 * want_mask (the union of subscribed clients' masks). */
	uint64_t want_mask;               /* atomic */
	pthread_mutex_t ring_lock;
	struct ctl_event ring[CTL_RING];
	uint64_t ring_head, ring_tail;
	uint64_t ring_lost, ring_lost_hf; /* events dropped because the ring was full */
	uint64_t hf_mask;                 /* ctl_high_frequency_mask(), cached */

	int listen_fd, epoll_fd, wake_fd;
	pthread_t thread;
	bool thread_started;
	int stopping;                     /* atomic */
	struct ctl_client *clients[CONTROL_MAX_CLIENTS];
};

/* Every bus event type a client can name (bus.lost is the bus's own report
 * to async subscribers, never published). */
static inline uint64_t ctl_all_events_mask(void)
{
	return BUS_MASK_ALL & ~BUS_MASK(BUS_EV_BUS_LOST);
}

/* Events that may fire per instruction or per exit: streamed only when a client
 * names them, and then rate-limited. */
uint64_t ctl_high_frequency_mask(void);
/* Parse a subscribe request's "events" list into a mask; -EINVAL + err_set. */
int ctl_parse_event_filter(struct json_object *req, uint64_t *mask);
/* One event as a JSON line (malloc'd, with '\n'). */
char *ctl_format_event(const struct ctl_event *e, size_t *len);

/* Handle one line; client may be NULL (no subscribe then). */
int ctl_handle_request(struct control *ctl, struct ctl_client *client, const char *line, size_t len, char **response);
/* Turn client into an event stream (control.c). */
int ctl_subscribe(struct control *ctl, struct ctl_client *client, struct json_object *req, struct json_object **result);
void ctl_register_builtins(struct control *ctl);
void ctl_register_regs(struct control *ctl);   /* control_regs.c */
/* The fd a handler attached with control_reply_fd (or -1); the caller owns it. */
int ctl_take_reply_fd(struct control *ctl);
uint64_t ctl_now_ns(int clock);

#endif
