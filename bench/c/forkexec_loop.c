/* Raw fork + execv("/bin/true") + waitpid loop: the ceiling for a
 * supervisor's spawn-and-reap rate on this machine.
 *
 * usage: forkexec_loop [-n COUNT] [-t SECONDS] [-p PATH]
 * Stops at COUNT spawns or after SECONDS, whichever comes first (defaults:
 * 1000000 spawns, 5 s).  Prints "spawns=N seconds=S rate=R" on stdout. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long count = 1000000;
    double seconds = 5.0;
    const char *path = "/bin/true";
    int opt;
    while ((opt = getopt(argc, argv, "n:t:p:")) != -1) {
        switch (opt) {
        case 'n': count = atol(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'p': path = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-n COUNT] [-t SECONDS] [-p PATH]\n", argv[0]);
            return 2;
        }
    }
    if (count <= 0 || seconds <= 0 || seconds > 3600) {
        fprintf(stderr, "count must be > 0 and seconds in (0, 3600]\n");
        return 2;
    }
    char *const args[] = {(char *)path, NULL};
    double start = now(), deadline = start + seconds;
    long done = 0, failed = 0;
    while (done < count && now() < deadline) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            execv(path, args);
            _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                perror("waitpid");
                return 1;
            }
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
        done++;
    }
    double elapsed = now() - start;
    printf("spawns=%ld failed=%ld seconds=%.3f rate=%.1f\n", done, failed, elapsed,
           elapsed > 0 ? (double)done / elapsed : 0.0);
    return failed ? 1 : 0;
}
