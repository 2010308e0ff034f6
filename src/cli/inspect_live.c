/* `vmsvc inspect NAME`: guest memory of a running VM through its control
 * socket (the "memory" command, src/services/control_mem.c, docs/api.md).
 *
 * The VM passes a read-only fd of its RAM with SCM_RIGHTS; it is mapped here
 * and the introspection code runs in this process, never in the VMM. The
 * response is checked like any input: regions must lie inside the fd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>
#include "cli/cli.h"
#include "cli/inspect.h"

#ifndef HAVE_JSONC
int live_open(struct live_vm *lv, const char *name)
{
	return err_set(ENOTSUP, "inspecting a running VM needs the control socket (vmsvc built without json-c)");
}
int live_call(struct live_vm *lv, const char *cmd, char *state, size_t state_len) { return -ENOTSUP; }
int live_attach(struct live_vm *lv, struct vmi_mem *m) { return -ENOTSUP; }
void live_close(struct live_vm *lv) {}
#else
#include <json-c/json.h>

#define LIVE_TIMEOUT_S 30
#define LIVE_MAX_REPLY (1u << 20)

int live_open(struct live_vm *lv, const char *name)
{
	memset(lv, 0, sizeof(*lv));
	lv->fd = -1;
	snprintf(lv->name, sizeof(lv->name), "%s", name);
	lv->fd = cli_control_connect(name, LIVE_TIMEOUT_S);
	if (lv->fd < 0) {
		int r = lv->fd;
		lv->fd = -1;
		return r;
	}
	return 0;
}

void live_close(struct live_vm *lv)
{
	if (lv->fd >= 0)
		close(lv->fd);
	lv->fd = -1;
}

/* One response line; *fd gets a descriptor passed with it (or -1). Bytes
 * after the newline are not expected (one request at a time) and dropped. */
static int recv_line(struct live_vm *lv, char **line, int *fd)
{
	*fd = -1;
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	if (!buf)
		return err_set(ENOMEM, "out of memory");
	for (;;) {
		if (len + 1 >= cap) {
			if (cap >= LIVE_MAX_REPLY) {
				free(buf);
				return err_set(EMSGSIZE, "%s: reply too long", lv->name);
			}
			char *p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				return err_set(ENOMEM, "out of memory");
			}
			buf = p;
			cap *= 2;
		}
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(4 * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = buf + len, .iov_len = cap - 1 - len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
		ssize_t n = recvmsg(lv->fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; h; h = CMSG_NXTHDR(&msg, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < nfd; i++) {
				int f;
				memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
				if (*fd < 0)
					*fd = f;
				else
					close(f);   /* only one is expected */
			}
		}
		if (n <= 0) {
			int e = n < 0 ? errno : ECONNRESET;
			free(buf);
			if (*fd >= 0)
				close(*fd);
			*fd = -1;
			return err_set(e, "%s: %s", lv->name,
				       n == 0 ? "the VM closed the connection"
				       : e == EAGAIN ? "no reply from the VM (timed out)" : strerror(e));
		}
		char *nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*nl = 0;
			*line = buf;
			return 0;
		}
	}
}

/* Send {"id":1,"cmd":cmd} and return the result object; events are skipped. */
static int call(struct live_vm *lv, const char *cmd, struct json_object **result, int *fd)
{
	char req[128];
	int len = snprintf(req, sizeof(req), "{\"id\":1,\"cmd\":\"%s\"}\n", cmd);
	if (send(lv->fd, req, (size_t)len, MSG_NOSIGNAL) != len)
		return err_set(EIO, "%s: cannot send the request: %s", lv->name, strerror(errno));
	for (;;) {
		char *line = NULL;
		int r = recv_line(lv, &line, fd);
		if (r < 0)
			return r;
		struct json_object *resp = json_tokener_parse(line);
		free(line);
		struct json_object *ok, *v;
		if (!resp || !json_object_is_type(resp, json_type_object)) {
			json_object_put(resp);
			if (*fd >= 0)
				close(*fd);
			return err_set(EPROTO, "%s: invalid reply from the VM", lv->name);
		}
		if (!json_object_object_get_ex(resp, "ok", &ok)) {   /* an event line */
			json_object_put(resp);
			if (*fd >= 0)
				close(*fd);
			continue;
		}
		if (!json_object_get_boolean(ok)) {
			const char *e = json_object_object_get_ex(resp, "error", &v) ? json_object_get_string(v) : "failed";
			r = err_set(EIO, "%s: %s: %s", lv->name, cmd, e ? e : "failed");
			json_object_put(resp);
			if (*fd >= 0)
				close(*fd);
			*fd = -1;
			return r;
		}
		*result = json_object_object_get_ex(resp, "result", &v) && v ? json_object_get(v) : json_object_new_object();
		json_object_put(resp);
		return 0;
	}
}

int live_call(struct live_vm *lv, const char *cmd, char *state, size_t state_len)
{
	struct json_object *res;
	int fd;
	int r = call(lv, cmd, &res, &fd);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return r;
	struct json_object *v;
	if (state)
		snprintf(state, state_len, "%s",
			 json_object_object_get_ex(res, "state", &v) && v ? json_object_get_string(v) : "");
	json_object_put(res);
	return 0;
}

/* A number member that must be present (json-c parses big ones as uint64). */
static int get_u64(struct json_object *o, const char *key, uint64_t *v)
{
	struct json_object *x;
	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int))
		return -1;
	*v = json_object_get_uint64(x);
	return 0;
}

int live_attach(struct live_vm *lv, struct vmi_mem *m)
{
	memset(m, 0, sizeof(*m));
	struct json_object *res;
	int fd;
	int r = call(lv, "memory", &res, &fd);
	if (r < 0)
		return r;
	struct guest_mem g;
	memset(&g, 0, sizeof(g));
	struct vmi_mem hints;
	memset(&hints, 0, sizeof(hints));
	struct json_object *regions, *cpus;
	struct stat st;
	void *map = MAP_FAILED;
	uint64_t map_len = 0;
	if (fd < 0) {
		r = err_set(EPROTO, "%s: the VM sent no memory descriptor (is the connection shared?)", lv->name);
		goto out;
	}
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		r = err_set(EPROTO, "%s: unusable memory descriptor", lv->name);
		goto out;
	}
	map_len = (uint64_t)st.st_size;
	if (get_u64(res, "ram_size", &g.ram_size) < 0 || !json_object_object_get_ex(res, "regions", &regions) ||
	    !json_object_is_type(regions, json_type_array) || json_object_array_length(regions) < 1 ||
	    json_object_array_length(regions) > MEM_MAX_REGIONS) {
		r = err_set(EPROTO, "%s: memory: malformed reply (ram_size, regions)", lv->name);
		goto out;
	}
	g.nregions = (unsigned)json_object_array_length(regions);
	for (unsigned i = 0; i < g.nregions; i++) {
		struct json_object *o = json_object_array_get_idx(regions, i);
		struct mem_region *rg = &g.region[i];
		if (!o || get_u64(o, "gpa", &rg->gpa) < 0 || get_u64(o, "size", &rg->size) < 0 ||
		    get_u64(o, "offset", &rg->fd_offset) < 0 || rg->fd_offset > map_len ||
		    rg->size > map_len - rg->fd_offset || rg->gpa + rg->size < rg->gpa) {
			r = err_set(EPROTO, "%s: memory: region %u malformed or outside the %llu-byte memory fd", lv->name,
				    i, (unsigned long long)map_len);
			goto out;
		}
	}
	map = mmap(NULL, map_len, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (map == MAP_FAILED) {
		r = err_set(errno, "%s: mapping guest memory: %s", lv->name, strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < g.nregions; i++)
		g.region[i].hva = (uint8_t *)map + g.region[i].fd_offset;
	if (json_object_object_get_ex(res, "vcpus", &cpus) && json_object_is_type(cpus, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(cpus) && hints.ncpus < VMI_MAX_CPUS; i++) {
			struct json_object *c = json_object_array_get_idx(cpus, i);
			struct pw_regs pr;
			uint64_t rip;
			if (!c || get_u64(c, "cr0", &pr.cr0) < 0 || get_u64(c, "cr3", &pr.cr3) < 0 ||
			    get_u64(c, "cr4", &pr.cr4) < 0 || get_u64(c, "efer", &pr.efer) < 0 || get_u64(c, "rip", &rip) < 0)
				continue;
			hints.cpu[hints.ncpus] = pr;
			hints.cpu_rip[hints.ncpus++] = rip;
			if (i == 0) {
				hints.have_msrs = get_u64(c, "lstar", &hints.msrs.lstar) == 0;
				hints.msrs.have_cstar = get_u64(c, "cstar", &hints.msrs.cstar) == 0;
				hints.msrs.have_sysenter = get_u64(c, "sysenter_eip", &hints.msrs.sysenter_eip) == 0;
			}
		}
	}
	struct json_object *cp;
	lv->copied = json_object_object_get_ex(res, "copied", &cp) && json_object_get_boolean(cp);
	r = vmi_mem_from_guest(m, &g);
	if (r < 0) {
		err_prefix(r, "%s: ", lv->name);
		goto out;
	}
	vmi_mem_adopt(m, &hints, map, map_len);
	map = MAP_FAILED;
out:
	if (r < 0)
		memset(m, 0, sizeof(*m));
	if (map != MAP_FAILED)
		munmap(map, map_len);
	if (fd >= 0)
		close(fd);
	json_object_put(res);
	return r;
}
#endif
