/* Copies between host buffers and iovec arrays (guest buffers from virtq_pop). */
#ifndef VMSVC_IOV_H
#define VMSVC_IOV_H
#include <stddef.h>
#include <sys/uio.h>

/* Copy up to len bytes starting `off` bytes into the iovecs to buf; returns bytes copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t off, void *buf, size_t len);
/* Copy up to len bytes from buf into the iovecs starting `off` bytes in; returns bytes copied. */
size_t buf_to_iov(const struct iovec *iov, unsigned cnt, size_t off, const void *buf, size_t len);

#endif
