/* xmalloc-style producer/consumer: producers allocate objects (16..512 B)
 * and pass them through single-producer/single-consumer rings to
 * consumers, which free them: every free is a cross-thread free. With one
 * thread, the thread alternates producing and consuming a batch. */
#include "common.h"
#include <sched.h>
#include <stdatomic.h>

enum { RING = 4096 };
struct ring {
    _Alignas(64) _Atomic size_t head;
    _Alignas(64) _Atomic size_t tail;
    void *slot[RING];
};
static struct ring *g_rings;
static long g_objects;

static void *producer(void *arg) {
    struct ring *r = &g_rings[(long)arg];
    uint64_t seed = 0x1234567 + (long)arg;
    for (long i = 0; i < g_objects; i++) {
        size_t n = 16 + rng_next(&seed) % 497;
        void *p = malloc(n);
        touch(p, n);
        size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        while (h - atomic_load_explicit(&r->tail, memory_order_acquire) == RING) sched_yield();
        r->slot[h % RING] = p;
        atomic_store_explicit(&r->head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    struct ring *r = &g_rings[(long)arg];
    for (long i = 0; i < g_objects; i++) {
        size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        while (atomic_load_explicit(&r->head, memory_order_acquire) == t) sched_yield();
        free(r->slot[t % RING]);
        atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    }
    return NULL;
}

static void *pair(void *arg) {
    long i = (long)arg;
    pthread_t p, c;
    pthread_create(&p, NULL, producer, (void *)i);
    pthread_create(&c, NULL, consumer, (void *)i);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    int pairs = g_threads / 2;
    if (pairs == 0) {
        /* one thread: batches of RING/2 produced then consumed */
        long total = scaled(4000000);
        static void *batch[RING / 2];
        uint64_t seed = 7;
        for (long done = 0; done < total; done += RING / 2) {
            for (int k = 0; k < RING / 2; k++) {
                size_t n = 16 + rng_next(&seed) % 497;
                batch[k] = malloc(n);
                touch(batch[k], n);
            }
            for (int k = 0; k < RING / 2; k++) free(batch[k]);
        }
        return 0;
    }
    g_rings = aligned_alloc(64, sizeof(struct ring) * pairs);
    memset(g_rings, 0, sizeof(struct ring) * pairs);
    g_objects = scaled(4000000) / pairs;
    run_threads(pairs, pair);
    free(g_rings);
    return 0;
}
