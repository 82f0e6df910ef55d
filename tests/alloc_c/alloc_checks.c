/* Regression cases for libslabcache_malloc.so under LD_PRELOAD, one per
 * argv[1]. Each case prints "ok" and exits 0 when the allocator behaves;
 * the cases that must abort or fault are told apart by the test's expected
 * signal. Built by tests/test_allocator_c.py with `cc -O1 -pthread`. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void free_sized(void *p, size_t n) __attribute__((weak));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int count_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* Defect 1: 40,000 live 40 KB blocks (glibc finishes; one mapping each hits
 * vm.max_map_count at ~32.7k), and the mapping count stays small. */
static int many_medium(void) {
    enum { N = 40000 };
    static char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(40000);
        if (!p[i]) { printf("NULL at %d\n", i); return 1; }
        p[i][0] = (char)i;
        p[i][39999] = (char)(i >> 8);
    }
    int maps = count_maps();
    for (int i = 0; i < N; i++) {
        if (p[i][0] != (char)i || p[i][39999] != (char)(i >> 8)) return 2;
        free(p[i]);
    }
    printf("maps %d\n", maps);
    if (maps > 2000) return 3;
    printf("ok\n");
    return 0;
}

/* Defect 1: realloc growth by 64 KiB steps to 32 MiB keeps the contents and
 * does not copy each step (in place / mremap). */
static int realloc_growth(void) {
    double t0 = now();
    size_t n = 0;
    unsigned char *p = NULL;
    for (size_t size = 65536; size <= (32u << 20); size += 65536) {
        unsigned char *q = realloc(p, size);
        if (!q) return 1;
        for (size_t i = n; i < size; i += 4096) q[i] = (unsigned char)(i >> 12);
        p = q;
        n = size;
    }
    for (size_t i = 0; i < n; i += 4096)
        if (p[i] != (unsigned char)(i >> 12)) return 2;
    /* shrink and grow again keep the prefix */
    p = realloc(p, 100000);
    if (!p || p[4096] != 1) return 3;
    p = realloc(p, 5u << 20);
    if (!p || p[8192] != 2) return 4;
    free(p);
    printf("seconds %.3f\nok\n", now() - t0);
    return 0;
}

/* Defect 3: sizes whose rounding would wrap, and impossible sizes. */
static int huge_sizes(void) {
    void *p;
    if (malloc((size_t)64 << 40)) return 1;            /* 64 TiB */
    if (pvalloc(SIZE_MAX)) return 2;
    if (pvalloc(SIZE_MAX - 4095)) return 3;
    if (valloc(SIZE_MAX)) return 4;
    if (aligned_alloc(4096, SIZE_MAX - 100)) return 5;
    if (memalign(1 << 20, SIZE_MAX - (1 << 19))) return 6;
    if (calloc(SIZE_MAX / 2, 3)) return 7;
    if (posix_memalign(&p, 1 << 16, SIZE_MAX - 10) != ENOMEM) return 8;
    void *q = malloc(100);
    memset(q, 7, 100);
    if (realloc(q, SIZE_MAX - 8)) return 9;
    if (((unsigned char *)q)[99] != 7) return 10;
    free(q);
    printf("ok\n");
    return 0;
}

/* Defect 5: a double free aborts by default (or only logs when asked). */
static int double_free(void) {
    char *p = malloc(64);
    free(p);
    free(p);
    printf("ok\n");
    return 0;
}

static int wild_free(void) {
    int local;
    free(&local);
    printf("ok\n");
    return 0;
}

/* Defect 2 (glibc's tst-malloc-fork-deadlock shape): threads read lines
 * with getline (malloc under a FILE lock), open and close streams (the list
 * lock around malloc/free) and flush all streams (list lock, then FILE
 * locks) while the main thread forks; children allocate and exit. The old
 * library hung within the first few dozen forks. */
static volatile int stop;
static char long_text[3 * 40000];
static void *line_reader(void *arg) {
    (void)arg;
    /* 40 KB lines: getline's buffer is a medium/large block, whose
     * allocation always takes an allocator lock (no thread-cache hit). */
    while (!stop) {
        FILE *f = fmemopen(long_text, sizeof long_text, "r");
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            free(line);
            line = NULL;
            cap = 0;
        }
        free(line);
        fclose(f);
    }
    return NULL;
}
static void *flusher(void *arg) {
    (void)arg;
    while (!stop) fflush(NULL);
    return NULL;
}
static void *churn(void *arg) {
    (void)arg;
    unsigned r = 1;
    void *slots[64] = {0};
    while (!stop) {
        r = r * 1103515245 + 12345;
        int i = (r >> 8) & 63;
        free(slots[i]);
        slots[i] = malloc((r >> 16) % 70000);
    }
    for (int i = 0; i < 64; i++) free(slots[i]);
    return NULL;
}
enum { SIGNALS = 800 };
/* Forks for FORK_SECONDS of wall time (at least 20): the old library hung in
 * most such runs; a fixed count would either miss it or cost CI minutes. */
#define FORK_SECONDS 3.0
static int fork_deadlock(void) {
    for (size_t i = 0; i < sizeof long_text; i++)
        long_text[i] = i % 40000 == 39999 ? '\n' : 'a' + i % 26;
    pthread_t t[8];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, line_reader, NULL);
    pthread_create(&t[4], NULL, flusher, NULL);
    pthread_create(&t[5], NULL, flusher, NULL);
    pthread_create(&t[6], NULL, churn, NULL);
    pthread_create(&t[7], NULL, churn, NULL);
    double t0 = now();
    int forks = 0;
    while (forks < 20 || now() - t0 < FORK_SECONDS) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(1000), *q = malloc(100000);
            free(p);
            free(q);
            FILE *f = fmemopen(NULL, 100, "w+");
            fputs("child\n", f);
            fclose(f);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
        forks++;
    }
    stop = 1;
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    printf("forks %d\nok\n", forks);
    return 0;
}

/* Defect 2 (tst-mallocfork2 shape): fork from a signal handler that
 * interrupts malloc/free; the child only _exits. */
static volatile sig_atomic_t forks;
static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid > 0) {
        waitpid(pid, NULL, 0);
        forks++;
    }
    errno = saved;
}
static int fork_in_signal(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    pid_t parent = getpid();
    pid_t sender = fork();
    if (sender == 0) {
        for (int i = 0; i < SIGNALS; i++) {
            kill(parent, SIGUSR1);
            usleep(100);
        }
        _exit(0);
    }
    unsigned r = 7;
    void *slots[256] = {0};
    int st;
    while (waitpid(sender, &st, WNOHANG) == 0) {
        for (int k = 0; k < 1000; k++) {
            r = r * 1103515245 + 12345;
            int i = (r >> 8) & 255;
            free(slots[i]);
            slots[i] = malloc((r >> 16) % 50000);
        }
    }
    for (int i = 0; i < 256; i++) free(slots[i]);
    printf("forks %d\nok\n", (int)forks);
    return forks > 0 ? 0 : 1;
}

/* Defect 4 / hardened: a double free after other allocations of the same
 * size (the slot would be reused at once without the quarantine). */
static int double_free_after_reuse(void) {
    char *p = malloc(48);
    free(p);
    char *q = malloc(48);
    if (q == p) { printf("reused at once\n"); return 1; }
    free(p); /* must be refused */
    printf("ok\n");
    return 0;
}

/* Hardened: an 8-byte overflow past the request is caught at free. */
static int overflow_canary(void) {
    char *p = malloc(24);
    memset(p, 'x', 32);
    free(p);
    printf("ok\n");
    return 0;
}

/* Hardened: a write after free is caught when the slot is handed out again. */
static int write_after_free(void) {
    char *p = malloc(64);
    free(p);
    p[3] = 1;
    for (int i = 0; i < 5000; i++) free(malloc(64));
    printf("ok\n");
    return 0;
}

/* Hardened: malloc(0) gives a unique pointer whose memory faults. */
static int zero_size_faults(void) {
    volatile char *p = malloc(0), *q = malloc(0);
    if (!p || p == q) return 1;
    free((void *)q);
    return p[0] == 42 ? 2 : 3; /* faults before returning */
}

/* Hardened: a freed huge block is unmapped (reading it faults). */
static int freed_huge_faults(void) {
    volatile char *p = malloc(8u << 20);
    p[0] = 1;
    free((void *)p);
    return p[0] == 1 ? 2 : 3;
}

/* malloc_usable_size of a pointer that is not an allocation is refused. */
static int usable_size_invalid(void) {
    char *p = malloc(100);
    size_t n = malloc_usable_size(p + 16);
    printf("usable %zu\nok\n", n);
    return 0;
}

/* free_sized with a size that does not match is refused; a matching one is obeyed. */
static int sized_free_mismatch(void) {
    if (!free_sized) { printf("ok\n"); return 0; }
    char *p = malloc(100);
    free_sized(p, 100);
    p = malloc(100);
    free_sized(p, 5000);
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(void); } cases[] = {
        {"many_medium", many_medium},
        {"realloc_growth", realloc_growth},
        {"huge_sizes", huge_sizes},
        {"double_free", double_free},
        {"wild_free", wild_free},
        {"fork_deadlock", fork_deadlock},
        {"fork_in_signal", fork_in_signal},
        {"double_free_after_reuse", double_free_after_reuse},
        {"overflow_canary", overflow_canary},
        {"write_after_free", write_after_free},
        {"zero_size_faults", zero_size_faults},
        {"freed_huge_faults", freed_huge_faults},
        {"usable_size_invalid", usable_size_invalid},
        {"sized_free_mismatch", sized_free_mismatch},
    };
    if (argc < 2) return 64;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(argv[1], cases[i].name)) return cases[i].fn();
    return 64;
}
