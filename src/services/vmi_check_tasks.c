/* Hidden-process check: independent views of the tasks must agree.
 *   list     init_task.tasks (thread-group leaders, what `ps` walks) and each
 *            leader's threads (signal->thread_head);
 *   idr      the PID namespace's IDR (init_pid_ns.idr, an xarray of struct pid)
 *            -> pid->tasks[PIDTYPE_PID] -> task: what /proc lists;
 *   runq     every CPU's runqueue (per-CPU `runqueues`): curr, the CFS tree
 *            (through group entities) and the RT priority queues: tasks that
 *            can run, whatever the lists say;
 *   family   real_parent pointers and children lists of every task found.
 * A task seen by idr, runq or family but missing from the list is hidden (a
 * rootkit's list_del(&task->tasks)); a listed task missing from the IDR is a
 * forged or half-removed entry. pid 0 (the per-CPU idle tasks) is only ever
 * in the runqueue's `idle`, never in the list or the IDR. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/vmi_check_internal.h"

#define MAX_TASKS 65536
#define HASH_SIZE (MAX_TASKS * 2)
#define MAX_XA_NODES 65536
#define MAX_RB_NODES 65536
#define PID_MAX 4194304

enum { V_LIST = 1, V_THREAD = 2, V_IDR = 4, V_RUNQ = 8, V_PARENT = 16, V_CHILD = 32, V_IDLE = 64 };

struct tnode {
	uint64_t task;
	unsigned views;
	int32_t pid, tgid, idr_nr;
	int32_t ref_pid; /* a child that names it as parent */
	int cpu;         /* runqueue it was seen on */
	char comm[16];
};

struct toff {
	uint64_t tasks, pid, tgid, comm, real_parent, children, sibling, signal, thread_node, pid_links, se, rt;
	uint64_t thread_head, pid_tasks, pid_nr, ns_idr, xa_head, xa_shift, xa_slots;
	uint64_t rq_curr, rq_idle, rq_cfs, rq_rt, rq_cpu, cfs_root, cfs_curr, se_run_node, se_my_q, rt_queue,
		rt_run_list, rt_my_q;
	uint64_t rt_nqueue;
	bool have_rq_cpu, have_se_my_q, have_rt_my_q, have_rt;
};

struct tset {
	const struct vmi_kernel *k;
	struct toff o;
	struct tnode *t;
	uint32_t *hash; /* index + 1 */
	size_t n;
	bool full;
};

static struct tnode *tset_get(struct tset *s, uint64_t task)
{
	size_t h = (size_t)((task >> 6) * 0x9e3779b97f4a7c15ULL) & (HASH_SIZE - 1);
	for (; s->hash[h]; h = (h + 1) & (HASH_SIZE - 1))
		if (s->t[s->hash[h] - 1].task == task)
			return &s->t[s->hash[h] - 1];
	if (s->n >= MAX_TASKS) {
		s->full = true;
		return NULL;
	}
	struct tnode *t = &s->t[s->n];
	memset(t, 0, sizeof(*t));
	t->task = task;
	t->pid = t->tgid = t->idr_nr = t->ref_pid = -1;
	t->cpu = -1;
	s->hash[h] = (uint32_t)++s->n;
	return t;
}

/* Add a task seen by `view`; false if it is not a readable task. */
static struct tnode *seen(struct tset *s, uint64_t task, unsigned view)
{
	const struct vmi_kernel *k = s->k;
	int32_t pid, tgid;
	if (vmi_kread(k, task + s->o.pid, &pid, 4) < 0 || vmi_kread(k, task + s->o.tgid, &tgid, 4) < 0 || pid < 0 ||
	    pid > PID_MAX) {
		err_clear();
		return NULL;
	}
	struct tnode *t = tset_get(s, task);
	if (!t)
		return NULL;
	if (!t->views) {
		t->pid = pid;
		t->tgid = tgid;
		vmi_kread(k, task + s->o.comm, t->comm, sizeof(t->comm) - 1);
		t->comm[sizeof(t->comm) - 1] = 0;
		err_clear();
	}
	t->views |= view;
	return t;
}

/* ---- offsets ---- */
#define OFF(type, path, dst)                                              \
	do {                                                              \
		if (vmi_btf_offset(k->btf, type, path, dst) < 0) {        \
			snprintf(why, whylen, "%s", err_msg());            \
			return false;                                     \
		}                                                         \
	} while (0)

static bool resolve(const struct vmi_kernel *k, struct toff *o, char *why, size_t whylen)
{
	if (!k->btf) {
		snprintf(why, whylen, "%s", k->btf_err[0] ? k->btf_err : "no BTF");
		return false;
	}
	OFF("task_struct", "tasks", &o->tasks);
	OFF("task_struct", "pid", &o->pid);
	OFF("task_struct", "tgid", &o->tgid);
	OFF("task_struct", "comm", &o->comm);
	OFF("task_struct", "real_parent", &o->real_parent);
	OFF("task_struct", "children", &o->children);
	OFF("task_struct", "sibling", &o->sibling);
	OFF("task_struct", "signal", &o->signal);
	OFF("task_struct", "thread_node", &o->thread_node);
	OFF("signal_struct", "thread_head", &o->thread_head);
	OFF("task_struct", "pid_links[0]", &o->pid_links);
	OFF("pid", "tasks[0]", &o->pid_tasks);
	OFF("pid", "numbers[0].nr", &o->pid_nr);
	OFF("pid_namespace", "idr.idr_rt.xa_head", &o->ns_idr);
	OFF("xa_node", "shift", &o->xa_shift);
	OFF("xa_node", "slots", &o->xa_slots);
	OFF("task_struct", "se", &o->se);
	OFF("rq", "curr", &o->rq_curr);
	OFF("rq", "idle", &o->rq_idle);
	OFF("rq", "cfs", &o->rq_cfs);
	OFF("cfs_rq", "tasks_timeline.rb_root.rb_node", &o->cfs_root);
	OFF("cfs_rq", "curr", &o->cfs_curr);
	OFF("sched_entity", "run_node", &o->se_run_node);
	o->have_rq_cpu = vmi_off(k, "rq", "cpu", &o->rq_cpu);
	o->have_se_my_q = vmi_off(k, "sched_entity", "my_q", &o->se_my_q);
	o->have_rt = vmi_off(k, "rq", "rt", &o->rq_rt) && vmi_off(k, "rt_rq", "active.queue", &o->rt_queue) &&
		     vmi_off(k, "sched_rt_entity", "run_list", &o->rt_run_list) && vmi_off(k, "task_struct", "rt", &o->rt) &&
		     vmi_btf_array_len(k->btf, "rt_prio_array", "queue", &o->rt_nqueue) == 0 && o->rt_nqueue <= 1024;
	o->have_rt_my_q = vmi_off(k, "sched_rt_entity", "my_q", &o->rt_my_q);
	err_clear();
	return true;
}

/* ---- list view ---- */
struct walk_ctx {
	struct tset *s;
	uint64_t sub; /* member offset to subtract */
	unsigned view;
};

static int add_node(uint64_t node, void *arg)
{
	struct walk_ctx *c = arg;
	seen(c->s, node - c->sub, c->view);
	return 0;
}

static void list_view(struct tset *s, uint64_t init_task, bool *broken)
{
	const struct vmi_kernel *k = s->k;
	seen(s, init_task, V_LIST);
	struct walk_ctx c = { s, s->o.tasks, V_LIST };
	vmi_list_walk(k, init_task + s->o.tasks, MAX_TASKS, add_node, &c, broken);
	/* Threads of every listed leader. */
	size_t leaders = s->n;
	for (size_t i = 0; i < leaders; i++) {
		uint64_t sig;
		if (vmi_kread_u64(k, s->t[i].task + s->o.signal, &sig) < 0 || !sig)
			continue;
		struct walk_ctx tc = { s, s->o.thread_node, V_THREAD };
		vmi_list_walk(k, sig + s->o.thread_head, MAX_TASKS, add_node, &tc, NULL);
	}
	err_clear();
}

/* ---- IDR view: the xarray under init_pid_ns.idr ---- */
struct xa_walk {
	struct tset *s;
	long nodes;
	size_t mismatched;
	char mismatch[160];
};

static void xa_leaf(struct xa_walk *w, uint64_t pid)
{
	const struct vmi_kernel *k = w->s->k;
	uint64_t first;
	int32_t nr;
	if (vmi_kread_u64(k, pid + w->s->o.pid_tasks, &first) < 0 || !first ||
	    vmi_kread(k, pid + w->s->o.pid_nr, &nr, 4) < 0) {
		err_clear();
		return; /* a pid only used as a process group/session id */
	}
	struct tnode *t = seen(w->s, first - w->s->o.pid_links, V_IDR);
	if (!t)
		return;
	t->idr_nr = nr;
	if (nr != t->pid && !w->mismatched++)
		snprintf(w->mismatch, sizeof(w->mismatch), "struct pid %#" PRIx64 " (nr %d) -> task %#" PRIx64 " with pid %d",
			 pid, nr, t->task, t->pid);
}

static void xa_walk_node(struct xa_walk *w, uint64_t entry, int depth)
{
	const struct vmi_kernel *k = w->s->k;
	if (!entry)
		return;
	bool internal = (entry & 3) == 2;
	if (!internal) {
		xa_leaf(w, entry);
		return;
	}
	if (entry < 4096 || depth > 12 || ++w->nodes > MAX_XA_NODES)
		return; /* sibling/retry/zero entries, or too deep */
	uint64_t node = entry - 2;
	uint8_t shift;
	uint64_t slots[64];
	if (vmi_kread(k, node + w->s->o.xa_shift, &shift, 1) < 0 ||
	    vmi_kread(k, node + w->s->o.xa_slots, slots, sizeof(slots)) < 0 || shift > 60) {
		err_clear();
		return;
	}
	for (int i = 0; i < 64; i++) {
		if (!slots[i])
			continue;
		if (shift == 0 && (slots[i] & 3) == 2)
			continue; /* internal entries at the leaf level are siblings/retries */
		xa_walk_node(w, slots[i], depth + 1);
	}
}

/* ---- family view ---- */
static void family_view(struct tset *s)
{
	const struct vmi_kernel *k = s->k;
	/* s->n grows while we go: every task found is expanded once. */
	for (size_t i = 0; i < s->n; i++) {
		uint64_t task = s->t[i].task, parent;
		int32_t pid = s->t[i].pid;
		if (vmi_kread_u64(k, task + s->o.real_parent, &parent) == 0 && parent && parent != task) {
			struct tnode *p = seen(s, parent, V_PARENT);
			if (p && p->ref_pid < 0)
				p->ref_pid = pid;
		}
		struct walk_ctx c = { s, s->o.sibling, V_CHILD };
		vmi_list_walk(k, task + s->o.children, MAX_TASKS, add_node, &c, NULL);
	}
	err_clear();
}

/* ---- runqueue view ---- */
static void rq_task(struct tset *s, uint64_t task, unsigned cpu)
{
	struct tnode *t = seen(s, task, V_RUNQ);
	if (t && t->cpu < 0)
		t->cpu = (int)cpu;
}

/* A CFS entity: a task, or (group scheduling) a group with its own cfs_rq. */
static void cfs_rq_walk(struct tset *s, uint64_t cfs_rq, unsigned cpu, int depth, long *budget);

static void cfs_entity(struct tset *s, uint64_t se, unsigned cpu, int depth, long *budget)
{
	uint64_t my_q = 0;
	if (s->o.have_se_my_q && vmi_kread_u64(s->k, se + s->o.se_my_q, &my_q) < 0)
		return;
	if (my_q)
		cfs_rq_walk(s, my_q, cpu, depth + 1, budget);
	else
		rq_task(s, se - s->o.se, cpu);
}

static void cfs_rq_walk(struct tset *s, uint64_t cfs_rq, unsigned cpu, int depth, long *budget)
{
	const struct vmi_kernel *k = s->k;
	if (depth > 8)
		return;
	uint64_t curr, root;
	if (vmi_kread_u64(k, cfs_rq + s->o.cfs_curr, &curr) == 0 && curr)
		cfs_entity(s, curr, cpu, depth, budget);
	if (vmi_kread_u64(k, cfs_rq + s->o.cfs_root, &root) < 0)
		return;
	/* Depth-first over the red-black tree with an explicit, bounded stack
	 * (a hostile tree may be deep or cyclic; the budget bounds both). */
	uint64_t stack[128];
	int sp = 0;
	if (root)
		stack[sp++] = root;
	while (sp > 0 && --*budget > 0) {
		uint64_t node = stack[--sp], lr[3]; /* __rb_parent_color, rb_right, rb_left */
		if (vmi_kread(k, node, lr, sizeof(lr)) < 0)
			continue;
		cfs_entity(s, node - s->o.se_run_node, cpu, depth, budget);
		for (int i = 1; i <= 2; i++)
			if (lr[i] && sp < 128)
				stack[sp++] = lr[i];
	}
	err_clear();
}

static void rq_view(struct tset *s, char *why, size_t whylen)
{
	const struct vmi_kernel *k = s->k;
	unsigned ncpu;
	if (vmi_percpu_count(k, &ncpu) < 0) {
		snprintf(why, whylen, "runqueues: %s", err_msg());
		return;
	}
	long budget = MAX_RB_NODES;
	for (unsigned cpu = 0; cpu < ncpu; cpu++) {
		uint64_t rq, curr, idle;
		uint32_t rq_cpu;
		if (vmi_percpu_addr(k, "runqueues", cpu, &rq) < 0) {
			snprintf(why, whylen, "runqueues: %s", err_msg());
			return;
		}
		/* Only possible CPUs have a runqueue: rq->cpu must name itself. */
		if (s->o.have_rq_cpu && (vmi_kread(k, rq + s->o.rq_cpu, &rq_cpu, 4) < 0 || rq_cpu != cpu)) {
			err_clear();
			continue;
		}
		if (vmi_kread_u64(k, rq + s->o.rq_idle, &idle) == 0 && idle) {
			struct tnode *t = seen(s, idle, V_IDLE);
			if (t && t->cpu < 0)
				t->cpu = (int)cpu;
		}
		if (vmi_kread_u64(k, rq + s->o.rq_curr, &curr) == 0 && curr && curr != idle)
			rq_task(s, curr, cpu);
		cfs_rq_walk(s, rq + s->o.rq_cfs, cpu, 0, &budget);
		if (!s->o.have_rt)
			continue;
		for (uint64_t q = 0; q < s->o.rt_nqueue; q++) {
			uint64_t head = rq + s->o.rq_rt + s->o.rt_queue + 16 * q, first;
			if (vmi_kread_u64(k, head, &first) < 0 || first == head)
				continue;
			/* RT entities: tasks (a group entity has my_q set: skipped,
			 * its tasks sit on the group's own queue). */
			for (uint64_t node = first, n = 0; node != head && n < 4096; n++) {
				uint64_t rt_se = node - s->o.rt_run_list, my_q = 0;
				if (s->o.have_rt_my_q)
					vmi_kread_u64(k, rt_se + s->o.rt_my_q, &my_q);
				if (!my_q)
					rq_task(s, rt_se - s->o.rt, cpu);
				if (vmi_kread_u64(k, node, &node) < 0)
					break;
			}
		}
	}
	err_clear();
}

static void views_str(unsigned v, const struct tnode *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s%s", v & V_IDR ? " pid-idr" : "", v & V_RUNQ ? " runqueue" : "",
		 v & V_CHILD ? " parent's-children-list" : "", v & V_PARENT ? " parent-of-a-task" : "",
		 v & (V_LIST | V_THREAD) ? " task-list" : "");
	(void)t;
}

int vmi_check_tasks(const struct vmi_kernel *k, struct vmi_findings *out)
{
	char why[192] = "";
	struct tset s = { .k = k };
	if (!resolve(k, &s.o, why, sizeof(why)))
		return vmi_finding_cannot(out, "tasks", why);
	uint64_t init_task, init_pid_ns;
	if (vmi_ksym(k, "init_task", &init_task) < 0 || vmi_ksym(k, "init_pid_ns", &init_pid_ns) < 0)
		return vmi_finding_cannot(out, "tasks", err_msg());
	s.t = calloc(MAX_TASKS, sizeof(*s.t));
	s.hash = calloc(HASH_SIZE, sizeof(*s.hash));
	if (!s.t || !s.hash) {
		free(s.t);
		free(s.hash);
		return err_set(ENOMEM, "out of memory for the task views");
	}
	int rc = 0;
	bool broken = false;
	list_view(&s, init_task, &broken);
	if (broken)
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "tasks", "the task list is broken or loops",
				     "walk from init_task.tasks at %#" PRIx64 " did not return to its head",
				     init_task + s.o.tasks);
	struct xa_walk w = { .s = &s };
	uint64_t head;
	if (vmi_kread_u64(k, init_pid_ns + s.o.ns_idr, &head) == 0)
		xa_walk_node(&w, head, 0);
	else if (rc == 0)
		rc = vmi_finding_cannot(out, "tasks", err_msg());
	if (w.mismatched && rc == 0)
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "tasks", "PID IDR entries disagree with their tasks",
				     "%zu mismatches, first: %s", w.mismatched, w.mismatch);
	rq_view(&s, why, sizeof(why));
	if (why[0] && rc == 0)
		rc = vmi_finding_cannot(out, "tasks (runqueues)", why);
	family_view(&s);
	if (s.full && rc == 0)
		rc = vmi_finding_add(out, VMI_SEV_WARNING, "tasks", "too many tasks: views incomplete",
				     "more than %d distinct task addresses", MAX_TASKS);
	for (size_t i = 0; i < s.n && rc == 0; i++) {
		const struct tnode *t = &s.t[i];
		char comm[32], views[96], what[160];
		vmi_printable(t->comm, comm, sizeof(comm));
		views_str(t->views, t, views, sizeof(views));
		bool listed = t->views & (V_LIST | V_THREAD);
		if (t->pid == 0 && !(t->views & (V_IDR | V_CHILD)))
			continue; /* an idle task (init_task or another CPU's) */
		if (!listed && (t->views & (V_IDR | V_RUNQ | V_CHILD | V_PARENT))) {
			snprintf(what, sizeof(what), "hidden process: pid %d '%s' is not in the task list", t->pid, comm);
			char extra[64] = "";
			if (t->ref_pid >= 0)
				snprintf(extra, sizeof(extra), "; parent of pid %d", t->ref_pid);
			if (t->cpu >= 0)
				snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), "; on cpu%d's runqueue", t->cpu);
			rc = vmi_finding_add(out, VMI_SEV_CRITICAL, "tasks", what,
					     "task_struct %#" PRIx64 ", pid %d, tgid %d, found by:%s%s", t->task, t->pid,
					     t->tgid, views, extra);
		} else if (listed && t->pid != 0 && !(t->views & V_IDR)) {
			snprintf(what, sizeof(what), "task pid %d '%s' is in the task list but not in the PID IDR", t->pid,
				 comm);
			rc = vmi_finding_add(out, VMI_SEV_WARNING, "tasks", what, "task_struct %#" PRIx64 ", found by:%s",
					     t->task, views);
		}
	}
	free(s.t);
	free(s.hash);
	return rc;
}
