/* I/O threads: an epoll loop on its own thread. Devices hand it file descriptors
 * (ioeventfds, io_uring completion eventfds, tap fds, timers) and do their I/O in
 * the callbacks, so a vCPU thread never blocks on a disk or the network.
 *
 * Callbacks run on the I/O thread, one at a time. iothread_add_fd/del_fd may be
 * called from any thread, including from a callback; after iothread_del_fd
 * returns, the callback for that fd is not running and will not run again
 * (unless called from that same callback, where it simply will not run again). */
#ifndef VMSVC_IOTHREAD_H
#define VMSVC_IOTHREAD_H
#include <stdint.h>

struct iothread;

/* `events` are the epoll events that fired (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP). */
typedef void (*iothread_fn)(void *opaque, int fd, uint32_t events);

/* Start a thread named `name` (<= 15 chars shown by the OS). */
int iothread_create(const char *name, struct iothread **out);
/* Watch `fd` for `events` (EPOLLIN/EPOLLOUT; level-triggered). -EEXIST if watched. */
int iothread_add_fd(struct iothread *it, int fd, uint32_t events, iothread_fn cb, void *opaque);
/* Stop watching `fd` (does not close it). Waits for a running callback for that
 * fd to return unless called from the I/O thread itself. -ENOENT if not watched. */
int iothread_del_fd(struct iothread *it, int fd);
/* Run fn(opaque) on the I/O thread and wait for it to finish (runs inline when
 * called from the I/O thread). Used for device reset / quiesce. */
int iothread_run_sync(struct iothread *it, void (*fn)(void *opaque), void *opaque);
/* True on the I/O thread `it`. */
int iothread_is_current(const struct iothread *it);
/* Stop the thread (callbacks in progress finish first); fds stay open. */
void iothread_stop(struct iothread *it);
/* Stop (if running) and free. NULL is fine. */
void iothread_destroy(struct iothread *it);

#endif
