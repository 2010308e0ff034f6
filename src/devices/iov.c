/* See include/vmsvc/iov.h. */
#include <stdint.h>
#include <string.h>
#include <vmsvc/iov.h>

static size_t iov_copy(const struct iovec *iov, unsigned cnt, size_t off, uint8_t *buf, size_t len, int to_iov)
{
	size_t done = 0;
	for (unsigned i = 0; i < cnt && done < len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - off;
		if (k > len - done)
			k = len - done;
		if (to_iov)
			memcpy((uint8_t *)iov[i].iov_base + off, buf + done, k);
		else
			memcpy(buf + done, (const uint8_t *)iov[i].iov_base + off, k);
		done += k;
		off = 0;
	}
	return done;
}

size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t off, void *buf, size_t len)
{
	return iov_copy(iov, cnt, off, buf, len, 0);
}

size_t buf_to_iov(const struct iovec *iov, unsigned cnt, size_t off, const void *buf, size_t len)
{
	return iov_copy(iov, cnt, off, (uint8_t *)buf, len, 1);
}
