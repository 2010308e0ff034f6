/* Control API without a guest: request parsing and dispatch with mock
 * handlers, hostile input, the socket server (oversized lines, slow readers,
 * duplicate names, stale sockets, permissions) and the event stream fed from a
 * bus with no vCPUs behind it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include "services/control_internal.h"

/* ---- helpers ---- */

static struct json_object *call(struct control *ctl, const char *line)
{
	char *resp = NULL;
	assert_int_equal(control_handle_line(ctl, line, strlen(line), &resp), 0);
	assert_non_null(resp);
	assert_null(strchr(resp, '\n'));
	struct json_object *o = json_tokener_parse(resp);
	assert_non_null(o);
	free(resp);
	return o;
}

static bool ok_of(struct json_object *o)
{
	struct json_object *v;
	assert_true(json_object_object_get_ex(o, "ok", &v));
	return json_object_get_boolean(v);
}

static const char *error_of(struct json_object *o)
{
	struct json_object *v;
	assert_true(json_object_object_get_ex(o, "error", &v));
	return json_object_get_string(v);
}

static void expect_error(struct control *ctl, const char *line, const char *substr)
{
	struct json_object *o = call(ctl, line);
	assert_false(ok_of(o));
	const char *e = error_of(o);
	if (!strstr(e, substr))
		fail_msg("error '%s' does not mention '%s'", e, substr);
	assert_null(strchr(e, '\n'));
	json_object_put(o);
}

static int mock_calls;
static int mock_echo(void *opaque, struct json_object *req, struct json_object **result)
{
	mock_calls++;
	struct json_object *x;
	*result = json_object_new_object();
	json_object_object_add(*result, "tag", json_object_new_string(opaque));
	if (json_object_object_get_ex(req, "x", &x))
		json_object_object_add(*result, "x", json_object_get(x));
	return 0;
}
static int mock_fail(void *opaque, struct json_object *req, struct json_object **result)
{
	*result = json_object_new_object();   /* must be freed by the dispatcher */
	return err_set(EIO, "disk on fire\nsecond line");
}
static int mock_fail_silent(void *opaque, struct json_object *req, struct json_object **result)
{
	err_clear();
	return -EPERM;
}

/* ---- dispatch ---- */

static void test_hello_and_registration(void **state)
{
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	assert_int_equal(control_register_command(ctl, "echo", mock_echo, "A"), 0);
	struct json_object *o = call(ctl, "{\"id\":1,\"cmd\":\"hello\"}");
	assert_true(ok_of(o));
	struct json_object *res, *v;
	assert_true(json_object_object_get_ex(o, "result", &res));
	assert_true(json_object_object_get_ex(res, "protocol", &v));
	assert_int_equal(json_object_get_int(v), CONTROL_PROTOCOL_VERSION);
	assert_true(json_object_object_get_ex(res, "commands", &v));
	const char *cmds = json_object_to_json_string(v);
	assert_non_null(strstr(cmds, "\"echo\""));
	assert_non_null(strstr(cmds, "\"subscribe\""));
	assert_non_null(strstr(cmds, "\"snapshot\""));
	assert_true(json_object_object_get_ex(o, "id", &v));
	assert_int_equal(json_object_get_int(v), 1);
	json_object_put(o);

	/* Arguments reach the handler; ids of any type come back unchanged. */
	o = call(ctl, "{\"id\":\"abc\",\"cmd\":\"echo\",\"x\":[1,2]}");
	assert_true(ok_of(o));
	assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			    "{\"id\":\"abc\",\"ok\":true,\"result\":{\"tag\":\"A\",\"x\":[1,2]}}");
	json_object_put(o);
	/* Replacing a command; no id -> "id":null. */
	assert_int_equal(control_register_command(ctl, "echo", mock_echo, "B"), 0);
	o = call(ctl, "{\"cmd\":\"echo\"}");
	assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			    "{\"id\":null,\"ok\":true,\"result\":{\"tag\":\"B\"}}");
	json_object_put(o);
	control_unregister_command(ctl, "echo");
	expect_error(ctl, "{\"cmd\":\"echo\"}", "unknown command");

	/* Placeholders until the snapshot service registers its own. */
	expect_error(ctl, "{\"cmd\":\"snapshot\"}", "not implemented yet");
	expect_error(ctl, "{\"cmd\":\"suspend\"}", "not implemented yet");
	assert_int_equal(control_register_command(ctl, "snapshot", mock_echo, "S"), 0);
	o = call(ctl, "{\"cmd\":\"snapshot\"}");
	assert_true(ok_of(o));
	json_object_put(o);

	/* Bad registrations. */
	assert_int_equal(control_register_command(ctl, "", mock_echo, NULL), -EINVAL);
	assert_int_equal(control_register_command(ctl, "a-name-that-is-much-too-long-for-the-table", mock_echo, NULL),
			 -EINVAL);
	assert_int_equal(control_register_command(ctl, "x", NULL, NULL), -EINVAL);
	int added = 0, r = 0;
	for (int i = 0; i < 100 && r == 0; i++) {
		char name[16];
		snprintf(name, sizeof(name), "c%d", i);
		r = control_register_command(ctl, name, mock_echo, NULL);
		if (!r)
			added++;
	}
	assert_int_equal(r, -ENOSPC);
	assert_true(added > 0 && added < CTL_MAX_CMDS);
	control_destroy(ctl);
}

static void test_handler_errors(void **state)
{
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	control_register_command(ctl, "fail", mock_fail, NULL);
	control_register_command(ctl, "quiet", mock_fail_silent, NULL);
	struct json_object *o = call(ctl, "{\"id\":5,\"cmd\":\"fail\"}");
	assert_false(ok_of(o));
	assert_string_equal(error_of(o), "disk on fire second line");
	struct json_object *v;
	assert_true(json_object_object_get_ex(o, "id", &v));
	assert_int_equal(json_object_get_int(v), 5);
	assert_false(json_object_object_get_ex(o, "result", &v));
	json_object_put(o);
	expect_error(ctl, "{\"cmd\":\"quiet\"}", "quiet failed");
	/* Subscribe needs a connection. */
	expect_error(ctl, "{\"cmd\":\"subscribe\"}", "socket connection");
	/* Commands that need a VM are absent without one. */
	expect_error(ctl, "{\"cmd\":\"pause\"}", "unknown command");
	control_destroy(ctl);
}

static void test_hostile_requests(void **state)
{
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	mock_calls = 0;
	control_register_command(ctl, "echo", mock_echo, "A");
	expect_error(ctl, "", "invalid JSON");
	expect_error(ctl, "{", "invalid JSON");
	expect_error(ctl, "{\"cmd\":\"echo\"", "invalid JSON");
	expect_error(ctl, "nonsense", "invalid JSON");
	expect_error(ctl, "[1,2,3]", "must be a JSON object");
	expect_error(ctl, "42", "must be a JSON object");
	expect_error(ctl, "\"echo\"", "must be a JSON object");
	expect_error(ctl, "{}", "missing \"cmd\"");
	expect_error(ctl, "{\"cmd\":7}", "missing \"cmd\"");
	expect_error(ctl, "{\"cmd\":null}", "missing \"cmd\"");
	expect_error(ctl, "{\"cmd\":\"echo\"} {\"cmd\":\"echo\"}", "trailing data");
	expect_error(ctl, "{\"cmd\":\"echo\"}xyz", "trailing data");
	expect_error(ctl, "{\"cmd\":\"nope\\nline\"}", "unknown command");
	/* A NUL byte would make json-c accept a prefix. */
	char *resp = NULL;
	static const char nul[] = "{\"cmd\":\"echo\"}\0garbage";
	assert_int_equal(control_handle_line(ctl, nul, sizeof(nul) - 1, &resp), 0);
	assert_non_null(strstr(resp, "NUL byte"));
	free(resp);
	/* Deep nesting is refused by the depth limit, not by the stack. */
	size_t depth = 5000;
	char *deep = malloc(depth * 2 + 32);
	size_t n = (size_t)sprintf(deep, "{\"cmd\":\"echo\",\"x\":");
	for (size_t i = 0; i < depth; i++)
		deep[n++] = '[';
	for (size_t i = 0; i < depth; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = 0;
	expect_error(ctl, deep, "invalid JSON");
	free(deep);
	/* Over-long lines are refused before parsing. */
	size_t big = CONTROL_MAX_LINE + 10;
	char *huge = malloc(big + 1);
	memset(huge, ' ', big);
	memcpy(huge, "{\"cmd\":\"echo\"}", 14);
	huge[big] = 0;
	expect_error(ctl, huge, "too long");
	free(huge);
	/* Long unknown command names are echoed truncated. */
	char longcmd[3000];
	n = (size_t)sprintf(longcmd, "{\"cmd\":\"");
	memset(longcmd + n, 'z', 2000);
	sprintf(longcmd + n + 2000, "\"}");
	struct json_object *o = call(ctl, longcmd);
	assert_true(strlen(error_of(o)) < 200);
	json_object_put(o);
	/* Non-UTF-8 and escapes do not crash. */
	expect_error(ctl, "{\"cmd\":\"\xff\xfe\"}", "");
	expect_error(ctl, "{\"cmd\":\"\\u0000echo\"}", "unknown command");
	assert_int_equal(mock_calls, 0);
	control_destroy(ctl);
}

/* ---- events: filters and formatting ---- */

static void test_event_filter(void **state)
{
	uint64_t m, hf = ctl_high_frequency_mask();
	assert_true(hf & BUS_MASK(BUS_EV_EXIT_IO));
	assert_true(hf & BUS_MASK(BUS_EV_EMUL_ASSIST));
	assert_false(hf & BUS_MASK(BUS_EV_VM_PAUSED));
	struct json_object *req = json_tokener_parse("{\"cmd\":\"subscribe\"}");
	assert_int_equal(ctl_parse_event_filter(req, &m), 0);
	assert_true(m & BUS_MASK(BUS_EV_VM_PAUSED));
	assert_true(m & BUS_MASK(BUS_EV_GUEST_END));
	assert_false(m & hf);   /* exits only when asked for */
	json_object_put(req);
	req = json_tokener_parse("{\"events\":[\"*\"]}");
	assert_int_equal(ctl_parse_event_filter(req, &m), 0);
	assert_false(m & hf);
	json_object_put(req);
	req = json_tokener_parse("{\"events\":[\"exit.*\",\"vm.paused\"]}");
	assert_int_equal(ctl_parse_event_filter(req, &m), 0);
	assert_int_equal(m, BUS_MASK_ALL_EXITS | BUS_MASK(BUS_EV_VM_PAUSED));
	json_object_put(req);
	req = json_tokener_parse("{\"events\":[\"vm.*\"]}");
	assert_int_equal(ctl_parse_event_filter(req, &m), 0);
	uint64_t vm4 = BUS_MASK(BUS_EV_VM_STARTED) | BUS_MASK(BUS_EV_VM_STOPPED) | BUS_MASK(BUS_EV_VM_PAUSED) |
		       BUS_MASK(BUS_EV_VM_RESUMED);
	assert_int_equal(m & vm4, vm4);   /* later vm.* lifecycle events may join */
	assert_false(m & (hf | BUS_MASK(BUS_EV_GUEST_END)));
	json_object_put(req);
	static const char *bad[] = { "{\"events\":[\"vm.bogus\"]}", "{\"events\":\"vm.paused\"}", "{\"events\":[1]}",
				     "{\"events\":[\"nothing.*\"]}", "{\"events\":[\".*\"]}" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		req = json_tokener_parse(bad[i]);
		assert_non_null(req);
		assert_int_equal(ctl_parse_event_filter(req, &m), -EINVAL);
		json_object_put(req);
	}
}

static void test_event_format(void **state)
{
	for (int t = 0; t < BUS_EV__COUNT; t++) {
		struct ctl_event e = { .ev = { .type = t, .vcpu = t % 2 ? 1 : -1 }, .time_ns = 1500000000ULL };
		if (t == BUS_EV_EMUL_ASSIST)
			strcpy(e.mnemonic, "movs");
		if (t == BUS_EV_EXIT_IO)
			e.ev.u.io = (typeof(e.ev.u.io)){ .port = 0x3f8, .size = 1, .write = true, .count = 1 };
		size_t len = 0;
		char *s = ctl_format_event(&e, &len);
		assert_non_null(s);
		assert_int_equal(len, strlen(s));
		assert_int_equal(s[len - 1], '\n');
		assert_null(memchr(s, '\n', len - 1));
		struct json_object *o = json_tokener_parse(s), *v;
		assert_non_null(o);
		assert_true(json_object_object_get_ex(o, "event", &v));
		assert_string_equal(json_object_get_string(v), bus_event_name(t));
		if (t == BUS_EV_EXIT_IO) {
			assert_true(json_object_object_get_ex(o, "port", &v));
			assert_int_equal(json_object_get_int(v), 0x3f8);
		}
		json_object_put(o);
		free(s);
	}
}

/* ---- the socket server ---- */

static char tmpdir[64];
static char sock[100];

static int setup_dir(void **state)
{
	strcpy(tmpdir, "/tmp/vmsvc-ctl-test.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(sock, sizeof(sock), "%s/t.sock", tmpdir);
	return 0;
}
static int teardown_dir(void **state)
{
	unlink(sock);
	char p[160];
	snprintf(p, sizeof(p), "%s/vmsvc", tmpdir);
	rmdir(p);
	rmdir(tmpdir);
	return 0;
}

static int connect_to(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
		assert_true(n > 0);
		s += n;
		len -= (size_t)n;
	}
}

#define send_str(fd, s) send_all(fd, s, strlen(s))

/* Reads one line (up to 64 KiB); returns its length, -1 at EOF. */
static ssize_t read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;
	while (n + 1 < size) {
		ssize_t r = recv(fd, buf + n, 1, 0);
		if (r <= 0)
			return n ? (ssize_t)n : -1;
		if (buf[n] == '\n') {
			buf[n] = 0;
			return (ssize_t)n;
		}
		n++;
	}
	buf[n] = 0;
	return (ssize_t)n;
}

static void test_socket_basics(void **state)
{
	struct control *ctl, *other;
	assert_int_equal(control_create(NULL, &ctl), 0);
	control_register_command(ctl, "echo", mock_echo, "A");
	struct control_config cfg = { .name = "t1", .path = sock };
	assert_int_equal(control_start(ctl, &cfg), 0);
	assert_string_equal(control_socket_path(ctl), sock);
	assert_string_equal(control_name(ctl), "t1");
	struct stat st;
	assert_int_equal(stat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	/* A live owner keeps its name. */
	assert_int_equal(control_create(NULL, &other), 0);
	assert_int_equal(control_start(other, &cfg), -EADDRINUSE);
	assert_non_null(strstr(err_msg(), "already running"));

	/* Several requests in one write, answered in order; a half-close still gets
	 * the answer to a last unterminated line. */
	int fd = connect_to(sock);
	const char *reqs = "{\"id\":1,\"cmd\":\"echo\"}\n\n{\"id\":2,\"cmd\":\"bogus\"}\r\nnot json\n{\"id\":3,\"cmd\":\"echo\"}";
	send_all(fd, reqs, strlen(reqs));
	shutdown(fd, SHUT_WR);
	char line[65536 + 256];
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"id\":1,\"ok\":true"));
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"id\":2,\"ok\":false"));
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "invalid JSON"));
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"id\":3,\"ok\":true"));
	assert_int_equal(read_line(fd, line, sizeof(line)), -1);
	close(fd);

	control_stop(ctl);
	assert_int_equal(stat(sock, &st), -1);   /* removed at stop */
	control_destroy(ctl);

	/* Now the name is free (the socket is gone); a stale socket is replaced. */
	int stale = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	assert_int_equal(bind(stale, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(stale);   /* bound, never listened: connect is refused -> stale */
	assert_int_equal(control_start(other, &cfg), 0);
	fd = connect_to(sock);
	send_str(fd, "{\"cmd\":\"hello\"}\n");
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"protocol\":1"));
	close(fd);
	control_destroy(other);
	assert_int_equal(stat(sock, &st), -1);

	/* Not a socket: refused, left alone. */
	FILE *f = fopen(sock, "w");
	fclose(f);
	assert_int_equal(control_create(NULL, &other), 0);
	assert_int_equal(control_start(other, &cfg), -EEXIST);
	control_destroy(other);
	assert_int_equal(stat(sock, &st), 0);
	unlink(sock);

	/* Bad names. */
	assert_int_equal(control_create(NULL, &other), 0);
	struct control_config badcfg = { .name = "../evil" };
	assert_int_equal(control_start(other, &badcfg), -EINVAL);
	badcfg.name = ".hidden";
	assert_int_equal(control_start(other, &badcfg), -EINVAL);
	control_destroy(other);
}

static void test_default_dir(void **state)
{
	char old[256] = "";
	const char *o = getenv("XDG_RUNTIME_DIR");
	if (o)
		snprintf(old, sizeof(old), "%s", o);
	setenv("XDG_RUNTIME_DIR", tmpdir, 1);
	char path[108];
	assert_int_equal(control_resolve_path("web", path, sizeof(path)), 0);
	char want[160];
	snprintf(want, sizeof(want), "%s/vmsvc/web.sock", tmpdir);
	assert_string_equal(path, want);
	assert_int_equal(control_resolve_path("/x/y.sock", path, sizeof(path)), 0);
	assert_string_equal(path, "/x/y.sock");
	assert_int_equal(control_resolve_path("a b", path, sizeof(path)), -EINVAL);

	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	struct control_config cfg = { .name = "web" };
	assert_int_equal(control_start(ctl, &cfg), 0);
	assert_string_equal(control_socket_path(ctl), want);
	struct stat st;
	snprintf(want, sizeof(want), "%s/vmsvc", tmpdir);
	assert_int_equal(stat(want, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	control_destroy(ctl);
	/* Auto name vm-PID. */
	assert_int_equal(control_create(NULL, &ctl), 0);
	assert_int_equal(control_start(ctl, NULL), 0);
	char name[32];
	snprintf(name, sizeof(name), "vm-%d", (int)getpid());
	assert_string_equal(control_name(ctl), name);
	control_destroy(ctl);
	if (o)
		setenv("XDG_RUNTIME_DIR", old, 1);
	else
		unsetenv("XDG_RUNTIME_DIR");
}

static void test_socket_hostile(void **state)
{
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	control_register_command(ctl, "echo", mock_echo, "A");
	struct control_config cfg = { .name = "t2", .path = sock };
	assert_int_equal(control_start(ctl, &cfg), 0);
	char line[1024];

	/* Oversized line: an error, then the connection is closed. */
	int fd = connect_to(sock);
	size_t big = CONTROL_MAX_LINE + 4096;
	char *junk = malloc(big);
	memset(junk, 'a', big);
	ssize_t sent = send(fd, junk, big, MSG_NOSIGNAL);
	assert_true(sent > CONTROL_MAX_LINE);
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "longer than"));
	assert_int_equal(read_line(fd, line, sizeof(line)), -1);
	close(fd);
	free(junk);

	/* Slow reader: requests flood in, responses are never read. The client is
	 * dropped when its output passes CONTROL_MAX_OUT; others are still served. */
	int slow = connect_to(sock);
	int rcv = 4096;
	setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	setsockopt(slow, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char req[600];
	int n = snprintf(req, sizeof(req), "{\"cmd\":\"echo\",\"x\":\"%0500d\"}\n", 0);
	bool dropped = false;
	for (int i = 0; i < 20000 && !dropped; i++) {
		ssize_t w = send(slow, req, (size_t)n, MSG_NOSIGNAL);
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
			dropped = true;
		else if (w < 0 && errno == EAGAIN)
			usleep(1000);
	}
	assert_true(dropped);
	close(slow);
	fd = connect_to(sock);
	send_str(fd, "{\"id\":9,\"cmd\":\"echo\"}\n");
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"id\":9,\"ok\":true"));

	/* Too many clients: the extra ones get an error line and are closed. */
	int fds[CONTROL_MAX_CLIENTS + 4];
	for (int i = 0; i < CONTROL_MAX_CLIENTS + 4; i++)
		fds[i] = connect_to(sock);
	bool refused = false;
	for (int i = CONTROL_MAX_CLIENTS - 1; i < CONTROL_MAX_CLIENTS + 4; i++) {
		struct pollfd p = { .fd = fds[i], .events = POLLIN };
		if (poll(&p, 1, 1000) == 1 && read_line(fds[i], line, sizeof(line)) > 0 && strstr(line, "too many"))
			refused = true;
	}
	assert_true(refused);
	for (int i = 0; i < CONTROL_MAX_CLIENTS + 4; i++)
		close(fds[i]);
	/* Still alive. */
	send_str(fd, "{\"id\":10,\"cmd\":\"echo\"}\n");
	assert_true(read_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"id\":10,\"ok\":true"));
	close(fd);
	control_destroy(ctl);
}

/* A VM struct with a bus and nothing else: enough for the event stream and info. */
static struct vm *fake_vm(void)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	bus_init(&vm->bus);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_mutex_init(&vm->end_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	vm->cfg.mem_size = 64 << 20;
	vm->cfg.kernel = "fake.elf";
	return vm;
}

static void test_event_stream(void **state)
{
	struct vm *vm = fake_vm();
	struct control *ctl;
	assert_int_equal(control_create(vm, &ctl), 0);
	struct control_config cfg = { .name = "t3", .path = sock };
	assert_int_equal(control_start(ctl, &cfg), 0);
	char line[4096];

	int lc = connect_to(sock);   /* lifecycle only (default) */
	int ec = connect_to(sock);   /* exit.io only */
	send_str(lc, "{\"id\":1,\"cmd\":\"subscribe\"}\n");
	assert_true(read_line(lc, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"ok\":true"));
	/* Nobody streams exits: the vCPUs' fast path sees no subscriber. */
	assert_false(bus_wants(&vm->bus, BUS_EV_EXIT_IO));
	assert_true(bus_wants(&vm->bus, BUS_EV_VM_PAUSED));
	const char *sub = "{\"id\":1,\"cmd\":\"subscribe\",\"events\":[\"exit.io\"]}\n";
	send_all(ec, sub, strlen(sub));
	assert_true(read_line(ec, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"ok\":true"));
	assert_true(bus_wants(&vm->bus, BUS_EV_EXIT_IO));
	assert_false(bus_wants(&vm->bus, BUS_EV_EXIT_MMIO));

	/* Many exits: the exit subscriber gets at most the rate limit per second,
	 * the lifecycle subscriber none; every exit is counted. */
	struct bus_event io = { .type = BUS_EV_EXIT_IO, .vcpu = 0, .u.io = { .port = 0x80, .size = 1, .write = true } };
	for (int i = 0; i < 3000; i++) {
		bus_publish(&vm->bus, &io);
		if (i % 500 == 0)
			usleep(1000);   /* the ring is bounded: let the control thread drain */
	}
	struct bus_event p = { .type = BUS_EV_VM_PAUSED, .vcpu = -1 };
	bus_publish(&vm->bus, &p);
	assert_true(read_line(lc, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"event\":\"vm.paused\""));
	int got = 0;
	struct pollfd pf = { .fd = ec, .events = POLLIN };
	while (poll(&pf, 1, 300) == 1 && read_line(ec, line, sizeof(line)) > 0)
		if (strstr(line, "\"event\":\"exit.io\""))
			got++;
	assert_true(got > 0 && got <= CONTROL_EXIT_EVENTS_PER_SEC);

	/* Counters through "stats" (exits: the vCPUs' own counters, which a
	 * real vCPU thread increments); state through "info". */
	vm->ncpus = 2;
	vm->cpu[0].exits[BUS_EV_EXIT_IO] = 2000;
	vm->cpu[1].exits[BUS_EV_EXIT_IO] = 1000;
	int q = connect_to(sock);
	send_str(q, "{\"id\":2,\"cmd\":\"stats\"}\n");
	assert_true(read_line(q, line, sizeof(line)) > 0);
	struct json_object *o = json_tokener_parse(line), *res, *ex, *v;
	assert_true(json_object_object_get_ex(o, "result", &res));
	assert_true(json_object_object_get_ex(res, "exits", &ex));
	assert_true(json_object_object_get_ex(ex, "exit.io", &v));
	assert_int_equal(json_object_get_int64(v), 3000);
	json_object_put(o);
	send_str(q, "{\"id\":3,\"cmd\":\"info\"}\n");
	assert_true(read_line(q, line, sizeof(line)) > 0);
	if (!strstr(line, "\"name\":\"t3\""))
		fail_msg("info: %s", line);
	assert_non_null(strstr(line, "\"kernel\":\"fake.elf\""));
	close(q);

	/* A flood faster than the control thread: the ring overflows, the
	 * publisher never waits, the stream says how many were lost. */
	for (int i = 0; i < 50000; i++)
		bus_publish(&vm->bus, &io);
	bool lost = false;
	while (poll(&pf, 1, 1500) == 1 && read_line(ec, line, sizeof(line)) > 0)
		if (strstr(line, "\"event\":\"events.lost\"") || strstr(line, "\"event\":\"events.dropped\""))
			lost = true;
	assert_true(lost);

	/* A stream that never reads is dropped, the VM side never blocks. */
	struct bus_event r = { .type = BUS_EV_VM_RESUMED, .vcpu = -1 };
	bus_publish(&vm->bus, &r);
	for (;;) {
		ssize_t got_len = read_line(lc, line, sizeof(line));
		if (got_len < 0)
			fail_msg("lifecycle stream ended: %s", strerror(errno));
		if (strstr(line, "vm.resumed"))
			break;
		fail_msg("lifecycle stream got '%s' (exit floods are not its business)", line);
	}
	close(ec);
	/* The last exit streamer gone: exits drop out of the bus mask again. */
	for (int i = 0; i < 200 && bus_wants(&vm->bus, BUS_EV_EXIT_IO); i++)
		usleep(10000);
	assert_false(bus_wants(&vm->bus, BUS_EV_EXIT_IO));
	close(lc);
	control_destroy(ctl);
	assert_int_equal(vm->bus.mask, 0);   /* unsubscribed */
	bus_cleanup(&vm->bus);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_mutex_destroy(&vm->end_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_and_registration),
		cmocka_unit_test(test_handler_errors),
		cmocka_unit_test(test_hostile_requests),
		cmocka_unit_test(test_event_filter),
		cmocka_unit_test(test_event_format),
		cmocka_unit_test(test_socket_basics),
		cmocka_unit_test(test_default_dir),
		cmocka_unit_test(test_socket_hostile),
		cmocka_unit_test(test_event_stream),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
