/* I/O thread: epoll loop with watched fds, a wake eventfd for stop and
 * synchronous calls. A deleted watch is only marked dead (events for it that
 * epoll already returned are skipped) and freed by the thread between batches. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/iothread.h>

struct watch {
	int fd;
	iothread_fn cb;
	void *opaque;
	bool dead;
	struct watch *next;
};

struct sync_req {
	void (*fn)(void *opaque);
	void *opaque;
	bool done;
	struct sync_req *next;
};

struct iothread {
	char name[16];
	int epfd, wakefd;
	pthread_t thread;
	bool running;              /* thread started and not yet joined */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct watch *watches;
	struct watch *current;     /* watch whose callback is running */
	struct sync_req *reqs;
	struct watch wake;         /* the wake eventfd's own watch */
};

int iothread_is_current(const struct iothread *it)
{
	return it && it->running && pthread_equal(pthread_self(), it->thread);
}

static void run_requests(struct iothread *it)
{
	pthread_mutex_lock(&it->lock);
	while (it->reqs) {
		struct sync_req *r = it->reqs;
		it->reqs = r->next;
		pthread_mutex_unlock(&it->lock);
		r->fn(r->opaque);
		pthread_mutex_lock(&it->lock);
		r->done = true;
		pthread_cond_broadcast(&it->cond);
	}
	pthread_mutex_unlock(&it->lock);
}

static void free_dead(struct iothread *it)
{
	pthread_mutex_lock(&it->lock);
	for (struct watch **p = &it->watches; *p;) {
		struct watch *w = *p;
		if (w->dead) {
			*p = w->next;
			free(w);
		} else {
			p = &w->next;
		}
	}
	pthread_mutex_unlock(&it->lock);
}

static void *iothread_main(void *arg)
{
	struct iothread *it = arg;
	struct epoll_event ev[32];
	for (;;) {
		free_dead(it);
		int n = epoll_wait(it->epfd, ev, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("iothread %s: epoll_wait: %s", it->name, strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = ev[i].data.ptr;
			if (w == &it->wake) {
				uint64_t v;
				if (read(it->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_warn("iothread %s: wake read: %s", it->name, strerror(errno));
				run_requests(it);
				continue;
			}
			pthread_mutex_lock(&it->lock);
			if (w->dead) {
				pthread_mutex_unlock(&it->lock);
				continue;
			}
			it->current = w;
			pthread_mutex_unlock(&it->lock);
			w->cb(w->opaque, w->fd, ev[i].events);
			pthread_mutex_lock(&it->lock);
			it->current = NULL;
			pthread_cond_broadcast(&it->cond);
			pthread_mutex_unlock(&it->lock);
		}
		pthread_mutex_lock(&it->lock);
		bool stop = it->stop;
		pthread_mutex_unlock(&it->lock);
		if (stop)
			break;
	}
	run_requests(it);   /* nobody waits forever on a stopping thread */
	return NULL;
}

static void wake(struct iothread *it)
{
	uint64_t one = 1;
	if (write(it->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("iothread %s: wake write: %s", it->name, strerror(errno));
}

int iothread_create(const char *name, struct iothread **out)
{
	struct iothread *it = calloc(1, sizeof(*it));
	if (!it)
		return err_set(ENOMEM, "iothread: out of memory");
	snprintf(it->name, sizeof(it->name), "%s", name ? name : "io");
	pthread_mutex_init(&it->lock, NULL);
	pthread_cond_init(&it->cond, NULL);
	it->wakefd = -1;
	it->epfd = epoll_create1(EPOLL_CLOEXEC);
	int r;
	if (it->epfd < 0) {
		r = err_set(errno, "iothread: epoll_create1: %s", strerror(errno));
		goto fail;
	}
	it->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (it->wakefd < 0) {
		r = err_set(errno, "iothread: eventfd: %s", strerror(errno));
		goto fail;
	}
	it->wake.fd = it->wakefd;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &it->wake };
	if (epoll_ctl(it->epfd, EPOLL_CTL_ADD, it->wakefd, &ev) < 0) {
		r = err_set(errno, "iothread: epoll_ctl: %s", strerror(errno));
		goto fail;
	}
	if ((r = pthread_create(&it->thread, NULL, iothread_main, it)) != 0) {
		r = err_set(r, "iothread: pthread_create: %s", strerror(r));
		goto fail;
	}
	it->running = true;
	pthread_setname_np(it->thread, it->name);
	*out = it;
	return 0;
fail:
	iothread_destroy(it);
	return r;
}

int iothread_add_fd(struct iothread *it, int fd, uint32_t events, iothread_fn cb, void *opaque)
{
	struct watch *w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(ENOMEM, "iothread: out of memory");
	*w = (struct watch){ .fd = fd, .cb = cb, .opaque = opaque };
	pthread_mutex_lock(&it->lock);
	for (struct watch *o = it->watches; o; o = o->next)
		if (o->fd == fd && !o->dead) {
			pthread_mutex_unlock(&it->lock);
			free(w);
			return err_set(EEXIST, "iothread %s: fd %d already watched", it->name, fd);
		}
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(it->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		pthread_mutex_unlock(&it->lock);
		free(w);
		return err_set(e, "iothread %s: epoll_ctl add fd %d: %s", it->name, fd, strerror(e));
	}
	w->next = it->watches;
	it->watches = w;
	pthread_mutex_unlock(&it->lock);
	return 0;
}

int iothread_del_fd(struct iothread *it, int fd)
{
	pthread_mutex_lock(&it->lock);
	struct watch *w = it->watches;
	while (w && (w->fd != fd || w->dead))
		w = w->next;
	if (!w) {
		pthread_mutex_unlock(&it->lock);
		return -ENOENT;
	}
	epoll_ctl(it->epfd, EPOLL_CTL_DEL, fd, NULL);
	w->dead = true;
	/* Wait for a running callback of this watch, unless we are that callback. */
	if (!iothread_is_current(it))
		while (it->current == w)
			pthread_cond_wait(&it->cond, &it->lock);
	if (!it->running) {
		/* No thread to free it later. */
		for (struct watch **p = &it->watches; *p; p = &(*p)->next)
			if (*p == w) {
				*p = w->next;
				free(w);
				break;
			}
	}
	pthread_mutex_unlock(&it->lock);
	return 0;
}

int iothread_run_sync(struct iothread *it, void (*fn)(void *opaque), void *opaque)
{
	if (!it->running || iothread_is_current(it)) {
		fn(opaque);
		return 0;
	}
	struct sync_req req = { .fn = fn, .opaque = opaque };
	pthread_mutex_lock(&it->lock);
	if (it->stop) {
		/* The loop is ending and may not look at requests again. */
		pthread_mutex_unlock(&it->lock);
		fn(opaque);
		return 0;
	}
	struct sync_req **p = &it->reqs;
	while (*p)
		p = &(*p)->next;
	*p = &req;
	pthread_mutex_unlock(&it->lock);
	wake(it);
	pthread_mutex_lock(&it->lock);
	while (!req.done)
		pthread_cond_wait(&it->cond, &it->lock);
	pthread_mutex_unlock(&it->lock);
	return 0;
}

void iothread_stop(struct iothread *it)
{
	if (!it || !it->running)
		return;
	if (iothread_is_current(it)) {
		log_error("iothread %s: stop called from its own thread; ignored", it->name);
		return;
	}
	pthread_mutex_lock(&it->lock);
	it->stop = true;
	pthread_mutex_unlock(&it->lock);
	wake(it);
	pthread_join(it->thread, NULL);
	it->running = false;
	free_dead(it);
}

void iothread_destroy(struct iothread *it)
{
	if (!it)
		return;
	iothread_stop(it);
	pthread_mutex_lock(&it->lock);
	while (it->watches) {
		struct watch *w = it->watches;
		it->watches = w->next;
		free(w);
	}
	pthread_mutex_unlock(&it->lock);
	if (it->epfd >= 0)
		close(it->epfd);
	if (it->wakefd >= 0)
		close(it->wakefd);
	pthread_cond_destroy(&it->cond);
	pthread_mutex_destroy(&it->lock);
	free(it);
}
