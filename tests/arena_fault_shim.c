/* LD_PRELOAD fault shim for tests/test_arena_faults.py.
 *
 * Wraps fsync (split into "fsync" and "fsync_dir" by file type), fdatasync,
 * pwrite64, pwritev and rename. A test arms it through ctypes:
 *   sc_fault_arm("fdatasync", skip, errno, sticky)
 * lets `skip` calls through, then fails the next one (every later one too if
 * `sticky`) with `errno`. sc_fault_fired() counts failures injected and
 * sc_fault_calls(op) counts calls seen.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char armed_op[32];
static long skip_left = -1;
static int fail_errno;
static int sticky;
static long fired;

#define N_OPS 6
static const char *op_names[N_OPS] = {"fsync", "fsync_dir", "fdatasync", "pwrite", "pwritev", "rename"};
static long op_calls[N_OPS];

void sc_fault_arm(const char *op, long skip, int err, int is_sticky) {
    pthread_mutex_lock(&mu);
    strncpy(armed_op, op, sizeof armed_op - 1);
    skip_left = skip;
    fail_errno = err;
    sticky = is_sticky;
    pthread_mutex_unlock(&mu);
}

void sc_fault_disarm(void) {
    pthread_mutex_lock(&mu);
    skip_left = -1;
    pthread_mutex_unlock(&mu);
}

long sc_fault_fired(void) { return fired; }

long sc_fault_calls(const char *op) {
    for (int i = 0; i < N_OPS; i++)
        if (strcmp(op_names[i], op) == 0) return op_calls[i];
    return -1;
}

/* 0: pass the call through; else the errno to fail it with. */
static int should_fail(const char *op) {
    int err = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < N_OPS; i++)
        if (strcmp(op_names[i], op) == 0) op_calls[i]++;
    if (skip_left >= 0 && strcmp(op, armed_op) == 0) {
        if (skip_left > 0) {
            skip_left--;
        } else {
            err = fail_errno;
            fired++;
            if (!sticky) skip_left = -1;
        }
    }
    pthread_mutex_unlock(&mu);
    return err;
}

typedef int (*sync_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*rename_fn)(const char *, const char *);
#define REAL(name, type) static type real_##name; if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

int fsync(int fd) {
    REAL(fsync, sync_fn);
    struct stat st;
    const char *op = (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) ? "fsync_dir" : "fsync";
    int err = should_fail(op);
    if (err) { errno = err; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync, sync_fn);
    int err = should_fail("fdatasync");
    if (err) { errno = err; return -1; }
    return real_fdatasync(fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64, pwrite_fn);
    int err = should_fail("pwrite");
    if (err) { errno = err; return -1; }
    return real_pwrite64(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite, pwrite_fn);
    int err = should_fail("pwrite");
    if (err) { errno = err; return -1; }
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev, pwritev_fn);
    int err = should_fail("pwritev");
    if (err) { errno = err; return -1; }
    return real_pwritev(fd, iov, cnt, off);
}

int rename(const char *from, const char *to) {
    REAL(rename, rename_fn);
    int err = should_fail("rename");
    if (err) { errno = err; return -1; }
    return real_rename(from, to);
}
