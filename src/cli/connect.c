/* Connecting to a running VM's control socket: shared by the control commands
 * (ctl.c) and live introspection (inspect_live.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include "cli/cli.h"

int cli_control_connect(const char *name_or_path, int timeout_s)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int r = control_resolve_path(name_or_path, path, sizeof(path));
	if (r < 0)
		return r;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(errno, "socket: %s", strerror(errno));
	struct timeval tv = { .tv_sec = timeout_s };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT)
			return err_set(ENOENT, "no VM named '%s' (%s does not exist; see 'vmsvc ls')", name_or_path, path);
		if (e == ECONNREFUSED)
			return err_set(ECONNREFUSED, "VM '%s' is not running (stale socket %s)", name_or_path, path);
		return err_set(e, "%s: %s", path, strerror(e));
	}
	return fd;
}
