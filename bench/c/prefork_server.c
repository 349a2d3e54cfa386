/* Prefork upper-case echo server: N children each block in accept() on the
 * shared listener and serve one connection at a time.  The parent only
 * re-forks a child that dies.  usage: prefork_server [PORT] [WORKERS]
 * (defaults 0 = kernel picks, 4 workers); prints the bound port first. */
#include "common.h"
#include <signal.h>
#include <sys/wait.h>

static void worker(int lfd)
{
    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
                errno == ENFILE)
                continue;
            perror("accept");
            _exit(1);
        }
        set_nodelay(cfd);
        serve_blocking(cfd);
        close(cfd);
    }
}

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv)
{
    int port = argc > 1 ? parse_port(argv[1]) : 0;
    int nworkers = argc > 2 ? atoi(argv[2]) : 4;
    if (nworkers < 1 || nworkers > 1024) {
        fprintf(stderr, "workers must be 1..1024\n");
        return 2;
    }
    int lfd = listen_loopback(port);
    pid_t *pids = calloc((size_t)nworkers, sizeof *pids);
    if (!pids)
        die("calloc");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < nworkers; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            worker(lfd);
        }
        pids[i] = pid;
    }
    /* Supervise: replace dead workers, take the workers down with us. */
    while (!stopping) {
        int status;
        pid_t dead = waitpid(-1, &status, 0);
        if (dead < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < nworkers && !stopping; i++) {
            if (pids[i] != dead)
                continue;
            pid_t pid = fork();
            if (pid == 0) {
                signal(SIGTERM, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                worker(lfd);
            }
            pids[i] = pid > 0 ? pid : 0;
        }
    }
    for (int i = 0; i < nworkers; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    return 0;
}
