/* larson-like server simulation: each thread owns an array of blocks and
 * repeatedly frees a random one and allocates a new one of random size
 * (16..400 B, larson's default range); every round it hands its array to a
 * new thread and exits, so blocks are freed by threads that did not
 * allocate them (a server's request handlers). */
#include "common.h"

enum { SLOTS = 1000, ROUNDS = 20 };
static long g_ops;

struct work { char *slots[SLOTS]; uint64_t seed; int round; };

static void *worker(void *arg) {
    struct work *w = arg;
    for (long i = 0; i < g_ops; i++) {
        uint64_t r = rng_next(&w->seed);
        int k = r % SLOTS;
        free(w->slots[k]);
        size_t n = 16 + (r >> 32) % 385;
        w->slots[k] = malloc(n);
        touch(w->slots[k], n);
    }
    if (++w->round < ROUNDS) {
        pthread_t t;
        pthread_create(&t, NULL, worker, w);
        pthread_join(t, NULL);
    }
    return NULL;
}

static void *root(void *arg) {
    struct work *w = calloc(1, sizeof *w);
    w->seed = 0x9E3779B97F4A7C15ull * ((long)arg + 1);
    for (int k = 0; k < SLOTS; k++) {
        size_t n = 16 + rng_next(&w->seed) % 385;
        w->slots[k] = malloc(n);
    }
    worker(w);
    for (int k = 0; k < SLOTS; k++) free(w->slots[k]);
    free(w);
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    g_ops = scaled(4000000 / ROUNDS / 1) / 1;
    run_threads(g_threads, root);
    return 0;
}
