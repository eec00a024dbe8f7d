/* flip_byte OFFSET: copies stdin to stdout with the byte at OFFSET
 * inverted, as a damaged disk, network or memory would hand it on. The
 * pipe test puts it between two stages and expects the next stage to stop
 * with a checksum error naming the record. Exit 0, or 2 on bad usage, 1 if
 * the input is shorter than OFFSET + 1 bytes (nothing was flipped). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "fd_io.h"

int main(int argc, char **argv)
{
    char *end;
    long long at = argc == 2 ? strtoll(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || at < 0) {
        fprintf(stderr, "usage: flip_byte OFFSET < in > out\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* the stage after us stops early: that is the point */
    static unsigned char buf[1 << 16];
    long long pos = 0;
    int flipped = 0;
    for (;;) {
        ssize_t n = sg_read_some(0, buf, sizeof buf);
        if (n <= 0)
            break;
        if (at >= pos && at < pos + n) {
            buf[at - pos] ^= 0xff;
            flipped = 1;
        }
        pos += n;
        if (sg_write_all(1, buf, (size_t)n) != 0)
            return flipped ? 0 : 1; /* reader gone */
    }
    return flipped ? 0 : 1;
}
