/* Control protocol: one JSON object per line in, one per line out.
 * Request  {"id":ANY,"cmd":"NAME",...}
 * Response {"id":ANY,"ok":true,"result":{...}} | {"id":ANY,"ok":false,"error":"one line"}
 * The command table is open: services register their own commands. */
#ifdef HAVE_JSONC
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "services/control_internal.h"

int control_register_command(struct control *ctl, const char *name, control_cmd_fn fn, void *opaque)
{
	if (!ctl || !name || !fn || !*name || strlen(name) >= CTL_CMD_NAME)
		return err_set(EINVAL, "control: command name must be 1..%d characters", CTL_CMD_NAME - 1);
	pthread_mutex_lock(&ctl->cmd_lock);
	struct ctl_cmd *free_slot = NULL;
	for (int i = 0; i < CTL_MAX_CMDS; i++) {
		struct ctl_cmd *c = &ctl->cmds[i];
		if (c->fn && !strcmp(c->name, name)) {
			c->fn = fn;   /* replace (e.g. a placeholder) */
			c->opaque = opaque;
			pthread_mutex_unlock(&ctl->cmd_lock);
			return 0;
		}
		if (!c->fn && !free_slot)
			free_slot = c;
	}
	if (!free_slot) {
		pthread_mutex_unlock(&ctl->cmd_lock);
		return err_set(ENOSPC, "control: command table full (%d)", CTL_MAX_CMDS);
	}
	snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
	free_slot->opaque = opaque;
	free_slot->fn = fn;
	pthread_mutex_unlock(&ctl->cmd_lock);
	return 0;
}

void control_unregister_command(struct control *ctl, const char *name)
{
	if (!ctl || !name)
		return;
	pthread_mutex_lock(&ctl->cmd_lock);
	for (int i = 0; i < CTL_MAX_CMDS; i++)
		if (ctl->cmds[i].fn && !strcmp(ctl->cmds[i].name, name))
			memset(&ctl->cmds[i], 0, sizeof(ctl->cmds[i]));
	pthread_mutex_unlock(&ctl->cmd_lock);
}

/* For "hello": the sorted list of command names. */
struct json_object *ctl_command_list(struct control *ctl);
struct json_object *ctl_command_list(struct control *ctl)
{
	const char *names[CTL_MAX_CMDS + 1];
	char copy[CTL_MAX_CMDS][CTL_CMD_NAME];
	int n = 0;
	pthread_mutex_lock(&ctl->cmd_lock);
	for (int i = 0; i < CTL_MAX_CMDS; i++)
		if (ctl->cmds[i].fn) {
			memcpy(copy[n], ctl->cmds[i].name, CTL_CMD_NAME);
			names[n] = copy[n];
			n++;
		}
	pthread_mutex_unlock(&ctl->cmd_lock);
	names[n++] = "subscribe";
	for (int i = 1; i < n; i++)   /* insertion sort: at most 33 names */
		for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			const char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	struct json_object *arr = json_object_new_array();
	for (int i = 0; i < n; i++)
		json_object_array_add(arr, json_object_new_string(names[i]));
	return arr;
}

/* Error messages go on one line: replace control characters. */
static struct json_object *one_line(const char *msg)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", msg && *msg ? msg : "failed");
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return json_object_new_string(buf);
}

static char *finish(struct json_object *resp)
{
	const char *s = json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	char *out = s ? strdup(s) : NULL;
	json_object_put(resp);
	return out;
}

static char *error_response(struct json_object *id, const char *msg)
{
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "id", id ? json_object_get(id) : NULL);
	json_object_object_add(r, "ok", json_object_new_boolean(0));
	json_object_object_add(r, "error", one_line(msg));
	return finish(r);
}

/* Returns 0 with *response set (also for protocol errors: they are responses),
 * or -ENOMEM. */
int ctl_handle_request(struct control *ctl, struct ctl_client *client, const char *line, size_t len, char **response)
{
	*response = NULL;
	if (len > CONTROL_MAX_LINE) {
		*response = error_response(NULL, "request line too long");
		return *response ? 0 : -ENOMEM;
	}
	/* json-c would stop at a NUL byte and accept the prefix. */
	if (memchr(line, 0, len)) {
		*response = error_response(NULL, "invalid JSON: NUL byte in request");
		return *response ? 0 : -ENOMEM;
	}
	struct json_tokener *tok = json_tokener_new_ex(32);
	if (!tok)
		return -ENOMEM;
	struct json_object *req = json_tokener_parse_ex(tok, line, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	if (!req && jerr == json_tokener_continue && len) {
		/* The line is all there is: a NUL ends a top-level number or literal. */
		req = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		used = len;
	}
	json_tokener_free(tok);
	char msg[256];
	if (!req || jerr != json_tokener_success) {
		if (jerr == json_tokener_continue)
			snprintf(msg, sizeof(msg), "invalid JSON: incomplete request");
		else
			snprintf(msg, sizeof(msg), "invalid JSON: %s", json_tokener_error_desc(jerr));
		json_object_put(req);
		*response = error_response(NULL, msg);
		return *response ? 0 : -ENOMEM;
	}
	for (size_t i = used; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') {
			json_object_put(req);
			*response = error_response(NULL, "invalid JSON: trailing data after the request object");
			return *response ? 0 : -ENOMEM;
		}
	if (!json_object_is_type(req, json_type_object)) {
		json_object_put(req);
		*response = error_response(NULL, "request must be a JSON object");
		return *response ? 0 : -ENOMEM;
	}
	struct json_object *id = NULL, *cmdv = NULL;
	json_object_object_get_ex(req, "id", &id);
	if (!json_object_object_get_ex(req, "cmd", &cmdv) || !json_object_is_type(cmdv, json_type_string)) {
		*response = error_response(id, "missing \"cmd\" (a string)");
		json_object_put(req);
		return *response ? 0 : -ENOMEM;
	}
	const char *cmd = json_object_get_string(cmdv);

	struct json_object *result = NULL;
	int r;
	err_clear();
	if (!strcmp(cmd, "subscribe")) {
		r = client ? ctl_subscribe(ctl, client, req, &result)
			   : err_set(ENOTSUP, "subscribe needs a socket connection");
	} else {
		control_cmd_fn fn = NULL;
		void *opaque = NULL;
		pthread_mutex_lock(&ctl->cmd_lock);
		for (int i = 0; i < CTL_MAX_CMDS; i++)
			if (ctl->cmds[i].fn && !strcmp(ctl->cmds[i].name, cmd)) {
				fn = ctl->cmds[i].fn;
				opaque = ctl->cmds[i].opaque;
				break;
			}
		pthread_mutex_unlock(&ctl->cmd_lock);
		if (fn) {
			r = fn(opaque, req, &result);
			if (r < 0 && !*err_msg())
				err_set(-r, "%s failed: %s", cmd, strerror(-r));
		} else {
			char name[40];
			/* Echo at most a short, printable prefix of what the client sent. */
			snprintf(name, sizeof(name), "%s", cmd);
			r = err_set(ENOENT, "unknown command '%s' (try \"hello\")", name);
		}
	}
	if (r < 0) {
		int fd = ctl_take_reply_fd(ctl);   /* an fd goes only with a success */
		if (fd >= 0)
			close(fd);
		json_object_put(result);
		*response = error_response(id, err_msg());
	} else {
		struct json_object *resp = json_object_new_object();
		json_object_object_add(resp, "id", id ? json_object_get(id) : NULL);
		json_object_object_add(resp, "ok", json_object_new_boolean(1));
		json_object_object_add(resp, "result", result ? result : json_object_new_object());
		*response = finish(resp);
	}
	json_object_put(req);
	return *response ? 0 : -ENOMEM;
}

void control_reply_fd(struct control *ctl, int fd)
{
	int old = ctl_take_reply_fd(ctl);
	if (old >= 0)
		close(old);
	ctl->reply_fd_plus1 = fd + 1;
}

int ctl_take_reply_fd(struct control *ctl)
{
	int fd = ctl->reply_fd_plus1 - 1;
	ctl->reply_fd_plus1 = 0;
	return fd;
}

int control_handle_line(struct control *ctl, const char *line, size_t len, char **response)
{
	if (!ctl || !line || !response)
		return -EINVAL;
	int r = ctl_handle_request(ctl, NULL, line, len, response);
	int fd = ctl_take_reply_fd(ctl);   /* no socket to pass it over */
	if (fd >= 0)
		close(fd);
	return r;
}

#endif /* HAVE_JSONC */
