/* Fork-per-connection upper-case echo server: the practical limit of the
 * fork model.  usage: fork_server [PORT]  (0 or absent = kernel picks);
 * prints the bound port as stdout's first line. */
#include "common.h"
#include <signal.h>
#include <sys/wait.h>

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? parse_port(argv[1]) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        die("sigaction");
    int lfd = listen_loopback(port);
    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
                errno == ENFILE)
                continue;
            die("accept");
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            set_nodelay(cfd);
            serve_blocking(cfd);
            _exit(0);
        }
        if (pid < 0)
            perror("fork");
        close(cfd);
    }
}
