/* Control service: a unix socket per VM, one epoll thread serving every client.
 * Protocol and commands: control_proto.c, control_cmds.c, docs/api.md.
 *
 * Hostile clients cannot hurt the VM: reads and writes are non-blocking, a
 * request line is capped at CONTROL_MAX_LINE, pending output per client at
 * CONTROL_MAX_OUT (a client that does not read is dropped), and bus events
 * reach clients through a bounded ring: a vCPU never waits for a client. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

int control_name_valid(const char *name)
{
	if (!name || !*name || name[0] == '.' || strlen(name) > CONTROL_MAX_NAME)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '.' || *p == '_' || *p == '-'))
			return 0;
	return 1;
}

int control_default_dir(char *buf, size_t size)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n = (xdg && *xdg) ? snprintf(buf, size, "%s/vmsvc", xdg) : snprintf(buf, size, "/run/vmsvc");
	if (n < 0 || (size_t)n >= size)
		return err_set(ENAMETOOLONG, "control socket directory name too long");
	return 0;
}

int control_resolve_path(const char *name, char *buf, size_t size)
{
	if (!name || !*name)
		return err_set(EINVAL, "empty VM name");
	if (strchr(name, '/')) {
		if (strlen(name) >= size)
			return err_set(ENAMETOOLONG, "%s: socket path too long (max %zu)", name, size - 1);
		snprintf(buf, size, "%s", name);
		return 0;
	}
	if (!control_name_valid(name))
		return err_set(EINVAL, "invalid VM name '%.64s' (letters, digits, '.', '_', '-'; at most %d)",
			       name, CONTROL_MAX_NAME);
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int r = control_default_dir(dir, sizeof(dir));
	if (r < 0)
		return r;
	int n = snprintf(buf, size, "%s/%s.sock", dir, name);
	if (n < 0 || (size_t)n >= size)
		return err_set(ENAMETOOLONG, "socket path for '%s' too long", name);
	return 0;
}

#ifndef HAVE_JSONC
int control_create(struct vm *vm, struct control **out)
{
	return err_set(ENOTSUP, "control socket: vmsvc was built without json-c");
}
int control_start(struct control *ctl, const struct control_config *cfg) { return -ENOTSUP; }
void control_stop(struct control *ctl) {}
void control_destroy(struct control *ctl) {}
int control_register_command(struct control *ctl, const char *name, control_cmd_fn fn, void *opaque)
{
	return -ENOTSUP;
}
void control_unregister_command(struct control *ctl, const char *name) {}
const char *control_socket_path(const struct control *ctl) { return ""; }
const char *control_name(const struct control *ctl) { return ""; }
int control_handle_line(struct control *ctl, const char *line, size_t len, char **response) { return -ENOTSUP; }
void control_progress(struct json_object *progress) {}
#else
#include <json-c/json.h>
#include "services/control_internal.h"

#define EP_LISTEN 0
#define EP_WAKE 1
#define EP_CLIENT0 2
#define FLUSH_AT_STOP_MS 500
#define CLOSE_LINGER_MS 5000

/* ---- bus side (any thread, including vCPUs): count, and queue if someone streams ---- */

static void ctl_on_event(void *opaque, const struct bus_event *ev)
{
	struct control *ctl = opaque;
	if ((unsigned)ev->type >= BUS_EV__COUNT)
		return;
	/* Counted only while subscribed: low-frequency types always are; exit
	 * counts for "stats" come from the vCPUs' own counters instead. */
	if (!(ctl->hf_mask & BUS_MASK(ev->type)))
		__atomic_add_fetch(&ctl->counts[ev->type], 1, __ATOMIC_RELAXED);
	if (!(__atomic_load_n(&ctl->want_mask, __ATOMIC_RELAXED) & BUS_MASK(ev->type)))
		return;
	struct ctl_event e = { .ev = *ev, .time_ns = ctl_now_ns(CLOCK_REALTIME) };
	if (ev->type == BUS_EV_EMUL_ASSIST && ev->u.emul.mnemonic)
		snprintf(e.mnemonic, sizeof(e.mnemonic), "%s", ev->u.emul.mnemonic);
	if (ev->type == BUS_EV_EMUL_ASSIST)
		e.ev.u.emul.mnemonic = NULL;   /* the copy in e.mnemonic is what we keep */
	bool wake = false;
	pthread_mutex_lock(&ctl->ring_lock);
	/* High-frequency events leave room for lifecycle events, so that a flood of
	 * exits never costs a subscriber its vm.paused. */
	bool hf = ctl->hf_mask & BUS_MASK(ev->type);
	if (ctl->ring_head - ctl->ring_tail >= (hf ? CTL_RING - CTL_RING_RESERVE : CTL_RING)) {
		if (hf)
			ctl->ring_lost_hf++;
		else
			ctl->ring_lost++;
	} else {
		wake = ctl->ring_head == ctl->ring_tail;
		ctl->ring[ctl->ring_head++ % CTL_RING] = e;
	}
	pthread_mutex_unlock(&ctl->ring_lock);
	if (wake && ctl->wake_fd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(ctl->wake_fd, &one, sizeof(one));   /* EAGAIN: already awake */
		(void)w;
	}
}

int control_create(struct vm *vm, struct control **out)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return err_set(ENOMEM, "out of memory");
	ctl->vm = vm;
	ctl->sub_id = -1;
	ctl->listen_fd = ctl->epoll_fd = ctl->wake_fd = -1;
	ctl->start_mono_ns = ctl_now_ns(CLOCK_MONOTONIC);
	snprintf(ctl->name, sizeof(ctl->name), "vm-%d", (int)getpid());
	pthread_mutex_init(&ctl->cmd_lock, NULL);
	pthread_mutex_init(&ctl->ring_lock, NULL);
	ctl->hf_mask = ctl_high_frequency_mask();
	ctl_register_builtins(ctl);
	if (vm) {
		/* Lifecycle events only: they are counted for "stats" and queued for
		 * streams. High-frequency events (exits, devices, interrupts) are added
		 * to the mask only while a client streams them (update_want_mask), so
		 * an unwatched VM's exits cost one load and a branch. */
		ctl->sub_id = bus_subscribe(&vm->bus, ctl_all_events_mask() & ~ctl->hf_mask, NULL, ctl_on_event, ctl);
		if (ctl->sub_id < 0) {
			int e = -ctl->sub_id;
			control_destroy(ctl);
			return err_set(e, "control: cannot subscribe to the service bus");
		}
	}
	*out = ctl;
	return 0;
}

const char *control_socket_path(const struct control *ctl) { return ctl ? ctl->path : ""; }
const char *control_name(const struct control *ctl) { return ctl ? ctl->name : ""; }

/* ---- socket setup ---- */

static int make_private_dir(const char *dir)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return err_set(errno, "cannot create %s: %s%s", dir, strerror(errno),
			       errno == EACCES ? " (set XDG_RUNTIME_DIR or use --control PATH)" : "");
	struct stat st;
	if (lstat(dir, &st) < 0)
		return err_set(errno, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return err_set(ENOTDIR, "%s exists and is not a directory", dir);
	if (st.st_uid != geteuid())
		return err_set(EPERM, "%s is owned by another user", dir);
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0)
		return err_set(errno, "chmod %s: %s", dir, strerror(errno));
	return 0;
}

/* A socket file at path: live (someone accepts) -> -EADDRINUSE; stale -> removed. */
static int claim_path(const char *path, const char *name)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : err_set(errno, "%s: %s", path, strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return err_set(EEXIST, "%s exists and is not a socket", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(errno, "socket: %s", strerror(errno));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (r == 0 || e == EAGAIN)
		return err_set(EADDRINUSE, "a VM named '%s' is already running (%s)", name, path);
	if (e != ECONNREFUSED)
		return err_set(e, "%s: %s", path, strerror(e));
	if (unlink(path) < 0 && errno != ENOENT)
		return err_set(errno, "cannot remove stale socket %s: %s", path, strerror(errno));
	log_info("removed stale control socket %s", path);
	return 0;
}

static void *control_thread(void *arg);

int control_start(struct control *ctl, const struct control_config *cfg)
{
	int r;
	if (cfg && cfg->name) {
		if (!control_name_valid(cfg->name))
			return err_set(EINVAL, "invalid VM name '%.64s' (letters, digits, '.', '_', '-'; at most %d)",
				       cfg->name, CONTROL_MAX_NAME);
		snprintf(ctl->name, sizeof(ctl->name), "%s", cfg->name);
	}
	if (cfg && cfg->path) {
		if (strlen(cfg->path) >= sizeof(ctl->path))
			return err_set(ENAMETOOLONG, "--control %s: path too long (max %zu)", cfg->path,
				       sizeof(ctl->path) - 1);
		snprintf(ctl->path, sizeof(ctl->path), "%s", cfg->path);
	} else {
		char dir[sizeof(ctl->path)];
		if ((r = control_default_dir(dir, sizeof(dir))) < 0 || (r = make_private_dir(dir)) < 0 ||
		    (r = control_resolve_path(ctl->name, ctl->path, sizeof(ctl->path))) < 0) {
			ctl->path[0] = 0;
			return r;
		}
	}
	if ((r = claim_path(ctl->path, ctl->name)) < 0)
		goto fail;
	ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl->listen_fd < 0) {
		r = err_set(errno, "socket: %s", strerror(errno));
		goto fail;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ctl->path);
	if (bind(ctl->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = errno == EADDRINUSE ? err_set(EADDRINUSE, "a VM named '%s' is already running (%s)", ctl->name, ctl->path)
					: err_set(errno, "bind %s: %s", ctl->path, strerror(errno));
		goto fail;
	}
	/* The directory (0700) is the real protection; this is belt and braces. */
	struct stat st;
	if (chmod(ctl->path, 0600) < 0 || stat(ctl->path, &st) < 0 || listen(ctl->listen_fd, 16) < 0) {
		r = err_set(errno, "%s: %s", ctl->path, strerror(errno));
		unlink(ctl->path);
		goto fail;
	}
	ctl->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	ctl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl->epoll_fd < 0 || ctl->wake_fd < 0) {
		r = err_set(errno, "control: %s", strerror(errno));
		unlink(ctl->path);
		goto fail;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EP_LISTEN };
	epoll_ctl(ctl->epoll_fd, EPOLL_CTL_ADD, ctl->listen_fd, &ev);
	ev.data.u64 = EP_WAKE;
	epoll_ctl(ctl->epoll_fd, EPOLL_CTL_ADD, ctl->wake_fd, &ev);
	/* The control thread must not take process signals (the CLI's signal thread does). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&ctl->thread, NULL, control_thread, ctl);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		r = err_set(r, "control thread: %s", strerror(r));
		unlink(ctl->path);
		goto fail;
	}
	ctl->thread_started = true;
	ctl->sock_dev = st.st_dev;
	ctl->sock_ino = st.st_ino;
	log_info("control socket %s", ctl->path);
	return 0;
fail:
	if (ctl->listen_fd >= 0)
		close(ctl->listen_fd);
	if (ctl->epoll_fd >= 0)
		close(ctl->epoll_fd);
	if (ctl->wake_fd >= 0)
		close(ctl->wake_fd);
	ctl->listen_fd = ctl->epoll_fd = ctl->wake_fd = -1;
	ctl->path[0] = 0;
	return r;
}

/* ---- clients ---- */

static void update_want_mask(struct control *ctl)
{
	uint64_t m = 0;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i] && !ctl->clients[i]->dead)
			m |= ctl->clients[i]->sub_mask;
	__atomic_store_n(&ctl->want_mask, m, __ATOMIC_RELAXED);
	if (ctl->vm && ctl->sub_id > 0)
		bus_set_mask(&ctl->vm->bus, ctl->sub_id, (ctl_all_events_mask() & ~ctl->hf_mask) | m);
}

static void client_watch(struct control *ctl, int idx)
{
	struct ctl_client *c = ctl->clients[idx];
	/* A closing client is only written to: level-triggered input it will never
	 * get read would wake us forever. */
	uint32_t want = (c->closing ? 0 : EPOLLIN | EPOLLRDHUP) | (c->out_len > c->out_off ? EPOLLOUT : 0);
	if (want == c->watching)
		return;
	struct epoll_event ev = { .events = want, .data.u64 = EP_CLIENT0 + (uint64_t)idx };
	epoll_ctl(ctl->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
	c->watching = want;
}

static void client_flush(struct ctl_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->dead = true;
			break;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
}

/* Queue output; a client that lets CONTROL_MAX_OUT pile up is dropped. */
static void client_send(struct ctl_client *c, const char *data, size_t len)
{
	if (c->dead)
		return;
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len - c->out_off + len > CONTROL_MAX_OUT) {
		c->dead = true;
		return;
	}
	if (c->out_off && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			c->dead = true;
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	client_flush(c);
}

static void client_send_json(struct ctl_client *c, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (s) {
		client_send(c, s, strlen(s));
		client_send(c, "\n", 1);
	}
	json_object_put(o);
}

/* A response carrying a file descriptor (control_reply_fd): the fd rides on
 * the response's first bytes, so they must not queue behind other output. A
 * client whose output is backed up gets the response without the fd (it
 * reports that); the fd is always closed here. */
static void client_send_fd(struct ctl_client *c, const char *resp, int fd)
{
	size_t len = strlen(resp);
	char *line = malloc(len + 1);
	client_flush(c);
	if (!line || c->dead || c->out_len > c->out_off) {
		free(line);
		close(fd);
		client_send(c, resp, len);
		client_send(c, "\n", 1);
		return;
	}
	memcpy(line, resp, len);
	line[len] = '\n';
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	memset(&cm, 0, sizeof(cm));
	struct iovec iov = { .iov_base = line, .iov_len = len + 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(int));
	ssize_t n;
	do
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	int e = errno;
	close(fd);
	if (n < 0 && e != EAGAIN && e != EWOULDBLOCK)
		c->dead = true;
	else if ((size_t)(n < 0 ? 0 : n) < len + 1)
		client_send(c, line + (n < 0 ? 0 : n), len + 1 - (size_t)(n < 0 ? 0 : n));
	free(line);
}

static void client_free(struct control *ctl, int idx)
{
	struct ctl_client *c = ctl->clients[idx];
	if (!c)
		return;
	epoll_ctl(ctl->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	ctl->clients[idx] = NULL;
	update_want_mask(ctl);
}

/* The client whose request the control thread is running (for control_progress). */
static __thread struct ctl_client *progress_client;

void control_progress(struct json_object *progress)
{
	struct ctl_client *c = progress_client;
	if (!c) {
		json_object_put(progress);
		return;
	}
	struct json_object *o = json_object_new_object();
	if (!o) {
		json_object_put(progress);
		return;
	}
	json_object_object_add(o, "progress", progress);
	client_send_json(c, o);
}

static void client_line(struct control *ctl, struct ctl_client *c, const char *line, size_t len)
{
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (!len)
		return;
	char *resp = NULL;
	progress_client = c;
	int r = ctl_handle_request(ctl, c, line, len, &resp);
	progress_client = NULL;
	if (r < 0 || !resp) {
		c->dead = true;
		return;
	}
	int fd = ctl_take_reply_fd(ctl);
	if (fd >= 0)
		client_send_fd(c, resp, fd);
	else {
		client_send(c, resp, strlen(resp));
		client_send(c, "\n", 1);
	}
	free(resp);
}

static void client_read(struct control *ctl, struct ctl_client *c)
{
	for (int rounds = 0; rounds < 16 && !c->dead && !c->closing; rounds++) {
		ssize_t n = recv(c->fd, c->in + c->in_len, CONTROL_MAX_LINE + 1 - c->in_len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->dead = true;
			return;
		}
		if (n == 0) {
			/* Half-close: answer a last unterminated line, flush, then close. */
			if (c->in_len)
				client_line(ctl, c, c->in, c->in_len);
			c->in_len = 0;
			c->closing = true;
			return;
		}
		c->in_len += (size_t)n;
		size_t start = 0;
		for (size_t i = c->in_len - (size_t)n; i < c->in_len && !c->dead; i++)
			if (c->in[i] == '\n') {
				client_line(ctl, c, c->in + start, i - start);
				start = i + 1;
			}
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
		if (c->in_len > CONTROL_MAX_LINE) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "id", NULL);
			json_object_object_add(o, "ok", json_object_new_boolean(0));
			char msg[80];
			snprintf(msg, sizeof(msg), "request line longer than %d bytes; closing", CONTROL_MAX_LINE);
			json_object_object_add(o, "error", json_object_new_string(msg));
			client_send_json(c, o);
			c->in_len = 0;
			c->closing = true;
			return;
		}
	}
}

static void accept_clients(struct control *ctl)
{
	for (;;) {
		int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;   /* EAGAIN, or a transient error: epoll tells us again */
		int idx = -1;
		for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
			if (!ctl->clients[i]) {
				idx = i;
				break;
			}
		struct ctl_client *c = idx >= 0 ? calloc(1, sizeof(*c)) : NULL;
		char *in = c ? malloc(CONTROL_MAX_LINE + 1) : NULL;
		if (!c || !in) {
			static const char busy[] = "{\"id\":null,\"ok\":false,\"error\":\"too many control clients\"}\n";
			ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)w;
			close(fd);
			free(c);
			free(in);
			continue;
		}
		c->fd = fd;
		c->in = in;
		c->watching = EPOLLIN | EPOLLRDHUP;
		ctl->clients[idx] = c;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = EP_CLIENT0 + (uint64_t)idx };
		if (epoll_ctl(ctl->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
			client_free(ctl, idx);
	}
}

int ctl_subscribe(struct control *ctl, struct ctl_client *c, struct json_object *req, struct json_object **result)
{
	uint64_t mask;
	int r = ctl_parse_event_filter(req, &mask);
	if (r < 0)
		return r;
	c->sub_mask = mask;
	pthread_mutex_lock(&ctl->ring_lock);
	c->seen_lost = ctl->ring_lost;
	c->seen_lost_hf = ctl->ring_lost_hf;
	pthread_mutex_unlock(&ctl->ring_lock);
	update_want_mask(ctl);
	struct json_object *names = json_object_new_array();
	for (int t = 0; t < BUS_EV__COUNT; t++)
		if (mask & BUS_MASK(t))
			json_object_array_add(names, json_object_new_string(bus_event_name(t)));
	*result = json_object_new_object();
	json_object_object_add(*result, "events", names);
	json_object_object_add(*result, "rate_limit", json_object_new_int(CONTROL_EXIT_EVENTS_PER_SEC));
	return 0;
}

static void notice(struct ctl_client *c, const char *what, uint64_t count)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "event", json_object_new_string(what));
	json_object_object_add(o, "count", json_object_new_int64((int64_t)count));
	client_send_json(c, o);
}

/* High-frequency events: at most CONTROL_EXIT_EVENTS_PER_SEC per client per
 * second; the excess is counted and reported as "events.dropped". */
static bool rate_ok(struct ctl_client *c, uint64_t now)
{
	if (now - c->rate_window_ns >= 1000000000ULL) {
		if (c->rate_dropped)
			notice(c, "events.dropped", c->rate_dropped);
		c->rate_window_ns = now;
		c->rate_count = 0;
		c->rate_dropped = 0;
	}
	if (c->rate_count >= CONTROL_EXIT_EVENTS_PER_SEC) {
		c->rate_dropped++;
		return false;
	}
	c->rate_count++;
	return true;
}

/* Returns true when events are still queued. */
static bool deliver_events(struct control *ctl)
{
	uint64_t hf = ctl->hf_mask;
	uint64_t now = ctl_now_ns(CLOCK_MONOTONIC);
	/* At most one ring's worth per call, so that a flood of events cannot keep
	 * the thread from serving requests (the rest waits for the next round). */
	for (int round = 0; round < CTL_RING / 64; round++) {
		struct ctl_event batch[64];
		unsigned n = 0;
		uint64_t lost, lost_hf;
		pthread_mutex_lock(&ctl->ring_lock);
		while (n < 64 && ctl->ring_tail != ctl->ring_head)
			batch[n++] = ctl->ring[ctl->ring_tail++ % CTL_RING];
		lost = ctl->ring_lost;
		lost_hf = ctl->ring_lost_hf;
		pthread_mutex_unlock(&ctl->ring_lock);
		for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
			struct ctl_client *c = ctl->clients[i];
			if (!c || !c->sub_mask || c->dead)
				continue;
			uint64_t missed = lost - c->seen_lost;
			if (c->sub_mask & hf)
				missed += lost_hf - c->seen_lost_hf;
			if (missed)
				notice(c, "events.lost", missed);
			c->seen_lost = lost;
			c->seen_lost_hf = lost_hf;
			for (unsigned k = 0; k < n && !c->dead; k++) {
				uint64_t bit = BUS_MASK(batch[k].ev.type);
				if (!(c->sub_mask & bit) || ((bit & hf) && !rate_ok(c, now)))
					continue;
				size_t len;
				char *s = ctl_format_event(&batch[k], &len);
				if (s)
					client_send(c, s, len);
				free(s);
			}
		}
		if (n < 64)
			break;
	}
	pthread_mutex_lock(&ctl->ring_lock);
	bool more = ctl->ring_tail != ctl->ring_head;
	pthread_mutex_unlock(&ctl->ring_lock);
	/* Report rate-limit drops even when no more events arrive. */
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct ctl_client *c = ctl->clients[i];
		if (c && c->rate_dropped && now - c->rate_window_ns >= 1000000000ULL)
			rate_ok(c, now);
	}
	return more;
}

static void reap_clients(struct control *ctl)
{
	uint64_t now = ctl_now_ns(CLOCK_MONOTONIC);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct ctl_client *c = ctl->clients[i];
		if (!c)
			continue;
		if (c->closing && !c->closing_since)
			c->closing_since = now;
		/* A closing client gets CLOSE_LINGER_MS to read its last output. */
		if (c->dead || (c->closing && (c->out_off == c->out_len || now - c->closing_since > CLOSE_LINGER_MS * 1000000ULL)))
			client_free(ctl, i);
		else
			client_watch(ctl, i);
	}
}

static void *control_thread(void *arg)
{
	struct control *ctl = arg;
	uint64_t deadline = 0;
	bool more = false;
	for (;;) {
		bool stopping = __atomic_load_n(&ctl->stopping, __ATOMIC_ACQUIRE);
		int timeout = more ? 0 : 1000;
		if (stopping) {
			uint64_t now = ctl_now_ns(CLOCK_MONOTONIC);
			if (!deadline) {
				deadline = now + FLUSH_AT_STOP_MS * 1000000ULL;
				deliver_events(ctl);   /* vm.stopped and friends */
				reap_clients(ctl);
			}
			bool pending = false;
			for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
				if (ctl->clients[i] && ctl->clients[i]->out_len > ctl->clients[i]->out_off)
					pending = true;
			if (!pending || now >= deadline)
				break;
			timeout = (int)((deadline - now) / 1000000ULL) + 1;
		}
		struct epoll_event evs[32];
		int n = epoll_wait(ctl->epoll_fd, evs, 32, timeout);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == EP_LISTEN) {
				if (!stopping)
					accept_clients(ctl);
			} else if (tag == EP_WAKE) {
				uint64_t v;
				ssize_t rd = read(ctl->wake_fd, &v, sizeof(v));
				(void)rd;
			} else if (tag - EP_CLIENT0 < CONTROL_MAX_CLIENTS) {
				struct ctl_client *c = ctl->clients[tag - EP_CLIENT0];
				if (!c)
					continue;
				if (evs[i].events & EPOLLOUT)
					client_flush(c);
				if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !stopping)
					client_read(ctl, c);
				if (evs[i].events & EPOLLERR)
					c->dead = true;
			}
		}
		more = deliver_events(ctl);
		reap_clients(ctl);
	}
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		client_free(ctl, i);
	return NULL;
}

void control_stop(struct control *ctl)
{
	if (!ctl)
		return;
	if (ctl->thread_started) {
		__atomic_store_n(&ctl->stopping, 1, __ATOMIC_RELEASE);
		uint64_t one = 1;
		ssize_t w = write(ctl->wake_fd, &one, sizeof(one));
		(void)w;
		pthread_join(ctl->thread, NULL);
		ctl->thread_started = false;
	}
	if (ctl->listen_fd >= 0) {
		/* Remove the socket only if it is still ours (not a successor's). */
		struct stat st;
		if (lstat(ctl->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == ctl->sock_dev &&
		    st.st_ino == ctl->sock_ino)
			unlink(ctl->path);
		close(ctl->listen_fd);
		ctl->listen_fd = -1;
	}
	if (ctl->epoll_fd >= 0)
		close(ctl->epoll_fd);
	ctl->epoll_fd = -1;
}

void control_destroy(struct control *ctl)
{
	if (!ctl)
		return;
	control_stop(ctl);
	if (ctl->vm && ctl->sub_id > 0)
		bus_unsubscribe(&ctl->vm->bus, ctl->sub_id);
	/* A control stream subscriber may have left the pause held. */
	if (ctl->vm && __atomic_exchange_n(&ctl->pause_held, 0, __ATOMIC_ACQ_REL))
		vm_resume(ctl->vm);
	if (ctl->wake_fd >= 0)
		close(ctl->wake_fd);
	pthread_mutex_destroy(&ctl->cmd_lock);
	pthread_mutex_destroy(&ctl->ring_lock);
	free(ctl);
}
#endif /* HAVE_JSONC */
