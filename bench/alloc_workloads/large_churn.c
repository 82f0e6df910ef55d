/* Large-block churn: each thread keeps 32 live blocks of 64 KiB .. 4 MiB,
 * replacing a random one each step and writing a few pages of it (buffers
 * of a server: request bodies, image tiles, tensors). */
#include "common.h"

enum { LIVE = 32 };
static long g_ops;

static void *worker(void *arg) {
    uint64_t seed = 0xC0FFEEull * ((long)arg + 1);
    void *live[LIVE] = {0};
    for (long i = 0; i < g_ops; i++) {
        uint64_t r = rng_next(&seed);
        int k = r % LIVE;
        free(live[k]);
        size_t n = (64u << 10) + (r >> 20) % ((4u << 20) - (64u << 10));
        char *p = malloc(n);
        for (size_t off = 0; off < n; off += n / 4) p[off] = 1;
        p[n - 1] = 1;
        live[k] = p;
    }
    for (int k = 0; k < LIVE; k++) free(live[k]);
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    g_ops = scaled(40000);
    run_threads(g_threads, worker);
    return 0;
}
