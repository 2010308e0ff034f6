/* Control API: a command passing a file descriptor with its response
 * (control_reply_fd, used by the "memory" command for `vmsvc inspect NAME`):
 * it arrives over the socket as SCM_RIGHTS with exactly that response, and is
 * closed by the control service in every case (sent, failed command, no
 * socket client). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>

#ifdef HAVE_JSONC
#include <json-c/json.h>

static int last_fd = -1;

/* Attaches a fresh fd of /dev/null; fails afterwards if asked to. */
static int cmd_give(void *opaque, struct json_object *req, struct json_object **result)
{
	last_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(last_fd >= 0);
	control_reply_fd(opaque, last_fd);
	return strstr(json_object_to_json_string(req), "fail") ? err_set(EIO, "refused") : 0;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_no_socket(void **state)
{
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	assert_int_equal(control_register_command(ctl, "give", cmd_give, ctl), 0);
	char *resp = NULL;
	const char *req = "{\"cmd\":\"give\"}";
	assert_int_equal(control_handle_line(ctl, req, strlen(req), &resp), 0);
	assert_non_null(strstr(resp, "\"ok\":true"));
	assert_false(fd_open(last_fd)); /* nobody to pass it to: closed */
	free(resp);
	const char *bad = "{\"cmd\":\"give\",\"fail\":1}";
	assert_int_equal(control_handle_line(ctl, bad, strlen(bad), &resp), 0);
	assert_non_null(strstr(resp, "refused"));
	assert_false(fd_open(last_fd));
	free(resp);
	control_destroy(ctl);
}

/* One response line and the fd that came with it (or -1). */
static int recv_reply(int s, char *buf, size_t len, int *fd)
{
	*fd = -1;
	size_t got = 0;
	while (got + 1 < len) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} cm;
		struct iovec iov = { buf + got, len - 1 - got };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
		ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
		if (n <= 0)
			return -1;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
				memcpy(fd, CMSG_DATA(h), sizeof(int));
		got += (size_t)n;
		buf[got] = 0;
		if (memchr(buf, '\n', got))
			return 0;
	}
	return -1;
}

static void test_over_socket(void **state)
{
	char dir[] = "/tmp/vmsvc-ctlfd-wt-vmi.XXXXXX", sock[96];
	assert_non_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/t.sock", dir);
	struct control *ctl;
	assert_int_equal(control_create(NULL, &ctl), 0);
	assert_int_equal(control_register_command(ctl, "give", cmd_give, ctl), 0);
	struct control_config cfg = { .name = "fdtest", .path = sock };
	assert_int_equal(control_start(ctl, &cfg), 0);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);

	char line[4096];
	int fd;
	const char *req = "{\"id\":1,\"cmd\":\"give\"}\n";
	assert_int_equal(send(s, req, strlen(req), 0), (ssize_t)strlen(req));
	assert_int_equal(recv_reply(s, line, sizeof(line), &fd), 0);
	assert_non_null(strstr(line, "\"id\":1,\"ok\":true"));
	assert_true(fd >= 0);
	struct stat a, b;
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(stat("/dev/null", &b), 0);
	assert_true(a.st_rdev == b.st_rdev && S_ISCHR(a.st_mode));
	close(fd);

	/* A failed command sends no fd, and the server closed its copy. */
	const char *bad = "{\"id\":2,\"cmd\":\"give\",\"fail\":1}\n";
	assert_int_equal(send(s, bad, strlen(bad), 0), (ssize_t)strlen(bad));
	assert_int_equal(recv_reply(s, line, sizeof(line), &fd), 0);
	assert_non_null(strstr(line, "refused"));
	assert_int_equal(fd, -1);
	/* Ordinary commands carry none either. */
	const char *hello = "{\"id\":3,\"cmd\":\"hello\"}\n";
	assert_int_equal(send(s, hello, strlen(hello), 0), (ssize_t)strlen(hello));
	assert_int_equal(recv_reply(s, line, sizeof(line), &fd), 0);
	assert_non_null(strstr(line, "\"id\":3,\"ok\":true"));
	assert_int_equal(fd, -1);
	close(s);
	control_stop(ctl);
	control_destroy(ctl);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_socket),
		cmocka_unit_test(test_over_socket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void)
{
	return 0;
}
#endif
