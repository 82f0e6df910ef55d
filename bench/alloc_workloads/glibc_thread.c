/* glibc bench-malloc-thread-like loop: every thread frees and reallocates
 * random entries of its own array of blocks, sizes drawn from an inverse
 * distribution between 4 B and 32 KiB (small sizes far more likely). */
#include "common.h"

enum { BLOCKS = 4000 };
static long g_iters;
static unsigned g_sizes[1024];

static void *worker(void *arg) {
    uint64_t seed = 0x5DEECE66Dull * ((long)arg + 1);
    void **blocks = calloc(BLOCKS, sizeof(void *));
    for (long i = 0; i < g_iters; i++) {
        uint64_t r = rng_next(&seed);
        int k = r % BLOCKS;
        free(blocks[k]);
        size_t n = g_sizes[(r >> 32) & 1023];
        blocks[k] = malloc(n);
        touch(blocks[k], n);
    }
    for (int k = 0; k < BLOCKS; k++) free(blocks[k]);
    free(blocks);
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    /* inverse distribution: P(size) ~ 1/size over [4, 32768] */
    double lo = 4, hi = 32768;
    for (int i = 0; i < 1024; i++) {
        double u = (i + 0.5) / 1024.0;
        g_sizes[i] = (unsigned)(lo * __builtin_pow(hi / lo, u * u));
    }
    g_iters = scaled(4000000);
    run_threads(g_threads, worker);
    return 0;
}
