/* Single-process, non-blocking epoll upper-case echo server: the practical
 * limit of the event model.  usage: epoll_server [PORT] [WORKERS]
 * WORKERS defaults to 1 (one process, one epoll loop).  With WORKERS > 1,
 * that many forked processes each run their own loop on the shared listener
 * (EPOLLEXCLUSIVE), which matches an event server with N worker processes.
 * Prints the bound port as stdout's first line. */
#define _GNU_SOURCE
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>

struct conn {
    int fd;
    char *pend;      /* unsent reply bytes (only after a short write) */
    size_t len, off;
};

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Try to flush pending output; 1 = all sent, 0 = would block, -1 = error. */
static int conn_flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t w = write(c->fd, c->pend + c->off, c->len - c->off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        c->off += (size_t)w;
    }
    free(c->pend);
    c->pend = NULL;
    c->len = c->off = 0;
    return 1;
}

static void set_events(int ep, struct conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void on_readable(int ep, struct conn *c)
{
    char buf[16384];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            conn_close(ep, c);
            return;
        }
        if (n == 0) {
            conn_close(ep, c);
            return;
        }
        upper_ascii(buf, n);
        ssize_t w;
        do
            w = write(c->fd, buf, (size_t)n);
        while (w < 0 && errno == EINTR);
        if (w < 0 && errno != EAGAIN) {
            conn_close(ep, c);
            return;
        }
        if (w < 0)
            w = 0;
        if (w < n) {
            /* Socket buffer full: keep the rest, stop reading until sent. */
            c->len = (size_t)(n - w);
            c->off = 0;
            c->pend = malloc(c->len);
            if (!c->pend) {
                conn_close(ep, c);
                return;
            }
            memcpy(c->pend, buf + w, c->len);
            set_events(ep, c, EPOLLOUT);
            return;
        }
        if ((size_t)n < sizeof buf)
            return; /* drained (level-triggered: any rest will wake us) */
    }
}

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static void loop(int lfd, int exclusive)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event le = {.events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0),
                             .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le) < 0)
        die("epoll_ctl listener");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                for (int k = 0; k < 64; k++) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break; /* EAGAIN, or a transient error: retry on next wake */
                    set_nodelay(cfd);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(cfd);
                        continue;
                    }
                    nc->fd = cfd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &e) < 0) {
                        close(cfd);
                        free(nc);
                    }
                }
                continue;
            }
            if (c->pend) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    conn_close(ep, c);
                    continue;
                }
                int r = conn_flush(c);
                if (r < 0)
                    conn_close(ep, c);
                else if (r > 0)
                    set_events(ep, c, EPOLLIN);
                continue;
            }
            on_readable(ep, c);
        }
    }
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? parse_port(argv[1]) : 0;
    int nworkers = argc > 2 ? atoi(argv[2]) : 1;
    if (nworkers < 1 || nworkers > 256) {
        fprintf(stderr, "workers must be 1..256\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_loopback(port);
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl");
    if (nworkers == 1)
        loop(lfd, 0);
    pid_t *pids = calloc((size_t)nworkers, sizeof *pids);
    if (!pids)
        die("calloc");
    for (int i = 0; i < nworkers; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0)
            loop(lfd, 1);
        pids[i] = pid;
    }
    /* Parent: on SIGTERM/SIGINT, or when any worker dies, stop the rest. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stopping && waitpid(-1, NULL, 0) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < nworkers; i++)
        kill(pids[i], SIGTERM);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    return 0;
}
