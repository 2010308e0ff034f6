/* Block I/O engine front end: io_uring when available, else a small pool of
 * threads doing synchronous preadv/pwritev/fdatasync/fallocate. Both report
 * completions through the same eventfd, so the device side cannot tell them apart. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include "blk_internal.h"

static void signal_efd(int efd)
{
	uint64_t one = 1;
	while (write(efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static int run_sync(struct eio *io)
{
	ssize_t r;
	switch (io->op) {
	case EIO_READV:
		r = preadv(io->fd, io->iov, (int)io->iovcnt, (off_t)io->off);
		break;
	case EIO_WRITEV:
		r = pwritev(io->fd, io->iov, (int)io->iovcnt, (off_t)io->off);
		break;
	case EIO_FDATASYNC:
		r = fdatasync(io->fd);
		break;
	case EIO_FALLOCATE:
		r = fallocate(io->fd, io->mode, (off_t)io->off, (off_t)io->len);
		break;
	default:
		errno = EINVAL;
		r = -1;
	}
	return r < 0 ? -errno : (int)(r > 0x7fffffff ? 0x7fffffff : r);
}

static void *worker(void *arg)
{
	struct blk_engine *e = arg;
	pthread_mutex_lock(&e->lock);
	for (;;) {
		while (!e->work && !e->stop)
			pthread_cond_wait(&e->cond, &e->lock);
		if (!e->work)
			break;
		struct eio *io = e->work;
		e->work = io->next;
		if (!e->work)
			e->work_tail = &e->work;
		pthread_mutex_unlock(&e->lock);
		io->res = run_sync(io);
		pthread_mutex_lock(&e->lock);
		io->next = e->finished;
		e->finished = io;
		signal_efd(e->efd);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static int threads_init(struct blk_engine *e, unsigned depth)
{
	e->work = NULL;
	e->work_tail = &e->work;
	e->finished = NULL;
	e->stop = false;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	unsigned want = depth < 4 ? depth : (depth < 64 ? 4 : ENG_MAX_THREADS);
	for (e->nthreads = 0; e->nthreads < want; e->nthreads++) {
		int r = pthread_create(&e->th[e->nthreads], NULL, worker, e);
		if (r) {
			if (e->nthreads)
				break;
			return err_set(r, "blk: pthread_create: %s", strerror(r));
		}
	}
	return 0;
}

static void threads_destroy(struct blk_engine *e)
{
	pthread_mutex_lock(&e->lock);
	e->stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	for (unsigned i = 0; i < e->nthreads; i++)
		pthread_join(e->th[i], NULL);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
}

int eng_init(struct blk_engine *e, enum blk_engine_kind kind, unsigned depth, int efd)
{
	e->efd = efd;
	e->backlog = NULL;
	e->backlog_tail = &e->backlog;
	e->nbacklog = 0;
	e->sync_writes = false;
	const char *env = getenv("VMSVC_BLK_ENGINE");
	if (kind == BLK_ENGINE_AUTO && env && *env) {
		if (!strcmp(env, "threads"))
			kind = BLK_ENGINE_THREADS;
		else if (!strcmp(env, "uring") || !strcmp(env, "io_uring"))
			kind = BLK_ENGINE_URING;
		else
			log_warn("blk: ignoring VMSVC_BLK_ENGINE=%s (want threads or uring)", env);
	}
	if (kind != BLK_ENGINE_THREADS) {
		int r = uring_init(e, depth);
		if (r == 0) {
			e->kind = BLK_ENGINE_URING;
			return 0;
		}
		if (kind == BLK_ENGINE_URING)
			return r;
#ifdef HAVE_URING
		log_warn("blk: io_uring unavailable (%s); using the thread-pool engine", err_msg());
#else
		log_info("blk: built without liburing; using the thread-pool engine");
#endif
	}
	e->kind = BLK_ENGINE_THREADS;
	return threads_init(e, depth);
}

void eng_destroy(struct blk_engine *e)
{
	if (e->kind == BLK_ENGINE_URING)
		uring_destroy(e);
	else
		threads_destroy(e);
}

const char *eng_name(const struct blk_engine *e)
{
	return e->kind == BLK_ENGINE_URING ? "io_uring" : "threads";
}

void eng_queue(struct blk_engine *e, struct eio *io)
{
	io->next = NULL;
	*e->backlog_tail = io;
	e->backlog_tail = &io->next;
	e->nbacklog++;
	/* Keep batches bounded: a long burst without a kick still makes progress. */
	if (e->nbacklog >= 256)
		eng_kick(e);
}

void eng_kick(struct blk_engine *e)
{
	if (e->kind == BLK_ENGINE_URING) {
		uring_kick(e);
		return;
	}
	if (!e->backlog)
		return;
	pthread_mutex_lock(&e->lock);
	*e->work_tail = e->backlog;
	e->work_tail = e->backlog_tail;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	e->backlog = NULL;
	e->backlog_tail = &e->backlog;
	e->nbacklog = 0;
}

bool eng_ready(struct blk_engine *e)
{
	return e->kind == BLK_ENGINE_URING && uring_ready(e);
}

struct eio *eng_reap(struct blk_engine *e)
{
	if (e->kind == BLK_ENGINE_URING)
		return uring_reap(e);
	pthread_mutex_lock(&e->lock);
	struct eio *list = e->finished;
	e->finished = NULL;
	pthread_mutex_unlock(&e->lock);
	return list;
}
