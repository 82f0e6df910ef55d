/* Shared helpers of the allocator workloads: a fast per-thread PRNG, thread
 * start/join, and argument parsing. Every workload runs a fixed amount of
 * work (not a fixed time), so wall time compares allocators directly.
 * Usage of each program: ./workload THREADS SCALE (SCALE 1 = full size). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Touch the first and last byte so the memory is really used. */
static inline void touch(void *p, size_t n) {
    if (n) {
        ((volatile char *)p)[0] = 1;
        ((volatile char *)p)[n - 1] = 2;
    }
}

static int g_threads = 1;
static double g_scale = 1.0;

static void parse_args(int argc, char **argv) {
    if (argc > 1) g_threads = atoi(argv[1]);
    if (argc > 2) g_scale = atof(argv[2]);
    if (g_threads < 1) g_threads = 1;
    if (g_scale <= 0) g_scale = 1.0;
}

static long scaled(long n) {
    long v = (long)(n * g_scale);
    return v < 1 ? 1 : v;
}

static void run_threads(int n, void *(*fn)(void *)) {
    pthread_t *t = malloc(sizeof(pthread_t) * n);
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, fn, (void *)i);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    free(t);
}
