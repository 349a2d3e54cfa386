/* Load generator for bench/pool.py: N client threads on a Unix socket, each
 * keeping a window of frame jobs in flight (4-byte big-endian length +
 * payload each way, results in order), checking every result.
 *
 * With -P POOL each connection first sends {"command":"call","pool":"POOL"}
 * and reads forkd's one-line reply (forkctl call's upgrade); without it the
 * socket speaks frames from the start (a pool service, the C broker).
 *
 * The threads connect (and upgrade) first, then start together; the figures
 * count only the results that arrive during the measured -d seconds after a
 * -W warm-up.  Latency is per job, from writing its frame to reading its
 * result, so with -w 1 it is the round trip of one job in flight.
 *
 * usage: frame_loadgen -u PATH [-P POOL] [-c CLIENTS] [-w WINDOW] [-s SIZE]
 *                      [-d SECONDS] [-W WARMUP] [-x upper|echo|sha256|none]
 *                      [-t TIMEOUT]
 * prints one line: clients= window= size= seconds= jobs= rate= jobs_total=
 *   errors= err_frames= wrong= p50_us= p99_us= samples= cpu_s=
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum check { UPPER, ECHO, SHA256, NONE };

static const char *path, *pool;
static int clients = 8, window = 16, timeout_s = 5;
static size_t size = 64;
static double seconds = 3, warmup = 0.5;
static enum check check_kind = UPPER;

static atomic_int stop, measuring;
static pthread_barrier_t ready;

struct client {
    pthread_t thread;
    int id;
    atomic_ullong done; /* results read */
    unsigned long long errors, err_frames, wrong;
    double *samples;
    size_t nsamples, max_samples;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int connect_unix(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* forkctl call's upgrade: one JSON line each way, byte by byte so that no
 * frame byte is read past the reply. */
static int upgrade(int fd, int id)
{
    char line[512];
    int n = snprintf(line, sizeof line, "{\"command\":\"call\",\"pool\":\"%s\"}\n", pool);
    if (write_all(fd, (uint8_t *)line, (size_t)n) < 0)
        return -1;
    size_t got = 0;
    while (got < sizeof line - 1) {
        ssize_t r = read(fd, line + got, 1);
        if (r <= 0)
            return -1;
        if (line[got++] == '\n')
            break;
    }
    line[got] = 0;
    if (!strstr(line, "\"ok\":true")) {
        if (id == 0)
            fprintf(stderr, "frame_loadgen: forkd refused the call: %s", line);
        return -1;
    }
    return 0;
}

static int is_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static void *run(void *arg)
{
    struct client *c = arg;
    size_t flen = 4 + size;
    uint8_t *payload = malloc(size + 1), *expect = malloc(size + 1);
    uint8_t *sendbuf = malloc(flen * (size_t)window);
    size_t rcap = 2 * (4 + (size > 64 ? size : 64)) + (64 << 10);
    uint8_t *rbuf = malloc(rcap);
    double *sent_at = calloc((size_t)window, sizeof *sent_at);
    if (!payload || !expect || !sendbuf || !rbuf || !sent_at) {
        perror("malloc");
        exit(1);
    }
    for (size_t i = 0; i < size; i++) {
        payload[i] = (uint8_t)('a' + (i + (size_t)c->id) % 26);
        expect[i] = check_kind == UPPER ? (uint8_t)(payload[i] - 32) : payload[i];
    }
    for (int k = 0; k < window; k++) {
        uint8_t *f = sendbuf + (size_t)k * flen;
        f[0] = (uint8_t)(size >> 24), f[1] = (uint8_t)(size >> 16);
        f[2] = (uint8_t)(size >> 8), f[3] = (uint8_t)size;
        memcpy(f + 4, payload, size);
    }
    int fd = connect_unix();
    if (fd < 0 && c->id == 0)
        fprintf(stderr, "frame_loadgen: connect %s: %s\n", path, strerror(errno));
    if (fd >= 0 && pool && upgrade(fd, c->id) < 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        c->errors++;
    pthread_barrier_wait(&ready);
    if (fd < 0)
        goto out;

    unsigned long long seq = 0, rseq = 0;
    size_t rlen = 0, rstart = 0;
    for (;;) {
        int in_flight = (int)(seq - rseq);
        if (!atomic_load_explicit(&stop, memory_order_relaxed) && in_flight < window) {
            int k = window - in_flight;
            double t = now_s();
            for (int j = 0; j < k; j++)
                sent_at[(seq + (unsigned)j) % (unsigned)window] = t;
            if (write_all(fd, sendbuf, (size_t)k * flen) < 0) {
                c->errors++;
                break;
            }
            seq += (unsigned)k;
        }
        if (seq == rseq)
            break;
        if (rstart == rlen)
            rstart = rlen = 0;
        else if (rcap - rlen < (64 << 10)) {
            memmove(rbuf, rbuf + rstart, rlen - rstart);
            rlen -= rstart;
            rstart = 0;
        }
        ssize_t n = read(fd, rbuf + rlen, rcap - rlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (c->id == 0 || c->errors == 0)
                fprintf(stderr, "frame_loadgen: client %d: %s with %d jobs in flight\n", c->id,
                        n == 0 ? "the server closed the connection" : strerror(errno),
                        (int)(seq - rseq));
            c->errors++;
            break;
        }
        rlen += (size_t)n;
        double t = now_s();
        int measure = atomic_load_explicit(&measuring, memory_order_relaxed);
        unsigned long long got = 0;
        while (rlen - rstart >= 4) {
            const uint8_t *f = rbuf + rstart;
            uint32_t len = ((uint32_t)f[0] << 24) | ((uint32_t)f[1] << 16) |
                           ((uint32_t)f[2] << 8) | f[3];
            if (rlen - rstart < 4 + (size_t)len)
                break;
            const uint8_t *body = f + 4;
            if (len >= 4 && !memcmp(body, "ERR ", 4)) {
                if (c->err_frames++ == 0 && c->id == 0)
                    fprintf(stderr, "frame_loadgen: %.*s\n", (int)(len < 200 ? len : 200), body);
            } else if ((check_kind == UPPER || check_kind == ECHO)
                           ? (len != size || memcmp(body, expect, size))
                           : check_kind == SHA256 ? (len != 64 || !is_hex(body, 64)) : 0) {
                c->wrong++;
            }
            if (measure && c->nsamples < c->max_samples)
                c->samples[c->nsamples++] = (t - sent_at[rseq % (unsigned)window]) * 1e6;
            rstart += 4 + len;
            rseq++;
            got++;
        }
        atomic_fetch_add_explicit(&c->done, got, memory_order_relaxed);
    }
    close(fd);
out:
    free(payload);
    free(expect);
    free(sendbuf);
    free(rbuf);
    free(sent_at);
    return NULL;
}

static unsigned long long total_done(struct client *cs)
{
    unsigned long long n = 0;
    for (int i = 0; i < clients; i++)
        n += atomic_load(&cs[i].done);
    return n;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int opt;
    const char *x = "upper";
    while ((opt = getopt(argc, argv, "u:P:c:w:s:d:W:x:t:")) != -1) {
        switch (opt) {
        case 'u': path = optarg; break;
        case 'P': pool = optarg; break;
        case 'c': clients = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'W': warmup = atof(optarg); break;
        case 'x': x = optarg; break;
        case 't': timeout_s = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (!strcmp(x, "upper"))
        check_kind = UPPER;
    else if (!strcmp(x, "echo"))
        check_kind = ECHO;
    else if (!strcmp(x, "sha256"))
        check_kind = SHA256;
    else if (!strcmp(x, "none"))
        check_kind = NONE;
    else
        goto usage;
    if (!path || clients < 1 || clients > 256 || window < 1 || window > 256 || size > (16 << 20) ||
        !(seconds > 0 && seconds <= 600) || warmup < 0 || warmup > 60 || timeout_s < 1 ||
        timeout_s > 60)
        goto usage;

    struct client *cs = calloc((size_t)clients, sizeof *cs);
    size_t per = (size_t)(1 << 21) / (size_t)clients;
    for (int i = 0; i < clients; i++) {
        cs[i].id = i;
        cs[i].max_samples = per;
        cs[i].samples = malloc(per * sizeof(double));
        if (!cs[i].samples) {
            perror("malloc");
            return 1;
        }
    }
    pthread_barrier_init(&ready, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++)
        if (pthread_create(&cs[i].thread, NULL, run, &cs[i])) {
            perror("pthread_create");
            return 1;
        }
    pthread_barrier_wait(&ready);
    sleep_s(warmup);
    unsigned long long d0 = total_done(cs);
    double t0 = now_s();
    atomic_store(&measuring, 1);
    sleep_s(seconds);
    atomic_store(&measuring, 0);
    unsigned long long d1 = total_done(cs);
    double t1 = now_s();
    atomic_store(&stop, 1);
    for (int i = 0; i < clients; i++)
        pthread_join(cs[i].thread, NULL);

    unsigned long long errors = 0, err_frames = 0, wrong = 0;
    size_t ns = 0;
    for (int i = 0; i < clients; i++) {
        errors += cs[i].errors;
        err_frames += cs[i].err_frames;
        wrong += cs[i].wrong;
        ns += cs[i].nsamples;
    }
    double *all = malloc((ns ? ns : 1) * sizeof *all);
    size_t at = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + at, cs[i].samples, cs[i].nsamples * sizeof *all);
        at += cs[i].nsamples;
    }
    qsort(all, ns, sizeof *all, cmp_double);
    double p50 = ns ? all[ns / 2] : 0;
    size_t i99 = (size_t)((double)ns * 0.99);
    double p99 = ns ? all[i99 < ns ? i99 : ns - 1] : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("clients=%d window=%d size=%zu seconds=%.3f jobs=%llu rate=%.1f jobs_total=%llu "
           "errors=%llu err_frames=%llu wrong=%llu p50_us=%.1f p99_us=%.1f samples=%zu "
           "cpu_s=%.3f\n",
           clients, window, size, t1 - t0, d1 - d0, (double)(d1 - d0) / (t1 - t0),
           total_done(cs), errors, err_frames, wrong, p50, p99, ns, cpu);
    return 0;

usage:
    fprintf(stderr, "usage: frame_loadgen -u PATH [-P POOL] [-c CLIENTS 1..256] [-w WINDOW 1..256] "
                    "[-s SIZE] [-d SECONDS] [-W WARMUP] [-x upper|echo|sha256|none] [-t TIMEOUT]\n");
    return 2;
}
