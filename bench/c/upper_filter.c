/* stdin -> upper-cased -> stdout, unbuffered, until EOF.  The exec-mode
 * handler for socat, tcpserver and forkd's `handler = "exec"`. */
#include "common.h"

int main(void)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0;
        upper_ascii(buf, n);
        if (write_all(1, buf, (size_t)n) < 0)
            return 1;
    }
}
