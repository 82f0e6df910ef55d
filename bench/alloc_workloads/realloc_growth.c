/* realloc growth: each thread builds buffers by appending chunks of
 * 1..16 KiB with realloc (string builders, growing arrays), up to 1..8 MiB,
 * then frees them; 8 buffers grow interleaved. */
#include "common.h"

static long g_rounds;

static void *worker(void *arg) {
    uint64_t seed = 0xFEEDull * ((long)arg + 1);
    for (long round = 0; round < g_rounds; round++) {
        char *buf[8] = {0};
        size_t len[8] = {0}, target[8];
        for (int b = 0; b < 8; b++) target[b] = (1u << 20) + rng_next(&seed) % (7u << 20);
        for (int live = 8; live > 0;) {
            live = 0;
            for (int b = 0; b < 8; b++) {
                if (len[b] >= target[b]) continue;
                live++;
                size_t add = 1024 + rng_next(&seed) % (15 * 1024);
                char *q = realloc(buf[b], len[b] + add);
                memset(q + len[b], 'a' + b, add < 64 ? add : 64);
                buf[b] = q;
                len[b] += add;
            }
        }
        for (int b = 0; b < 8; b++) free(buf[b]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    g_rounds = scaled(12);
    run_threads(g_threads, worker);
    return 0;
}
