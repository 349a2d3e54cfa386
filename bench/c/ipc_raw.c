/* Raw IPC baselines for bench/ipc.py: the echo exchange of
 * examples/ipc_bench.rs between a parent and one forked child, with nothing
 * but the bare mechanism:
 *
 *   pipe    a request and a response pipe, 1 MiB deep (F_SETPIPE_SZ, as
 *           forkd asks);
 *   mqueue  a request and a response POSIX queue of 4 messages x 8 KiB (as
 *           forkd's), frames as a byte stream cut into messages (a burst of
 *           small frames shares one, a large frame spans many);
 *   shm     one MAP_SHARED|MAP_ANONYMOUS mapping with a request and a
 *           response ring of 16 page-aligned 64 KiB slots, full/empty counts
 *           in sem_t's made with sem_init(pshared = 1), and a third sem_t
 *           the child posts after each slot it frees or fills, which the
 *           parent waits on when it can do nothing else.
 *
 * Frames are a 4-byte big-endian length and the payload.  The parent never
 * blocks in a send: each frame is queued and written at once if the
 * transport takes it (as forkd's Parent::send), the rest when poll(2) says
 * there is room; it takes responses in until the transport is empty.  The
 * shm parent has no fd to poll: it waits in sem_timedwait on the wake-up
 * semaphore (a response slot, or request room: a 1 MiB frame takes 17
 * slots, so the child may need room before it can answer; waiting only for
 * responses would deadlock).  The child blocks, takes each
 * whole frame in and writes it back, one write per frame, straight from its
 * receive buffer.
 *
 * Tests and output as ipc_bench: rate (64 B, window -w), latency (64 B, one
 * in flight), bulk (1 MiB, window -W); one key=value line per test.
 *
 * -p split runs the parent on CPU 0 and the child on CPU 1, -p same both on
 * CPU 0 (as ipc_bench --pin).
 *
 * usage: ipc_raw -t pipe|mqueue|shm [-s SECONDS] [-w WINDOW] [-W BULK_WINDOW]
 *                [-T rate,latency,bulk] [-p none|same|split]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <poll.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SMALL 64
#define BULK (1 << 20)
#define MAX_FRAME (BULK + 4)
#define RX_CAP (4 * MAX_FRAME)
#define MQ_MSGS 4
#define MQ_SIZE 8192
#define SLOTS 16
#define SLOT_SIZE (64 << 10)
#define PAGE 4096
#define STALL_S 5
#define MAX_SAMPLES (1 << 20)
#define QCAP 4096

enum transport { PIPE, MQUEUE, SHM };
static enum transport transport;
static const char *tname;

static void die(const char *what)
{
    fprintf(stderr, "ipc_raw %s: %s: %s\n", tname, what, strerror(errno));
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ---- receive buffer: bytes in, whole frames out, in place ---- */

struct rx {
    uint8_t *buf;
    size_t start, len;
};

/* Room for at least `need` more bytes, keeping any partial frame whole.
 * Compacts only when a frame starting at `start` might not fit, so a large
 * partial frame is rarely moved. */
static void rx_room(struct rx *r, size_t need)
{
    if (r->start == r->len) {
        r->start = r->len = 0;
    } else if (r->start > 0 && (RX_CAP - r->start < 2 * MAX_FRAME || RX_CAP - r->len < need)) {
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
    }
}

/* The next whole frame (header included), or 0. */
static int rx_frame(struct rx *r, const uint8_t **frame, size_t *flen)
{
    size_t have = r->len - r->start;
    if (have < 4)
        return 0;
    uint32_t n = be32(r->buf + r->start);
    if (n > BULK) {
        fprintf(stderr, "ipc_raw %s: a frame of %u bytes\n", tname, n);
        exit(1);
    }
    if (have < 4 + (size_t)n)
        return 0;
    *frame = r->buf + r->start;
    *flen = 4 + n;
    r->start += 4 + n;
    return 1;
}

/* ---- shm layout ---- */

struct ring {
    sem_t full;
    char pad0[64 - sizeof(sem_t) % 64];
    sem_t empty;
    char pad1[64 - sizeof(sem_t) % 64];
    uint32_t lens[SLOTS];
};

struct shm {
    struct ring *ring[2]; /* 0: requests, 1: responses */
    sem_t *wake;          /* posted by the child after each slot it frees or fills */
    uint8_t *slots[2];
    uint32_t posted, taken; /* this side's own counts */
};

static struct shm shm_map(void)
{
    size_t ring_bytes = PAGE + (size_t)SLOTS * SLOT_SIZE;
    uint8_t *base = mmap(NULL, 2 * ring_bytes + PAGE, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        die("mmap");
    struct shm s = {0};
    for (int i = 0; i < 2; i++) {
        s.ring[i] = (struct ring *)(base + i * ring_bytes);
        s.slots[i] = base + i * ring_bytes + PAGE;
        if (sem_init(&s.ring[i]->full, 1, 0) || sem_init(&s.ring[i]->empty, 1, SLOTS))
            die("sem_init");
    }
    s.wake = (sem_t *)(base + 2 * ring_bytes);
    if (sem_init(s.wake, 1, 0))
        die("sem_init");
    return s;
}

/* ---- the channel ---- */

struct out {
    const uint8_t *p;
    size_t len;
};

struct chan {
    int req_w, rsp_r;  /* pipe: parent's ends */
    int req_r, rsp_w;  /* pipe: child's ends */
    mqd_t mq_req, mq_rsp; /* mqueue: parent's ends (non-blocking) */
    mqd_t mq_child_req, mq_child_rsp; /* mqueue: child's ends (blocking) */
    struct shm shm;
    /* parent's queue of frames not wholly written, without copies */
    struct out q[QCAP];
    size_t qhead, qcount, qoff;
    uint8_t msg[MQ_SIZE]; /* mqueue: a cut message the queue refused */
    size_t msg_len;
    struct rx rx;
};

static struct chan ch;

static void setup(void)
{
    ch.rx.buf = malloc(RX_CAP);
    if (!ch.rx.buf)
        die("malloc");
    if (transport == PIPE) {
        int a[2], b[2];
        if (pipe2(a, O_CLOEXEC) || pipe2(b, O_CLOEXEC))
            die("pipe2");
        ch.req_r = a[0], ch.req_w = a[1], ch.rsp_r = b[0], ch.rsp_w = b[1];
        fcntl(ch.req_w, F_SETPIPE_SZ, 1 << 20);
        fcntl(ch.rsp_r, F_SETPIPE_SZ, 1 << 20);
    } else if (transport == MQUEUE) {
        /* Four descriptions, as forkd opens them: the parent's non-blocking
         * ends and the child's blocking ones (O_NONBLOCK belongs to the open
         * description, which a fork shares). */
        struct mq_attr attr = {.mq_maxmsg = MQ_MSGS, .mq_msgsize = MQ_SIZE};
        char req[64], rsp[64];
        snprintf(req, sizeof req, "/forkd-bench-raw.%d.req", (int)getpid());
        snprintf(rsp, sizeof rsp, "/forkd-bench-raw.%d.rsp", (int)getpid());
        mq_unlink(req);
        mq_unlink(rsp);
        int flags = O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC;
        ch.mq_req = mq_open(req, O_WRONLY | flags, 0600, &attr);
        ch.mq_rsp = mq_open(rsp, O_RDONLY | flags, 0600, &attr);
        ch.mq_child_req = mq_open(req, O_RDONLY | O_CLOEXEC);
        ch.mq_child_rsp = mq_open(rsp, O_WRONLY | O_CLOEXEC);
        int saved = errno;
        /* Every end is open: the names can go now, so nothing is left
         * behind whatever happens next. */
        mq_unlink(req);
        mq_unlink(rsp);
        errno = saved;
        if (ch.mq_req == (mqd_t)-1 || ch.mq_rsp == (mqd_t)-1 || ch.mq_child_req == (mqd_t)-1 ||
            ch.mq_child_rsp == (mqd_t)-1)
            die("mq_open");
    } else {
        ch.shm = shm_map();
    }
}

/* ---- parent side (never blocks in a send) ---- */

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void parent_setup(void)
{
    if (transport == PIPE) {
        close(ch.req_r);
        close(ch.rsp_w);
        set_nonblocking(ch.req_w);
        set_nonblocking(ch.rsp_r);
    } else if (transport == MQUEUE) {
        mq_close(ch.mq_child_req);
        mq_close(ch.mq_child_rsp);
    }
}

static void q_advance(size_t n)
{
    while (n > 0 && ch.qcount > 0) {
        struct out *f = &ch.q[ch.qhead];
        size_t left = f->len - ch.qoff;
        if (n < left) {
            ch.qoff += n;
            return;
        }
        n -= left;
        ch.qhead = (ch.qhead + 1) % QCAP;
        ch.qcount--;
        ch.qoff = 0;
    }
}

/* Copies queued bytes, across frames, into dst (at most cap). */
static size_t q_gather(uint8_t *dst, size_t cap)
{
    size_t got = 0, at = ch.qhead, off = ch.qoff;
    for (size_t k = 0; k < ch.qcount && got < cap; k++) {
        struct out *f = &ch.q[at];
        size_t n = f->len - off;
        if (n > cap - got)
            n = cap - got;
        memcpy(dst + got, f->p + off, n);
        got += n;
        off = 0;
        at = (at + 1) % QCAP;
    }
    q_advance(got);
    return got;
}

static void flush(void)
{
    if (transport == PIPE) {
        while (ch.qcount > 0) {
            struct out *f = &ch.q[ch.qhead];
            ssize_t n = write(ch.req_w, f->p + ch.qoff, f->len - ch.qoff);
            if (n < 0) {
                if (errno == EAGAIN)
                    return;
                if (errno == EINTR)
                    continue;
                die("write");
            }
            q_advance((size_t)n);
        }
    } else if (transport == MQUEUE) {
        for (;;) {
            if (ch.msg_len == 0) {
                if (ch.qcount == 0)
                    return;
                struct out *f = &ch.q[ch.qhead];
                if (f->len - ch.qoff >= MQ_SIZE) {
                    /* the middle of a large frame: straight from it */
                    if (mq_send(ch.mq_req, (const char *)f->p + ch.qoff, MQ_SIZE, 0)) {
                        if (errno == EAGAIN)
                            return;
                        die("mq_send");
                    }
                    q_advance(MQ_SIZE);
                    continue;
                }
                ch.msg_len = q_gather(ch.msg, MQ_SIZE);
            }
            if (mq_send(ch.mq_req, (const char *)ch.msg, ch.msg_len, 0)) {
                if (errno == EAGAIN)
                    return;
                die("mq_send");
            }
            ch.msg_len = 0;
        }
    } else {
        struct ring *r = ch.shm.ring[0];
        while (ch.qcount > 0 && sem_trywait(&r->empty) == 0) {
            unsigned slot = ch.shm.posted % SLOTS;
            size_t n = q_gather(ch.shm.slots[0] + (size_t)slot * SLOT_SIZE, SLOT_SIZE);
            r->lens[slot] = (uint32_t)n;
            ch.shm.posted++;
            sem_post(&r->full);
        }
    }
}

static void send_frame(const uint8_t *frame, size_t len)
{
    if (ch.qcount == QCAP) {
        fprintf(stderr, "ipc_raw %s: queue full\n", tname);
        exit(1);
    }
    ch.q[(ch.qhead + ch.qcount) % QCAP] = (struct out){frame, len};
    ch.qcount++;
    flush();
}

/* Takes in everything the transport holds now. */
static void take_in(void)
{
    if (transport == PIPE) {
        for (;;) {
            rx_room(&ch.rx, 64 << 10);
            ssize_t n = read(ch.rsp_r, ch.rx.buf + ch.rx.len, RX_CAP - ch.rx.len);
            if (n > 0) {
                ch.rx.len += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return;
            die(n == 0 ? "the child closed its end" : "read");
        }
    } else if (transport == MQUEUE) {
        for (;;) {
            rx_room(&ch.rx, MQ_SIZE);
            ssize_t n = mq_receive(ch.mq_rsp, (char *)ch.rx.buf + ch.rx.len, MQ_SIZE, NULL);
            if (n >= 0) {
                ch.rx.len += (size_t)n;
                continue;
            }
            if (errno == EAGAIN)
                return;
            die("mq_receive");
        }
    } else {
        struct ring *r = ch.shm.ring[1];
        while (sem_trywait(&r->full) == 0) {
            unsigned slot = ch.shm.taken % SLOTS;
            uint32_t n = r->lens[slot];
            rx_room(&ch.rx, n);
            memcpy(ch.rx.buf + ch.rx.len, ch.shm.slots[1] + (size_t)slot * SLOT_SIZE, n);
            ch.rx.len += n;
            ch.shm.taken++;
            sem_post(&r->empty);
        }
    }
}

/* Waits until the transport has a response or room for queued frames. */
static void wait_ready(void)
{
    if (transport == SHM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += STALL_S;
        while (sem_timedwait(ch.shm.wake, &ts)) {
            if (errno == EINTR)
                continue;
            die(errno == ETIMEDOUT ? "no progress in 5 s" : "sem_timedwait");
        }
        /* One look at both rings answers every wake-up posted so far. */
        while (sem_trywait(ch.shm.wake) == 0)
            ;
        return;
    }
    struct pollfd p[2] = {
        {.fd = transport == PIPE ? ch.rsp_r : (int)ch.mq_rsp, .events = POLLIN},
        {.fd = transport == PIPE ? ch.req_w : (int)ch.mq_req, .events = POLLOUT},
    };
    int busy = ch.qcount > 0 || ch.msg_len > 0;
    int n = poll(p, busy ? 2 : 1, STALL_S * 1000);
    if (n == 0) {
        errno = ETIMEDOUT;
        die("no progress in 5 s");
    }
    if (n < 0 && errno != EINTR)
        die("poll");
}

/* ---- child side (blocking echo) ---- */

static void child_send(const uint8_t *frame, size_t len)
{
    if (transport == PIPE) {
        while (len > 0) {
            ssize_t n = write(ch.rsp_w, frame, len);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                _exit(1);
            }
            frame += n;
            len -= (size_t)n;
        }
    } else if (transport == MQUEUE) {
        for (size_t at = 0; at < len; at += MQ_SIZE) {
            size_t n = len - at < MQ_SIZE ? len - at : MQ_SIZE;
            while (mq_send(ch.mq_child_rsp, (const char *)frame + at, n, 0))
                if (errno != EINTR)
                    _exit(1);
        }
    } else {
        struct ring *r = ch.shm.ring[1];
        for (size_t at = 0; at < len; at += SLOT_SIZE) {
            size_t n = len - at < SLOT_SIZE ? len - at : SLOT_SIZE;
            while (sem_wait(&r->empty))
                if (errno != EINTR)
                    _exit(1);
            unsigned slot = ch.shm.posted % SLOTS;
            memcpy(ch.shm.slots[1] + (size_t)slot * SLOT_SIZE, frame + at, n);
            r->lens[slot] = (uint32_t)n;
            ch.shm.posted++;
            sem_post(&r->full);
            sem_post(ch.shm.wake);
        }
    }
}

static void child_take(void)
{
    struct rx *rx = &ch.rx;
    if (transport == PIPE) {
        rx_room(rx, 64 << 10);
        ssize_t n;
        do
            n = read(ch.req_r, rx->buf + rx->len, RX_CAP - rx->len);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            _exit(n == 0 ? 0 : 1);
        rx->len += (size_t)n;
    } else if (transport == MQUEUE) {
        rx_room(rx, MQ_SIZE);
        ssize_t n;
        do
            n = mq_receive(ch.mq_child_req, (char *)rx->buf + rx->len, MQ_SIZE, NULL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            _exit(1);
        rx->len += (size_t)n;
    } else {
        struct ring *r = ch.shm.ring[0];
        while (sem_wait(&r->full))
            if (errno != EINTR)
                _exit(1);
        unsigned slot = ch.shm.taken % SLOTS;
        uint32_t n = r->lens[slot];
        rx_room(rx, n);
        memcpy(rx->buf + rx->len, ch.shm.slots[0] + (size_t)slot * SLOT_SIZE, n);
        rx->len += n;
        ch.shm.taken++;
        sem_post(&r->empty);
        sem_post(ch.shm.wake);
    }
}

static int parent_cpu = -1, child_cpu = -1;

static void pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set))
        die("sched_setaffinity");
}

static void child_main(pid_t parent)
{
    if (child_cpu >= 0)
        pin_to(child_cpu);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    if (transport == PIPE) {
        close(ch.req_w);
        close(ch.rsp_r);
    } else if (transport == MQUEUE) {
        mq_close(ch.mq_req);
        mq_close(ch.mq_rsp);
    }
    for (;;) {
        child_take();
        const uint8_t *frame;
        size_t len;
        while (rx_frame(&ch.rx, &frame, &len))
            child_send(frame, len);
    }
}

/* ---- the tests ---- */

static uint8_t *make_frame(size_t size)
{
    uint8_t *f = malloc(4 + size);
    if (!f)
        die("malloc");
    f[0] = (uint8_t)(size >> 24), f[1] = (uint8_t)(size >> 16);
    f[2] = (uint8_t)(size >> 8), f[3] = (uint8_t)size;
    for (size_t i = 0; i < size; i++)
        f[4 + i] = (uint8_t)('a' + i % 26);
    return f;
}

/* Same length, same first and last 64 bytes (as ipc_bench checks). */
static void check(const uint8_t *got, size_t glen, const uint8_t *sent, size_t slen)
{
    size_t edge = slen - 4 < SMALL ? slen - 4 : SMALL;
    if (glen != slen || memcmp(got + 4, sent + 4, edge) ||
        memcmp(got + glen - edge, sent + slen - edge, edge)) {
        fprintf(stderr, "ipc_raw %s: a %zu-byte echo came back wrong\n", tname, slen - 4);
        exit(1);
    }
}

static size_t take_frames(const uint8_t *sent, size_t slen)
{
    const uint8_t *f;
    size_t flen, n = 0;
    while (rx_frame(&ch.rx, &f, &flen)) {
        check(f, flen, sent, slen);
        n++;
    }
    return n;
}

static void pipelined(const char *test, size_t size, size_t window, double seconds)
{
    uint8_t *req = make_frame(size);
    double t0 = now_s(), start_at = t0 + seconds / 5, end_at = start_at + seconds;
    uint64_t done = 0, first_n = 0, last_n = 0;
    double first_t = 0, last_t = 0;
    size_t in_flight = 0;
    int sending = 1;
    for (;;) {
        while (sending && in_flight < window) {
            send_frame(req, 4 + size);
            in_flight++;
        }
        if (in_flight == 0)
            break;
        wait_ready();
        flush();
        take_in();
        size_t n = take_frames(req, 4 + size);
        in_flight -= n;
        double t = now_s();
        if (t >= start_at && first_t == 0)
            first_n = done, first_t = t;
        done += n;
        if (t >= end_at && last_t == 0) {
            last_n = done, last_t = t;
            sending = 0;
        }
    }
    double rate = last_t > first_t ? (double)(last_n - first_n) / (last_t - first_t) : 0;
    printf("test=%s transport=%s size=%zu window=%zu frames=%llu seconds=%.3f per_sec=%.0f "
           "gb_per_sec=%.3f\n",
           test, tname, size, window, (unsigned long long)(last_n - first_n), last_t - first_t,
           rate, rate * (double)size / 1e9);
    fflush(stdout);
    free(req);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void latency(double seconds)
{
    uint8_t *req = make_frame(SMALL);
    double *samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (!samples)
        die("malloc");
    size_t count = 0;
    double t0 = now_s(), warm = t0 + seconds / 5, end = warm + seconds;
    for (;;) {
        double sent = now_s();
        if (sent >= end || count == MAX_SAMPLES)
            break;
        send_frame(req, 4 + SMALL);
        size_t got = 0;
        while (got == 0) {
            wait_ready();
            flush();
            take_in();
            got = take_frames(req, 4 + SMALL);
        }
        double t = now_s();
        if (sent >= warm)
            samples[count++] = (t - sent) * 1e6;
    }
    qsort(samples, count, sizeof *samples, cmp_double);
    double p50 = count ? samples[count / 2] : 0;
    size_t i99 = (size_t)((double)count * 0.99);
    double p99 = count ? samples[i99 < count ? i99 : count - 1] : 0;
    printf("test=latency transport=%s size=%d samples=%zu p50_us=%.2f p99_us=%.2f\n", tname,
           SMALL, count, p50, p99);
    fflush(stdout);
    free(samples);
    free(req);
}

int main(int argc, char **argv)
{
    const char *t = NULL, *tests = "rate,latency,bulk";
    double seconds = 1.0;
    long window = 64, bulk_window = 4;
    int opt;
    const char *pin = "none";
    while ((opt = getopt(argc, argv, "t:s:w:W:T:p:")) != -1) {
        switch (opt) {
        case 'p': pin = optarg; break;
        case 't': t = optarg; break;
        case 's': seconds = atof(optarg); break;
        case 'w': window = atol(optarg); break;
        case 'W': bulk_window = atol(optarg); break;
        case 'T': tests = optarg; break;
        default: goto usage;
        }
    }
    if (!t || !(seconds > 0 && seconds <= 30) || window < 1 || window > 4096 ||
        bulk_window < 1 || bulk_window > 64)
        goto usage;
    if (!strcmp(t, "pipe"))
        transport = PIPE, tname = "raw-pipe";
    else if (!strcmp(t, "mqueue"))
        transport = MQUEUE, tname = "raw-mqueue";
    else if (!strcmp(t, "shm"))
        transport = SHM, tname = "raw-shm";
    else
        goto usage;
    if (!strcmp(pin, "same"))
        parent_cpu = child_cpu = 0;
    else if (!strcmp(pin, "split"))
        parent_cpu = 0, child_cpu = 1;
    else if (strcmp(pin, "none"))
        goto usage;

    setup();
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0)
        child_main(parent);
    parent_setup();
    if (parent_cpu >= 0)
        pin_to(parent_cpu);

    char *list = strdup(tests), *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if (!strcmp(name, "rate"))
            pipelined("rate", SMALL, (size_t)window, seconds);
        else if (!strcmp(name, "latency"))
            latency(seconds);
        else if (!strcmp(name, "bulk"))
            pipelined("bulk", BULK, (size_t)bulk_window, seconds);
        else {
            fprintf(stderr, "ipc_raw: unknown test %s\n", name);
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            return 2;
        }
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;

usage:
    fprintf(stderr, "usage: ipc_raw -t pipe|mqueue|shm [-s SECONDS (0,30]] [-w WINDOW 1..4096] "
                    "[-W BULK_WINDOW 1..64] [-T rate,latency,bulk] [-p none|same|split]\n");
    return 2;
}
