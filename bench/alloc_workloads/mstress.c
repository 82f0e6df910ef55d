/* mstress/rptest-like random lifetimes: each thread keeps a window of live
 * blocks with random lifetimes and sizes (mostly 8..1 KiB, 1 in 64 up to
 * 64 KiB), and now and then swaps a block with a shared slot, so some
 * blocks are freed by another thread. */
#include "common.h"
#include <stdatomic.h>

enum { LIVE = 4096, SHARED = 1024 };
static _Atomic(void *) g_shared[SHARED];
static long g_ops;

static size_t pick_size(uint64_t r) {
    if ((r & 63) == 0) return 1024 + (r >> 8) % (63 * 1024);
    return 8 + (r >> 8) % 1017;
}

static void *worker(void *arg) {
    uint64_t seed = 0xABCDEF01ull * ((long)arg + 3);
    void **live = calloc(LIVE, sizeof(void *));
    for (long i = 0; i < g_ops; i++) {
        uint64_t r = rng_next(&seed);
        int k = r % LIVE;
        if (((r >> 40) & 127) == 0) {
            /* exchange with the shared pool: cross-thread free later */
            live[k] = atomic_exchange(&g_shared[(r >> 20) % SHARED], live[k]);
            continue;
        }
        free(live[k]);
        size_t n = pick_size(rng_next(&seed));
        live[k] = malloc(n);
        touch(live[k], n);
    }
    for (int k = 0; k < LIVE; k++) free(live[k]);
    free(live);
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    g_ops = scaled(3000000);
    run_threads(g_threads, worker);
    for (int k = 0; k < SHARED; k++) free(atomic_load(&g_shared[k]));
    return 0;
}
