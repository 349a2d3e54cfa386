/* Load generator for the upper-case echo protocol (one thread per
 * connection slot; blocking sockets with poll()-bounded waits).
 *
 * usage: loadgen [-H HOST] -p PORT [-m conn|keepalive] [-c CONCURRENCY]
 *                [-d SECONDS] [-s SIZE] [-t IO_TIMEOUT]
 *
 *   conn       each slot repeats: connect, write SIZE bytes, read the full
 *              SIZE-byte reply, check it, close.  Counts connections/s.
 *   keepalive  each slot opens one connection and repeats request/reply on
 *              it (reconnecting after an error).  Counts requests/s.
 *
 * Everything is bounded: the run stops at -d seconds (default 3, max 600);
 * a single wait (connect, read, write) gives up after -t seconds (default
 * 2) and counts as a timeout error.  A request still in flight when the
 * run ends (or completing after it) is counted as "unfinished", not as an
 * error or a request.
 *
 * Output, one line:  mode=.. concurrency=.. seconds=.. requests=.. rps=..
 *   errors=.. refused=.. reset=.. short=.. wrong=.. timeout=.. other=..
 *   unfinished=..
 * Exit status 0 if at least one request completed, else 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { E_REFUSED, E_RESET, E_SHORT, E_WRONG, E_TIMEOUT, E_OTHER, E_COUNT };
static const char *const e_names[E_COUNT] = {"refused", "reset", "short",
                                             "wrong", "timeout", "other"};

static struct sockaddr_in g_addr;
static int g_keepalive;
static int g_size = 64;
static double g_io_timeout = 2.0;
static double g_deadline;
static pthread_barrier_t g_start;

struct slot {
    pthread_t tid;
    unsigned id;
    long requests;
    long errors[E_COUNT];
    long unfinished;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Outcome of one bounded wait. */
enum { W_READY, W_TIMEOUT, W_OVER };

/* Wait for fd to become ready for ev, up to the io timeout or the end of
 * the run, whichever is first. */
static int wait_fd(int fd, short ev, double op_start)
{
    for (;;) {
        double t = now();
        double limit = op_start + g_io_timeout;
        double stop = limit < g_deadline ? limit : g_deadline;
        if (t >= stop)
            return t >= g_deadline ? W_OVER : W_TIMEOUT;
        int ms = (int)((stop - t) * 1000.0) + 1;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, ms);
        if (r > 0)
            return W_READY;
        if (r < 0 && errno != EINTR)
            return W_READY; /* let the following call report the error */
    }
}

static int classify(int err)
{
    switch (err) {
    case ECONNREFUSED: return E_REFUSED;
    case ECONNRESET:
    case EPIPE: return E_RESET;
    case ETIMEDOUT: return E_TIMEOUT;
    default: return E_OTHER;
    }
}

/* Result codes of the helpers below: >= 0 ok, -1 - E_x error, OVER. */
#define OVER (-100)

static int do_connect(void)
{
    double t0 = now();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1 - E_OTHER;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0) {
        if (errno != EINPROGRESS) {
            int e = classify(errno);
            close(fd);
            return -1 - e;
        }
        int w = wait_fd(fd, POLLOUT, t0);
        if (w != W_READY) {
            close(fd);
            return w == W_OVER ? OVER : -1 - E_TIMEOUT;
        }
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            close(fd);
            return -1 - classify(err);
        }
    }
    return fd;
}

/* One request/reply exchange on fd.  0 = ok. */
static int exchange(int fd, const char *req, char *reply, const char *expect)
{
    double t0 = now();
    size_t off = 0;
    while (off < (size_t)g_size) {
        ssize_t w = send(fd, req + off, (size_t)g_size - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int r = wait_fd(fd, POLLOUT, t0);
                if (r == W_OVER)
                    return OVER;
                if (r == W_TIMEOUT)
                    return -1 - E_TIMEOUT;
                continue;
            }
            return -1 - classify(errno);
        }
        off += (size_t)w;
    }
    off = 0;
    while (off < (size_t)g_size) {
        ssize_t n = recv(fd, reply + off, (size_t)g_size - off, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int r = wait_fd(fd, POLLIN, t0);
                if (r == W_OVER)
                    return OVER;
                if (r == W_TIMEOUT)
                    return -1 - E_TIMEOUT;
                continue;
            }
            return -1 - classify(errno);
        }
        if (n == 0)
            return -1 - E_SHORT;
        off += (size_t)n;
    }
    if (memcmp(reply, expect, (size_t)g_size) != 0)
        return -1 - E_WRONG;
    return 0;
}

/* A request with lower-case letters, digits and punctuation that varies
 * with the counter, and its expected upper-cased reply. */
static void make_request(char *req, char *expect, unsigned id, unsigned long n)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789 -_.:ABCXYZ";
    unsigned long x = (n * 2654435761UL) ^ ((unsigned long)id << 20);
    for (int i = 0; i < g_size; i++) {
        x = x * 6364136223846793005UL + 1442695040888963407UL;
        char c = alphabet[(x >> 33) % (sizeof alphabet - 1)];
        req[i] = c;
        expect[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    req[g_size - 1] = '\n';
    expect[g_size - 1] = '\n';
}

static void backoff_after_error(void)
{
    /* Keep a refusing server from turning the client into a busy loop. */
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static void *run_slot(void *arg)
{
    struct slot *s = arg;
    char *req = malloc((size_t)g_size * 3);
    if (!req)
        return NULL;
    char *expect = req + g_size, *reply = req + 2 * g_size;
    unsigned long n = 0;
    int fd = -1;
    pthread_barrier_wait(&g_start);
    while (now() < g_deadline) {
        if (fd < 0) {
            fd = do_connect();
            if (fd == OVER) {
                fd = -1;
                break;
            }
            if (fd < 0) {
                s->errors[-1 - fd]++;
                fd = -1;
                backoff_after_error();
                continue;
            }
        }
        make_request(req, expect, s->id, n++);
        int r = exchange(fd, req, reply, expect);
        if (r == OVER || (r == 0 && now() > g_deadline)) {
            s->unfinished++; /* still in flight, or completed after the end */
            break;
        }
        if (r < 0) {
            s->errors[-1 - r]++;
            close(fd);
            fd = -1;
            backoff_after_error();
            continue;
        }
        s->requests++;
        if (!g_keepalive) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    free(req);
    return NULL;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-H HOST] -p PORT [-m conn|keepalive] [-c CONCURRENCY]\n"
            "          [-d SECONDS] [-s SIZE] [-t IO_TIMEOUT]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = -1, conc = 1, opt;
    double duration = 3.0;
    while ((opt = getopt(argc, argv, "H:p:m:c:d:s:t:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'm':
            if (strcmp(optarg, "conn") == 0)
                g_keepalive = 0;
            else if (strcmp(optarg, "keepalive") == 0)
                g_keepalive = 1;
            else
                usage(argv[0]);
            break;
        case 'c': conc = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 's': g_size = atoi(optarg); break;
        case 't': g_io_timeout = atof(optarg); break;
        default: usage(argv[0]);
        }
    }
    if (port <= 0 || port > 65535 || conc < 1 || conc > 4096 || duration <= 0 ||
        duration > 600 || g_size < 1 || g_size > 1 << 20 || g_io_timeout <= 0)
        usage(argv[0]);
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address: %s\n", host);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct slot *slots = calloc((size_t)conc, sizeof *slots);
    if (!slots) {
        perror("calloc");
        return 1;
    }
    pthread_barrier_init(&g_start, NULL, (unsigned)conc + 1);
    g_deadline = now() + 3600; /* placeholder until every thread is ready */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < conc; i++) {
        slots[i].id = (unsigned)i;
        if (pthread_create(&slots[i].tid, &attr, run_slot, &slots[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    double start = now();
    g_deadline = start + duration;
    pthread_barrier_wait(&g_start);
    long requests = 0, errors[E_COUNT] = {0}, unfinished = 0, total_err = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(slots[i].tid, NULL);
        requests += slots[i].requests;
        unfinished += slots[i].unfinished;
        for (int e = 0; e < E_COUNT; e++)
            errors[e] += slots[i].errors[e];
    }
    double elapsed = now() - start;
    for (int e = 0; e < E_COUNT; e++)
        total_err += errors[e];
    printf("mode=%s concurrency=%d seconds=%.3f requests=%ld rps=%.1f errors=%ld",
           g_keepalive ? "keepalive" : "conn", conc, elapsed, requests,
           elapsed > 0 ? (double)requests / elapsed : 0.0, total_err);
    for (int e = 0; e < E_COUNT; e++)
        printf(" %s=%ld", e_names[e], errors[e]);
    printf(" unfinished=%ld\n", unfinished);
    return requests > 0 ? 0 : 1;
}
