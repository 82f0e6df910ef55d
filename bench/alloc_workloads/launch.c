/* Runs a workload with LD_PRELOAD=$WORKLOAD_PRELOAD (if set) and prints its
 * peak RSS in KiB (ru_maxrss of the child) on stdout. A small launcher
 * because ru_maxrss survives exec: forked from Python, the child would
 * start at Python's RSS. Usage: launch PROGRAM ARGS... */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    pid_t pid = fork();
    if (pid == 0) {
        const char *lib = getenv("WORKLOAD_PRELOAD");
        if (lib && *lib) setenv("LD_PRELOAD", lib, 1);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) != pid) return 70;
    printf("%ld\n", ru.ru_maxrss);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
