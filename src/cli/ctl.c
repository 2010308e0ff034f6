/* Control socket clients: `vmsvc ls`, `info`, `pause`, `resume`, `stats`, `stop`,
 * `events`. NAME is a VM name (socket in the default directory) or a socket path.
 * Protocol: docs/api.md. Errors: one line on stderr, exit status 1. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <limits.h>
#include <unistd.h>
#include <vmsvc/control.h>
#include <vmsvc/err.h>
#include "cli/cli.h"

#ifndef HAVE_JSONC
static int no_json(void)
{
	fprintf(stderr, "vmsvc: built without json-c: no control socket client\n");
	return 1;
}
int cmd_ls(int argc, char **argv) { return no_json(); }
int cmd_info(int argc, char **argv) { return no_json(); }
int cmd_pause(int argc, char **argv) { return no_json(); }
int cmd_resume(int argc, char **argv) { return no_json(); }
int cmd_stats(int argc, char **argv) { return no_json(); }
int cmd_stop(int argc, char **argv) { return no_json(); }
int cmd_events(int argc, char **argv) { return no_json(); }
int cmd_regs(int argc, char **argv) { return no_json(); }
int cmd_snapshot(int argc, char **argv) { return no_json(); }
int cmd_suspend(int argc, char **argv) { return no_json(); }
#else
#include <json-c/json.h>

#define REPLY_TIMEOUT_S 30
#define LS_TIMEOUT_S 2
#define MAX_REPLY (16u << 20)

struct conn {
	int fd;
	char buf[65536];
	size_t len, off;
};

/* 0, or -ECONNREFUSED/-ENOENT (stale or missing socket), other -errno; message set. */
static int conn_open(struct conn *c, const char *name_or_path, int timeout_s)
{
	c->len = c->off = 0;
	c->fd = cli_control_connect(name_or_path, timeout_s);
	return c->fd < 0 ? c->fd : 0;
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Next line (malloc'd, without '\n'), or NULL at EOF / error (message set). */
static char *conn_line(struct conn *c)
{
	char *line = NULL;
	size_t llen = 0;
	for (;;) {
		if (c->off < c->len) {
			char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
			size_t take = nl ? (size_t)(nl - (c->buf + c->off)) : c->len - c->off;
			if (llen + take > MAX_REPLY) {
				free(line);
				err_set(EMSGSIZE, "reply too long");
				return NULL;
			}
			char *p = realloc(line, llen + take + 1);
			if (!p) {
				free(line);
				err_set(ENOMEM, "out of memory");
				return NULL;
			}
			line = p;
			memcpy(line + llen, c->buf + c->off, take);
			llen += take;
			line[llen] = 0;
			c->off += take + (nl ? 1 : 0);
			if (nl)
				return line;
		}
		ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(line);
			if (n == 0)
				err_set(ECONNRESET, "the VM closed the connection");
			else
				err_set(errno, "%s", errno == EAGAIN ? "no reply from the VM (timed out)" : strerror(errno));
			return NULL;
		}
		c->off = 0;
		c->len = (size_t)n;
	}
}

/* Called with each {"progress":{...}} line of a long command (suspend); NULL: ignored. */
static void (*conn_progress)(struct json_object *progress);

/* Send {"id":1,"cmd":cmd,...extra} and wait for the response with id 1 (event
 * lines in between are skipped). Returns the result object (caller puts it). */
static int conn_call(struct conn *c, const char *cmd, struct json_object *extra, struct json_object **result)
{
	struct json_object *req = extra ? extra : json_object_new_object();
	json_object_object_add(req, "id", json_object_new_int(1));
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *msg = malloc(len + 1);
	if (!msg) {
		json_object_put(req);
		return err_set(ENOMEM, "out of memory");
	}
	memcpy(msg, s, len);
	msg[len] = '\n';
	json_object_put(req);
	ssize_t w = send(c->fd, msg, len + 1, MSG_NOSIGNAL);
	free(msg);
	if (w != (ssize_t)len + 1)
		return err_set(EIO, "cannot send the request: %s", w < 0 ? strerror(errno) : "short write");
	for (;;) {
		char *line = conn_line(c);
		if (!line)
			return -EIO;
		struct json_object *resp = json_tokener_parse(line);
		free(line);
		struct json_object *id, *ok, *v;
		if (!resp || !json_object_is_type(resp, json_type_object)) {
			json_object_put(resp);
			return err_set(EPROTO, "invalid reply from the VM");
		}
		if (!json_object_object_get_ex(resp, "ok", &ok)) {   /* an event or progress line */
			if (conn_progress && json_object_object_get_ex(resp, "progress", &v) && v)
				conn_progress(v);
			json_object_put(resp);
			continue;
		}
		if (json_object_object_get_ex(resp, "id", &id) && id && json_object_get_int(id) != 1) {
			json_object_put(resp);
			continue;
		}
		if (!json_object_get_boolean(ok)) {
			const char *e = json_object_object_get_ex(resp, "error", &v) ? json_object_get_string(v) : "failed";
			int r = err_set(EIO, "%s", e ? e : "failed");
			json_object_put(resp);
			return r;
		}
		*result = json_object_object_get_ex(resp, "result", &v) && v ? json_object_get(v) : json_object_new_object();
		json_object_put(resp);
		return 0;
	}
}

/* One request to a named VM; prints only a connection error (the caller prints the rest). */
static int call_vm_quiet(const char *name, const char *cmd, struct json_object *extra, struct json_object **result)
{
	struct conn c;
	int r = conn_open(&c, name, REPLY_TIMEOUT_S);
	if (r < 0) {
		json_object_put(extra);
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		return 1;   /* printed: positive tells the caller not to print again */
	}
	r = conn_call(&c, cmd, extra, result);
	conn_close(&c);
	return r;
}

/* One request to a named VM; prints the error itself. */
static int call_vm(const char *name, const char *cmd, struct json_object *extra, struct json_object **result)
{
	struct conn c;
	int r = conn_open(&c, name, REPLY_TIMEOUT_S);
	if (r < 0) {
		json_object_put(extra);
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		return r;
	}
	r = conn_call(&c, cmd, extra, result);
	conn_close(&c);
	if (r < 0)
		fprintf(stderr, "vmsvc: %s: %s\n", name, err_msg());
	return r;
}

static const char *str_of(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : "";
}
static int64_t int_of(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_int64(v) : 0;
}
static double dbl_of(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_double(v) : 0;
}

static void fmt_uptime(double s, char *buf, size_t n)
{
	long t = (long)s;
	if (t < 60)
		snprintf(buf, n, "%.1fs", s);
	else if (t < 3600)
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
	else
		snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
}

static void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* Options shared by the per-VM commands: NAME, --json, --help. */
static int one_vm_args(int argc, char **argv, const char *usage, bool *json, const char **name)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (!json)
				goto bad;
			*json = true;
			break;
		case 'h': printf("usage: vmsvc %s\n", usage); return 1;
		default: goto bad;
		}
	}
	if (optind + 1 != argc)
		goto bad;
	*name = argv[optind];
	return 0;
bad:
	fprintf(stderr, "usage: vmsvc %s\n", usage);
	return -1;
}

static int strcmp_ptr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int cmd_ls(int argc, char **argv)
{
	if (argc > 1) {
		bool help = !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
		fprintf(help ? stdout : stderr,
			"usage: vmsvc ls\nLists the VMs with a control socket in the default directory\n"
			"($XDG_RUNTIME_DIR/vmsvc or /run/vmsvc). Sockets given with --control elsewhere are not listed.\n");
		return help ? 0 : 1;
	}
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (control_default_dir(dir, sizeof(dir)) < 0) {
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		return 1;
	}
	printf("%-20s %8s %-8s %5s %8s %9s\n", "NAME", "PID", "STATE", "VCPUS", "MEM", "UPTIME");
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : (fprintf(stderr, "vmsvc: %s: %s\n", dir, strerror(errno)), 1);
	/* Sorted output: collect names first. */
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".sock"))
			continue;
		char **p = realloc(names, (n + 1) * sizeof(*names));
		if (!p)
			break;
		names = p;
		names[n] = strndup(de->d_name, len - 5);
		if (names[n])
			n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), strcmp_ptr);
	for (size_t i = 0; i < n; i++) {
		struct conn c;
		struct json_object *info = NULL;
		char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
		int r = snprintf(path, sizeof(path), "%s/%s.sock", dir, names[i]) >= (int)sizeof(path) ? -ENAMETOOLONG : 0;
		if (r == 0)
			r = conn_open(&c, path, LS_TIMEOUT_S);
		if (r == 0) {
			r = conn_call(&c, "info", NULL, &info);
			conn_close(&c);
			if (r < 0)
				r = -EIO;
		}
		if (r == 0) {
			char up[32], mem[32];
			fmt_uptime(dbl_of(info, "uptime"), up, sizeof(up));
			snprintf(mem, sizeof(mem), "%lldM", (long long)(int_of(info, "memory") >> 20));
			printf("%-20s %8lld %-8s %5lld %8s %9s\n", names[i], (long long)int_of(info, "pid"),
			       str_of(info, "state"), (long long)int_of(info, "vcpus"), mem, up);
		} else {
			printf("%-20s %8s %-8s %5s %8s %9s\n", names[i], "-",
			       r == -ECONNREFUSED ? "stale" : r == -EIO ? "unresponsive" : "error", "-", "-", "-");
		}
		json_object_put(info);
		free(names[i]);
	}
	free(names);
	return 0;
}

static int simple_cmd(int argc, char **argv, const char *cmd)
{
	char usage[64];
	snprintf(usage, sizeof(usage), "%s NAME", cmd);
	const char *name;
	int r = one_vm_args(argc, argv, usage, NULL, &name);
	if (r)
		return r > 0 ? 0 : 1;
	struct json_object *res = NULL;
	if (call_vm(name, cmd, NULL, &res) < 0)
		return 1;
	printf("%s: %s\n", name, str_of(res, "state"));
	json_object_put(res);
	return 0;
}

int cmd_pause(int argc, char **argv) { return simple_cmd(argc, argv, "pause"); }

/* `vmsvc snapshot NAME DIR [--stop]`: the VM process writes DIR, so the path is
 * made absolute here. */
int cmd_snapshot(int argc, char **argv)
{
	const char *name = NULL, *dir = NULL;
	bool stop = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--stop"))
			stop = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: vmsvc snapshot NAME DIR [--stop]\n"
			       "Write a consistent snapshot of running VM NAME to directory DIR (docs/snapshot-format.md);\n"
			       "the VM continues afterwards unless --stop. Restore with: vmsvc run --restore DIR\n");
			return 0;
		} else if (!name)
			name = argv[i];
		else if (!dir)
			dir = argv[i];
		else {
			fprintf(stderr, "vmsvc: snapshot: unexpected argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (!name || !dir) {
		fprintf(stderr, "usage: vmsvc snapshot NAME DIR [--stop]\n");
		return 2;
	}
	char abs[PATH_MAX];
	if (dir[0] == '/')
		snprintf(abs, sizeof(abs), "%s", dir);
	else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd))) {
			fprintf(stderr, "vmsvc: snapshot: getcwd: %s\n", strerror(errno));
			return 1;
		}
		if (snprintf(abs, sizeof(abs), "%s/%s", cwd, dir) >= (int)sizeof(abs)) {
			fprintf(stderr, "vmsvc: snapshot: path too long\n");
			return 1;
		}
	}
	struct json_object *extra = json_object_new_object();
	json_object_object_add(extra, "dir", json_object_new_string(abs));
	json_object_object_add(extra, "stop", json_object_new_boolean(stop));
	struct json_object *res = NULL;
	int r = call_vm(name, "snapshot", extra, &res);
	if (r < 0)
		return 1;
	printf("%s: snapshot written to %s%s\n", name, abs, stop ? " (VM stopped)" : "");
	json_object_put(res);
	return 0;
}

/* PATH made absolute (the VM process resolves it, in another directory). */
static int absolute(const char *what, const char *path, char *abs, size_t n)
{
	if (path[0] == '/') {
		if (snprintf(abs, n, "%s", path) >= (int)n)
			goto long_path;
		return 0;
	}
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd))) {
		fprintf(stderr, "vmsvc: %s: getcwd: %s\n", what, strerror(errno));
		return -1;
	}
	if (snprintf(abs, n, "%s/%s", cwd, path) < (int)n)
		return 0;
long_path:
	fprintf(stderr, "vmsvc: %s: path too long\n", what);
	return -1;
}

/* `vmsvc suspend` progress lines drawn as a bar (src/cli/progress.c). */
static void draw_bar(struct json_object *p)
{
	cli_progress_draw((uint64_t)int_of(p, "done"), (uint64_t)int_of(p, "total"));
}

/* `vmsvc suspend NAME FILE [--passphrase-file F | --key-file F] [--level N]`: the
 * VM process loads the key from the named file and writes FILE; key bytes never travel. */
int cmd_suspend(int argc, char **argv)
{
	static const char usage[] = "usage: vmsvc suspend NAME FILE [--passphrase-file F | --key-file F] [--level N]\n";
	const char *name = NULL, *file = NULL, *pass = NULL, *keyf = NULL;
	int level = 0;
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--passphrase-file") || !strcmp(argv[i], "--key-file")) && i + 1 < argc) {
			*(argv[i][2] == 'p' ? &pass : &keyf) = argv[i + 1];
			i++;
		} else if (!strcmp(argv[i], "--level") && i + 1 < argc) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (*end || v < -7 || v > 19 || v == 0) {
				fprintf(stderr, "vmsvc: suspend: --level '%s': expected -7..-1 or 1..19\n", argv[i]);
				return 2;
			}
			level = (int)v;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("%s"
			       "Save running VM NAME (CPU, devices, memory, disk overlay blocks) to FILE,\n"
			       "compressed, encrypted and authenticated (docs/suspend-format.md), then end it.\n"
			       "The key: a passphrase file (Argon2id) or a file of 32 raw bytes. Continue it with:\n"
			       "vmsvc resume FILE --key-file F [--disk BASE...]\n"
			       "--level N: zstd level, -7..-1 (fast, bigger) or 1..19 (default -4).\n"
			       "A progress bar is drawn on stderr when it is a terminal.\n", usage);
			return 0;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "vmsvc: suspend: unknown option '%s'\n%s", argv[i], usage);
			return 2;
		} else if (!name)
			name = argv[i];
		else if (!file)
			file = argv[i];
		else {
			fprintf(stderr, "vmsvc: suspend: unexpected argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (!name || !file || !pass == !keyf) {
		fprintf(stderr, "%s", usage);
		return 2;
	}
	char abs[PATH_MAX], kabs[PATH_MAX];
	if (absolute("suspend", file, abs, sizeof(abs)) < 0 || absolute("suspend", pass ? pass : keyf, kabs, sizeof(kabs)) < 0)
		return 1;
	struct json_object *extra = json_object_new_object();
	json_object_object_add(extra, "file", json_object_new_string(abs));
	json_object_object_add(extra, pass ? "passphrase_file" : "key_file", json_object_new_string(kabs));
	if (level)
		json_object_object_add(extra, "zstd_level", json_object_new_int(level));
	struct json_object *res = NULL;
	if (cli_progress_start())
		conn_progress = draw_bar;
	int r = call_vm_quiet(name, "suspend", extra, &res);
	conn_progress = NULL;
	cli_progress_end(r == 0);
	if (r > 0)
		return 1;
	if (r < 0) {
		fprintf(stderr, "vmsvc: %s: %s\n", name, err_msg());
		return 1;
	}
	printf("%s: suspended to %s\n", name, abs);
	json_object_put(res);
	return 0;
}

/* `vmsvc resume FILE` (a suspended VM) belongs to the suspend service: when it
 * defines cmd_resume_file, a regular-file argument goes there. */
int cmd_resume_file(int argc, char **argv) __attribute__((weak));

int cmd_resume(int argc, char **argv)
{
	struct stat st;
	/* Any regular file among the arguments (FILE, or a key file): resume a file. */
	for (int i = 1; cmd_resume_file && i < argc; i++)
		if (argv[i][0] != '-' && stat(argv[i], &st) == 0 && S_ISREG(st.st_mode))
			return cmd_resume_file(argc, argv);
	return simple_cmd(argc, argv, "resume");
}
int cmd_stop(int argc, char **argv) { return simple_cmd(argc, argv, "stop"); }

int cmd_info(int argc, char **argv)
{
	bool json = false;
	const char *name;
	int r = one_vm_args(argc, argv, "info NAME [--json]", &json, &name);
	if (r)
		return r > 0 ? 0 : 1;
	struct json_object *res = NULL;
	if (call_vm(name, "info", NULL, &res) < 0)
		return 1;
	if (json) {
		print_json(res);
	} else {
		char up[32];
		fmt_uptime(dbl_of(res, "uptime"), up, sizeof(up));
		printf("name:    %s\npid:     %lld\nstate:   %s\nvcpus:   %lld\nmemory:  %lld MiB\n"
		       "kernel:  %s\nuptime:  %s\nsocket:  %s\n",
		       str_of(res, "name"), (long long)int_of(res, "pid"), str_of(res, "state"),
		       (long long)int_of(res, "vcpus"), (long long)(int_of(res, "memory") >> 20), str_of(res, "kernel"),
		       up, str_of(res, "socket"));
		struct json_object *devs;
		if (json_object_object_get_ex(res, "devices", &devs) && json_object_is_type(devs, json_type_array)) {
			printf("devices:");
			for (size_t i = 0; i < json_object_array_length(devs); i++)
				printf(" %s", json_object_get_string(json_object_array_get_idx(devs, i)));
			printf("\n");
		}
	}
	json_object_put(res);
	return 0;
}

static void print_counters(const char *title, struct json_object *o)
{
	if (!o || !json_object_is_type(o, json_type_object))
		return;
	bool any = false;
	json_object_object_foreach(o, key, val) {
		int64_t n = json_object_get_int64(val);
		if (!n)
			continue;
		if (!any)
			printf("%s:\n", title);
		any = true;
		printf("  %-22s %14lld\n", key, (long long)n);
	}
}

int cmd_stats(int argc, char **argv)
{
	bool json = false;
	const char *name;
	int r = one_vm_args(argc, argv, "stats NAME [--json]", &json, &name);
	if (r)
		return r > 0 ? 0 : 1;
	struct json_object *res = NULL;
	if (call_vm(name, "stats", NULL, &res) < 0)
		return 1;
	if (json) {
		print_json(res);
	} else {
		struct json_object *v;
		printf("exits: %lld\n", (long long)int_of(res, "exits_total"));
		if (json_object_object_get_ex(res, "exits", &v))
			print_counters("exits by type", v);
		if (json_object_object_get_ex(res, "events", &v))
			print_counters("events", v);
		if (json_object_object_get_ex(res, "vcpus", &v) && json_object_is_type(v, json_type_array))
			for (size_t i = 0; i < json_object_array_length(v); i++) {
				struct json_object *c = json_object_array_get_idx(v, i);
				if (int_of(c, "assists"))
					printf("  vcpu%-3lld assisted instr. %11lld\n", (long long)int_of(c, "index"),
					       (long long)int_of(c, "assists"));
			}
	}
	json_object_put(res);
	return 0;
}

static void print_regs(struct json_object *c)
{
	static const char *const rows[][4] = {
		{ "rip", "rflags", "rsp", "rbp" }, { "rax", "rbx", "rcx", "rdx" }, { "rsi", "rdi", "r8", "r9" },
		{ "r10", "r11", "r12", "r13" },    { "r14", "r15", "cr2", "cr8" }, { "cr0", "cr3", "cr4", "efer" },
	};
	printf("vcpu %lld: %s mode, CPL %lld\n", (long long)int_of(c, "index"), str_of(c, "mode"),
	       (long long)int_of(c, "cpl"));
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (int j = 0; j < 4; j++)
			printf("  %-6s %-18s", rows[i][j], str_of(c, rows[i][j]));
		printf("\n");
	}
	static const char *const segs[] = { "cs", "ss", "ds", "es", "fs", "gs", "tr" };
	for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++) {
		struct json_object *sg;
		if (!json_object_object_get_ex(c, segs[i], &sg))
			continue;
		printf("  %-6s sel 0x%04llx base %-18s limit %#llx dpl %lld%s\n", segs[i],
		       (unsigned long long)int_of(sg, "selector"), str_of(sg, "base"),
		       (unsigned long long)int_of(sg, "limit"), (long long)int_of(sg, "dpl"), int_of(sg, "l") ? " L" : "");
	}
}

/* vmsvc regs NAME [--vcpu N] [--json] */
int cmd_regs(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "vcpu", required_argument, 0, 'c' },
		{ "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
	};
	const char *usage = "usage: vmsvc regs NAME [--vcpu N] [--json]\n";
	bool json = false;
	long vcpu = -1;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jc:h", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'j': json = true; break;
		case 'c':
			vcpu = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || vcpu < 0 || vcpu > 4096) {
				fprintf(stderr, "vmsvc regs: --vcpu wants a vCPU index, not '%s'\n", optarg);
				return 1;
			}
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind + 1 != argc) {
		fputs(usage, stderr);
		return 1;
	}
	struct json_object *extra = NULL, *res = NULL;
	if (vcpu >= 0) {
		extra = json_object_new_object();
		json_object_object_add(extra, "vcpu", json_object_new_int((int)vcpu));
	}
	int r = call_vm(argv[optind], "regs", extra, &res); /* takes extra */
	if (r < 0)
		return 1;
	struct json_object *arr;
	if (json)
		print_json(res);
	else if (json_object_object_get_ex(res, "vcpus", &arr) && json_object_is_type(arr, json_type_array))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			print_regs(json_object_array_get_idx(arr, i));
	json_object_put(res);
	return 0;
}

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "events", required_argument, 0, 'e' }, { "count", required_argument, 0, 'n' },
		{ "help", no_argument, 0, 'h' },         { 0, 0, 0, 0 },
	};
	static const char usage[] = "events NAME [--events LIST] [--count N]\n"
				    "Prints the VM's event stream, one JSON object per line, until the VM ends\n"
				    "(or N events). LIST: comma-separated names or patterns (vm.*, exit.io, exit.*, *);\n"
				    "default: lifecycle events. Exit events are rate-limited.";
	const char *list = NULL;
	long count = -1;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "e:n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'e': list = optarg; break;
		case 'n': {
			char *end;
			count = strtol(optarg, &end, 10);
			if (*end || count < 1) {
				fprintf(stderr, "vmsvc: --count '%s': expected a positive number\n", optarg);
				return 1;
			}
			break;
		}
		case 'h': printf("usage: vmsvc %s\n", usage); return 0;
		default: fprintf(stderr, "usage: vmsvc %s\n", usage); return 1;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: vmsvc %s\n", usage);
		return 1;
	}
	const char *name = argv[optind];
	struct json_object *req = json_object_new_object();
	if (list) {
		struct json_object *arr = json_object_new_array();
		char *copy = strdup(list), *save = NULL;
		for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
			json_object_array_add(arr, json_object_new_string(t));
		free(copy);
		json_object_object_add(req, "events", arr);
	}
	struct conn cn;
	if (conn_open(&cn, name, REPLY_TIMEOUT_S) < 0) {
		json_object_put(req);
		fprintf(stderr, "vmsvc: %s\n", err_msg());
		return 1;
	}
	struct json_object *res = NULL;
	if (conn_call(&cn, "subscribe", req, &res) < 0) {
		fprintf(stderr, "vmsvc: %s: %s\n", name, err_msg());
		conn_close(&cn);
		return 1;
	}
	json_object_put(res);
	/* A quiet VM is not an error: wait for events without a timeout. */
	struct timeval tv = { 0 };
	setsockopt(cn.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long seen = 0; count < 0 || seen < count; seen++) {
		char *line = conn_line(&cn);
		if (!line)
			break;   /* the VM ended */
		printf("%s\n", line);
		free(line);
	}
	conn_close(&cn);
	return 0;
}
#endif /* HAVE_JSONC */
