/* A minimal single-threaded job broker, the C peer of a forkd pool for
 * bench/pool.py: clients on a Unix socket send frames (4-byte big-endian
 * length + payload), each frame is a job sent over a pipe to the least
 * loaded of WORKERS forked workers, and results go back to their client as
 * frames, in the order the client sent the jobs.
 *
 * One epoll loop, edge-triggered, non-blocking everything; per client a
 * receive buffer, an output buffer and the results that came back early;
 * per worker an output buffer and the FIFO of jobs it holds (a worker
 * answers in order).  What a read brings in is parsed whole and written
 * on with one write per destination (nothing waits for that: it is all
 * there).  Workers block: read what is there, upper-case (or echo) each
 * whole frame in place and write it back at once, one write per result.
 * Pipes are 1 MiB deep, as forkd's.
 *
 * usage: pool_broker PATH [WORKERS] [upper|echo]
 * Prints "ready" once it listens.  Runs until killed; workers die with it
 * (PDEATHSIG, and EOF on their pipe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FD 4096
#define MAX_WORKERS 64
#define MAX_FRAME (16u << 20)
#define READ_CHUNK (64 << 10)

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ---- growable byte buffer with a consumed prefix ---- */

struct buf {
    uint8_t *p;
    size_t off, len, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= more)
        return;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= more)
            return;
    }
    size_t cap = b->cap ? b->cap : READ_CHUNK;
    while (cap - b->len < more)
        cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p)
        die("realloc");
    b->cap = cap;
}

static void buf_add(struct buf *b, const uint8_t *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Reads until EAGAIN; 0 on EOF or error. */
static int buf_read_all(struct buf *b, int fd)
{
    for (;;) {
        buf_reserve(b, READ_CHUNK);
        ssize_t n = read(fd, b->p + b->len, b->cap - b->len);
        if (n > 0) {
            b->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        return 0;
    }
}

/* Writes until done or EAGAIN; 0 on error. */
static int buf_flush(struct buf *b, int fd)
{
    while (b->off < b->len) {
        ssize_t n = write(fd, b->p + b->off, b->len - b->off);
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && errno == EAGAIN;
    }
    return 1;
}

/* The next whole frame at b->off: its length (payload), or -1. */
static long next_frame(struct buf *b)
{
    size_t have = b->len - b->off;
    if (have < 4)
        return -1;
    const uint8_t *h = b->p + b->off;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (n > MAX_FRAME)
        return -2;
    return have >= 4 + (size_t)n ? (long)n : -1;
}

/* ---- clients and workers ---- */

struct result {
    uint8_t *frame; /* NULL until the job is done */
    size_t len;
};

struct client {
    int open;
    unsigned gen;
    struct buf in, out;
    /* results of jobs first_seq.. (a ring, grown as needed) */
    struct result *pending;
    size_t cap, head, count;
    uint64_t first_seq, next_seq;
};

struct job {
    int fd;
    unsigned gen;
    uint64_t seq;
};

struct worker {
    int to, from;
    struct buf out, in;
    struct job *fifo;
    size_t cap, head, count;
};

static struct client clients[MAX_FD];
static struct worker workers[MAX_WORKERS];
static int nworkers = 2, do_upper = 1, ep;

static void watch(int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
        die("epoll_ctl");
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A worker answers each job as soon as it is done, one write per result
 * (as forkd's workers do): holding results to write several at once would
 * keep a fast job's result waiting behind the slow jobs read with it. */
static void worker_main(int in, int out)
{
    static uint8_t buf[4 << 20];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(in, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        len += (size_t)n;
        size_t at = 0;
        while (len - at >= 4) {
            uint32_t f = ((uint32_t)buf[at] << 24) | ((uint32_t)buf[at + 1] << 16) |
                         ((uint32_t)buf[at + 2] << 8) | buf[at + 3];
            if (4 + (size_t)f > sizeof buf)
                _exit(1);
            if (len - at < 4 + (size_t)f)
                break;
            if (do_upper)
                for (size_t i = at + 4; i < at + 4 + f; i++)
                    if (buf[i] >= 'a' && buf[i] <= 'z')
                        buf[i] -= 32;
            for (size_t done = 0; done < 4 + (size_t)f;) {
                ssize_t w = write(out, buf + at + done, 4 + (size_t)f - done);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    _exit(1);
                done += (size_t)w;
            }
            at += 4 + f;
        }
        memmove(buf, buf + at, len - at);
        len -= at;
    }
}

static void spawn_workers(void)
{
    for (int i = 0; i < nworkers; i++) {
        int a[2], b[2];
        if (pipe2(a, O_CLOEXEC) || pipe2(b, O_CLOEXEC))
            die("pipe2");
        fcntl(a[1], F_SETPIPE_SZ, 1 << 20);
        fcntl(b[0], F_SETPIPE_SZ, 1 << 20);
        pid_t parent = getpid(), pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(1);
            for (int j = 0; j < i; j++) {
                close(workers[j].to);
                close(workers[j].from);
            }
            close(a[1]);
            close(b[0]);
            worker_main(a[0], b[1]);
        }
        close(a[0]);
        close(b[1]);
        workers[i].to = a[1];
        workers[i].from = b[0];
        nonblock(a[1]);
        nonblock(b[0]);
        watch(a[1], EPOLLOUT);
        watch(b[0], EPOLLIN);
    }
}

static struct worker *worker_of_fd(int fd)
{
    for (int i = 0; i < nworkers; i++)
        if (workers[i].to == fd || workers[i].from == fd)
            return &workers[i];
    return NULL;
}

static void close_client(int fd)
{
    struct client *c = &clients[fd];
    for (size_t k = 0; k < c->count; k++)
        free(c->pending[(c->head + k) % c->cap].frame);
    free(c->pending);
    free(c->in.p);
    free(c->out.p);
    unsigned gen = c->gen + 1;
    memset(c, 0, sizeof *c);
    c->gen = gen; /* results still held by workers for it are dropped */
    close(fd);
}

/* A client's new frames become jobs of the least-loaded workers. */
static void client_readable(int fd)
{
    struct client *c = &clients[fd];
    int alive = buf_read_all(&c->in, fd);
    int touched[MAX_WORKERS] = {0};
    long n;
    while ((n = next_frame(&c->in)) >= 0) {
        struct worker *w = &workers[0];
        for (int i = 1; i < nworkers; i++)
            if (workers[i].count < w->count)
                w = &workers[i];
        buf_add(&w->out, c->in.p + c->in.off, 4 + (size_t)n);
        c->in.off += 4 + (size_t)n;
        if (w->count == w->cap) {
            size_t cap = w->cap ? 2 * w->cap : 256;
            struct job *f = malloc(cap * sizeof *f);
            for (size_t k = 0; k < w->count; k++)
                f[k] = w->fifo[(w->head + k) % w->cap];
            free(w->fifo);
            w->fifo = f, w->cap = cap, w->head = 0;
        }
        w->fifo[(w->head + w->count++) % w->cap] = (struct job){fd, c->gen, c->next_seq};
        if (c->count == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 64;
            struct result *r = malloc(cap * sizeof *r);
            for (size_t k = 0; k < c->count; k++)
                r[k] = c->pending[(c->head + k) % c->cap];
            free(c->pending);
            c->pending = r, c->cap = cap, c->head = 0;
        }
        c->pending[(c->head + c->count++) % c->cap] = (struct result){NULL, 0};
        c->next_seq++;
        touched[w - workers] = 1;
    }
    for (int i = 0; i < nworkers; i++)
        if (touched[i] && !buf_flush(&workers[i].out, workers[i].to))
            die("write to a worker");
    if (!alive || n == -2)
        close_client(fd);
}

/* Results in job order onto the client's output. */
static void client_deliver(struct client *c)
{
    while (c->count > 0 && c->pending[c->head].frame) {
        struct result *r = &c->pending[c->head];
        buf_add(&c->out, r->frame, r->len);
        free(r->frame);
        r->frame = NULL;
        c->head = (c->head + 1) % c->cap;
        c->count--;
        c->first_seq++;
    }
}

static void worker_readable(struct worker *w)
{
    if (!buf_read_all(&w->in, w->from)) {
        fprintf(stderr, "pool_broker: a worker closed its pipe\n");
        exit(1);
    }
    static int touched[MAX_FD];
    static int ntouched;
    ntouched = 0;
    long n;
    while ((n = next_frame(&w->in)) >= 0) {
        if (w->count == 0) {
            fprintf(stderr, "pool_broker: a result for no job\n");
            exit(1);
        }
        struct job j = w->fifo[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
        const uint8_t *frame = w->in.p + w->in.off;
        size_t len = 4 + (size_t)n;
        w->in.off += len;
        struct client *c = &clients[j.fd];
        if (!c->open || c->gen != j.gen)
            continue;
        struct result *r = &c->pending[(c->head + (j.seq - c->first_seq)) % c->cap];
        if (j.seq == c->first_seq) {
            /* the oldest job: straight to the output, no copy kept */
            buf_add(&c->out, frame, len);
            c->head = (c->head + 1) % c->cap;
            c->count--;
            c->first_seq++;
            client_deliver(c);
        } else {
            r->frame = malloc(len);
            memcpy(r->frame, frame, len);
            r->len = len;
        }
        if (c->out.len > c->out.off) {
            int seen = 0;
            for (int k = 0; k < ntouched; k++)
                seen |= touched[k] == j.fd;
            if (!seen)
                touched[ntouched++] = j.fd;
        }
    }
    for (int k = 0; k < ntouched; k++)
        if (clients[touched[k]].open && !buf_flush(&clients[touched[k]].out, touched[k]))
            close_client(touched[k]);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4)
        goto usage;
    if (argc >= 3)
        nworkers = atoi(argv[2]);
    if (argc == 4) {
        if (!strcmp(argv[3], "echo"))
            do_upper = 0;
        else if (strcmp(argv[3], "upper"))
            goto usage;
    }
    if (nworkers < 1 || nworkers > MAX_WORKERS)
        goto usage;
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    spawn_workers();

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    unlink(argv[1]);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1024))
        die("listen");
    watch(lfd, EPOLLIN);
    printf("ready\n");
    fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (c >= MAX_FD) {
                        close(c);
                        continue;
                    }
                    clients[c].open = 1;
                    watch(c, EPOLLIN | EPOLLOUT);
                }
                continue;
            }
            struct worker *w = worker_of_fd(fd);
            if (w) {
                if (fd == w->from)
                    worker_readable(w);
                else if (!buf_flush(&w->out, w->to))
                    die("write to a worker");
                continue;
            }
            if (!clients[fd].open)
                continue;
            if (evs[i].events & EPOLLOUT && !buf_flush(&clients[fd].out, fd)) {
                close_client(fd);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                client_readable(fd);
        }
    }

usage:
    fprintf(stderr, "usage: pool_broker PATH [WORKERS 1..64] [upper|echo]\n");
    return 2;
}
