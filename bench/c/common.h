/* Shared helpers for the bench peers: listener setup, port announcement and
 * the upper-case transform.  Header-only so each peer stays one gcc call. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_BACKLOG 1024

static inline void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ASCII-only upper-casing, in place: the bench protocol's only "work". */
static inline void upper_ascii(char *buf, ssize_t n)
{
    for (ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 'a' && c <= 'z')
            buf[i] = (char)(c - 32);
    }
}

/* Write all of buf; returns 0, or -1 on error (errno set). */
static inline int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Bind a TCP listener on 127.0.0.1:port (0 = kernel picks), print the bound
 * port as stdout's first line and flush, so a harness can read it. */
static inline int listen_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(fd, BENCH_BACKLOG) < 0)
        die("listen");
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

static inline void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Serve the upper-case echo protocol on a blocking fd until EOF or error. */
static inline void serve_blocking(int fd)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        upper_ascii(buf, n);
        if (write_all(fd, buf, (size_t)n) < 0)
            return;
    }
}

static inline int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "bad port: %s\n", s);
        exit(2);
    }
    return (int)v;
}

#endif
