/* Small alloc+free, glibc bench-malloc-simple shape: allocate 100 blocks of
 * one size, free them all, for sizes 16..256 B in turn: the cost of the
 * fast path (thread cache) itself. */
#include "common.h"

enum { N = 100 };
static long g_iters;

static void *worker(void *arg) {
    (void)arg;
    void *a[N];
    static const size_t sizes[] = {16, 32, 64, 128, 256};
    for (long i = 0; i < g_iters; i++) {
        size_t n = sizes[i % 5];
        for (int k = 0; k < N; k++) {
            a[k] = malloc(n);
            ((volatile char *)a[k])[0] = 1;
        }
        for (int k = 0; k < N; k++) free(a[k]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    g_iters = scaled(200000);
    run_threads(g_threads, worker);
    return 0;
}
