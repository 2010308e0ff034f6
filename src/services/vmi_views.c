/* Kernel views over guest memory: processes, modules, network devices.
 * Field offsets come from BTF; a view whose fields are missing fails closed
 * with the message recorded at open time. Lists are walked with a cap and
 * cycle detection; a list cut short still yields what was read. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

/* ---- offsets ---- */

/* Resolve one member into *off; on failure record the message in err (once). */
static void need(const struct vmi_kernel *k, char *err, size_t errlen, const char *type, const char *path,
		 uint64_t *off)
{
	if (*err)
		return;
	if (vmi_btf_offset(k->btf, type, path, off) < 0)
		snprintf(err, errlen, "%s", err_msg());
}
#define NEED(err, type, path, off) need(k, err, sizeof(err), type, path, off)

void vmi_offsets_resolve(struct vmi_kernel *k)
{
	struct vmi_offsets *o = &k->off;
	memset(o, 0, sizeof(*o));
	if (!k->btf) {
		const char *why = k->btf_err[0] ? k->btf_err : "no BTF type information";
		snprintf(o->err_ps, sizeof(o->err_ps), "%s", why);
		snprintf(o->err_lsmod, sizeof(o->err_lsmod), "%s", why);
		snprintf(o->err_netdev, sizeof(o->err_netdev), "%s", why);
		return;
	}
	NEED(o->err_ps, "task_struct", "tasks", &o->task_tasks);
	NEED(o->err_ps, "task_struct", "pid", &o->task_pid);
	NEED(o->err_ps, "task_struct", "tgid", &o->task_tgid);
	NEED(o->err_ps, "task_struct", "real_parent", &o->task_real_parent);
	NEED(o->err_ps, "task_struct", "cred", &o->task_cred);
	NEED(o->err_ps, "task_struct", "comm", &o->task_comm);
	NEED(o->err_ps, "task_struct", "exit_state", &o->task_exit_state);
	NEED(o->err_ps, "task_struct", "mm", &o->task_mm);
	NEED(o->err_ps, "cred", "uid", &o->cred_uid);
	if (!o->err_ps[0] && vmi_btf_sizeof(k->btf, "task_struct", &o->task_size) < 0)
		snprintf(o->err_ps, sizeof(o->err_ps), "%s", err_msg());
	if (!o->err_ps[0]) {
		/* 5.14 renamed `long state` to `unsigned int __state`. */
		o->task_state_size = 4;
		if (vmi_btf_offset(k->btf, "task_struct", "__state", &o->task_state) < 0) {
			o->task_state_size = 8;
			NEED(o->err_ps, "task_struct", "state", &o->task_state);
		}
	}
	if (!o->err_ps[0])
		err_clear();

	NEED(o->err_lsmod, "module", "list", &o->module_list);
	NEED(o->err_lsmod, "module", "name", &o->module_name);
	NEED(o->err_lsmod, "module", "state", &o->module_state);
	if (!o->err_lsmod[0]) {
		/* 6.4 replaced core_layout/init_layout with mem[MOD_MEM_NUM_TYPES]. */
		uint64_t n, a, b;
		if (vmi_btf_array_len(k->btf, "module", "mem", &n) == 0 && n > 0 && n < 16 &&
		    vmi_btf_offset(k->btf, "module", "mem[0].base", &o->module_base) == 0 &&
		    vmi_btf_offset(k->btf, "module", "mem[0].size", &o->module_size) == 0 &&
		    vmi_btf_offset(k->btf, "module", "mem[0]", &a) == 0 &&
		    vmi_btf_offset(k->btf, "module", "mem[1]", &b) == 0) {
			o->module_nmem = (unsigned)n;
			o->module_mem_stride = b - a;
		} else {
			NEED(o->err_lsmod, "module", "core_layout.base", &o->module_base);
			NEED(o->err_lsmod, "module", "core_layout.size", &o->module_size);
		}
	}
	NEED(o->err_netdev, "net", "dev_base_head", &o->net_dev_base_head);
	NEED(o->err_netdev, "net_device", "dev_list", &o->netdev_dev_list);
	NEED(o->err_netdev, "net_device", "name", &o->netdev_name);
	NEED(o->err_netdev, "net_device", "flags", &o->netdev_flags);
	NEED(o->err_netdev, "net_device", "promiscuity", &o->netdev_promiscuity);
	err_clear();
}

/* ---- growing result arrays ---- */
struct vec {
	void *items;
	size_t n, cap, size;
};
static void *vec_push(struct vec *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		void *p = realloc(v->items, cap * v->size);
		if (!p)
			return NULL;
		v->items = p;
		v->cap = cap;
	}
	void *slot = (char *)v->items + v->n++ * v->size;
	memset(slot, 0, v->size);
	return slot;
}

/* ---- ps ---- */
static char state_char(uint32_t state, uint32_t exit_state)
{
	/* fs/proc/array.c task_state_index() with 6.x values: TASK_REPORT 0x7f,
	 * TASK_IDLE = UNINTERRUPTIBLE|NOLOAD(0x400), RTLOCK_WAIT 0x1000. */
	static const char letters[] = "RSDTtXZPI";
	uint32_t s = (state | exit_state) & 0x7f;
	if ((state & 0x402) == 0x402)
		s = 0x80;
	if (state & 0x1000)
		s = 2;
	int idx = s ? 32 - __builtin_clz(s) : 0;
	return letters[idx];
}

struct ps_ctx {
	const struct vmi_kernel *k;
	struct vec v;
	int err;
};

static int read_task(const struct vmi_kernel *k, uint64_t task, struct vmi_task *t)
{
	const struct vmi_offsets *o = &k->off;
	uint64_t parent = 0, cred = 0, mm = 0;
	int32_t ptgid = 0, exit_state = 0;
	uint64_t state = 0;
	t->addr = task;
	if (vmi_kread(k, task + o->task_pid, &t->pid, 4) < 0 || vmi_kread(k, task + o->task_tgid, &t->tgid, 4) < 0 ||
	    vmi_kread(k, task + o->task_comm, t->comm, sizeof(t->comm) - 1) < 0 ||
	    vmi_kread(k, task + o->task_state, &state, o->task_state_size) < 0 ||
	    vmi_kread(k, task + o->task_exit_state, &exit_state, 4) < 0 ||
	    vmi_kread_u64(k, task + o->task_real_parent, &parent) < 0 ||
	    vmi_kread_u64(k, task + o->task_cred, &cred) < 0 || vmi_kread_u64(k, task + o->task_mm, &mm) < 0)
		return -EFAULT;
	t->comm[sizeof(t->comm) - 1] = 0;
	t->state = (uint32_t)state;
	t->exit_state = (uint32_t)exit_state;
	t->state_char = state_char(t->state, t->exit_state);
	t->kthread = mm == 0;
	/* The parent and the credentials may be unreadable in a torn or hostile
	 * image; report -1 rather than dropping the task. */
	t->ppid = parent == task && t->pid == 0 ? 0 : -1;
	if (parent != task && vmi_kread(k, parent + o->task_tgid, &ptgid, 4) == 0)
		t->ppid = ptgid;
	t->uid = UINT32_MAX;
	if (vmi_kread(k, cred + o->cred_uid, &t->uid, 4) < 0)
		t->uid = UINT32_MAX;
	return 0;
}

static int ps_visit(uint64_t node, void *arg)
{
	struct ps_ctx *c = arg;
	struct vmi_task *t = vec_push(&c->v);
	if (!t) {
		c->err = -ENOMEM;
		return 1;
	}
	if (read_task(c->k, node - c->k->off.task_tasks, t) < 0) {
		c->v.n--; /* keep walking: the list pointer itself was readable */
	}
	return 0;
}

int vmi_ps(const struct vmi_kernel *k, struct vmi_task **out, size_t *n, bool *truncated)
{
	*out = NULL;
	*n = 0;
	if (k->off.err_ps[0])
		return err_set(ENOENT, "ps: %s", k->off.err_ps);
	uint64_t init_task;
	int rc = vmi_ksym(k, "init_task", &init_task);
	if (rc < 0)
		return rc;
	struct ps_ctx c = { .k = k, .v = { .size = sizeof(struct vmi_task) } };
	/* init_task (pid 0, the idle task) heads the list and is not on it. */
	struct vmi_task *t = vec_push(&c.v);
	if (!t || read_task(k, init_task, t) < 0) {
		free(c.v.items);
		return t ? err_set(EFAULT, "ps: cannot read init_task at %#" PRIx64, init_task)
			 : err_set(ENOMEM, "ps: out of memory");
	}
	long r = vmi_list_walk(k, init_task + k->off.task_tasks, VMI_LIST_CAP, ps_visit, &c, truncated);
	if (r < 0 || c.err < 0) {
		free(c.v.items);
		return r < 0 ? (int)r : err_set(ENOMEM, "ps: out of memory");
	}
	*out = c.v.items;
	*n = c.v.n;
	return 0;
}

/* ---- lsmod ---- */
struct mod_ctx {
	const struct vmi_kernel *k;
	struct vec v;
	int err;
};

static int mod_visit(uint64_t node, void *arg)
{
	struct mod_ctx *c = arg;
	const struct vmi_kernel *k = c->k;
	const struct vmi_offsets *o = &k->off;
	struct vmi_module *m = vec_push(&c->v);
	if (!m) {
		c->err = -ENOMEM;
		return 1;
	}
	uint64_t mod = node - o->module_list;
	m->addr = mod;
	uint32_t size = 0;
	if (vmi_kread(k, mod + o->module_name, m->name, sizeof(m->name) - 1) < 0 ||
	    vmi_kread(k, mod + o->module_state, &m->state, 4) < 0 ||
	    vmi_kread_u64(k, mod + o->module_base, &m->base) < 0 || vmi_kread(k, mod + o->module_size, &size, 4) < 0) {
		c->v.n--;
		return 0;
	}
	m->name[sizeof(m->name) - 1] = 0;
	m->size = size;
	/* >= 6.4: the size /proc/modules shows is the sum over all memory types. */
	for (unsigned i = 1; i < o->module_nmem; i++)
		if (vmi_kread(k, mod + o->module_size + i * o->module_mem_stride, &size, 4) == 0)
			m->size += size;
	return 0;
}

int vmi_lsmod(const struct vmi_kernel *k, struct vmi_module **out, size_t *n, bool *truncated)
{
	*out = NULL;
	*n = 0;
	if (k->off.err_lsmod[0])
		return err_set(ENOENT, "lsmod: %s", k->off.err_lsmod);
	uint64_t modules;
	int rc = vmi_ksym(k, "modules", &modules);
	if (rc < 0)
		return rc;
	struct mod_ctx c = { .k = k, .v = { .size = sizeof(struct vmi_module) } };
	long r = vmi_list_walk(k, modules, VMI_LIST_CAP, mod_visit, &c, truncated);
	if (r < 0 || c.err < 0) {
		free(c.v.items);
		return r < 0 ? (int)r : err_set(ENOMEM, "lsmod: out of memory");
	}
	*out = c.v.items;
	*n = c.v.n;
	return 0;
}

/* ---- netdev ---- */
struct net_ctx {
	const struct vmi_kernel *k;
	struct vec v;
	int err;
};

static int net_visit(uint64_t node, void *arg)
{
	struct net_ctx *c = arg;
	const struct vmi_kernel *k = c->k;
	const struct vmi_offsets *o = &k->off;
	struct vmi_netdev *d = vec_push(&c->v);
	if (!d) {
		c->err = -ENOMEM;
		return 1;
	}
	uint64_t dev = node - o->netdev_dev_list;
	d->addr = dev;
	if (vmi_kread(k, dev + o->netdev_name, d->name, sizeof(d->name) - 1) < 0 ||
	    vmi_kread(k, dev + o->netdev_flags, &d->flags, 4) < 0 ||
	    vmi_kread(k, dev + o->netdev_promiscuity, &d->promiscuity, 4) < 0) {
		c->v.n--;
		return 0;
	}
	d->name[sizeof(d->name) - 1] = 0;
	return 0;
}

int vmi_netdev(const struct vmi_kernel *k, struct vmi_netdev **out, size_t *n, bool *truncated)
{
	*out = NULL;
	*n = 0;
	if (k->off.err_netdev[0])
		return err_set(ENOENT, "netdev: %s", k->off.err_netdev);
	uint64_t init_net;
	int rc = vmi_ksym(k, "init_net", &init_net);
	if (rc < 0)
		return rc;
	struct net_ctx c = { .k = k, .v = { .size = sizeof(struct vmi_netdev) } };
	long r = vmi_list_walk(k, init_net + k->off.net_dev_base_head, VMI_LIST_CAP, net_visit, &c, truncated);
	if (r < 0 || c.err < 0) {
		free(c.v.items);
		return r < 0 ? (int)r : err_set(ENOMEM, "netdev: out of memory");
	}
	*out = c.v.items;
	*n = c.v.n;
	return 0;
}
