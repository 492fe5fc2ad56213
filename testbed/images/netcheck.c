/* Packet checks for the test bed's NetworkPolicy tests (busybox's nc has
 * no UDP and no timeout on connect).
 *
 *   netcheck serve PORT...        echo server on TCP and UDP for each PORT
 *   netcheck tcp HOST PORT [SEC]  connect, send "ping", expect it echoed
 *   netcheck udp HOST PORT [SEC]  send "ping", expect it echoed
 *   netcheck connect HOST PORT [SEC]  a TCP connection is accepted
 *
 * Exit status: 0 reached, 1 no answer within SEC (default 2) seconds or
 * refused, 2 usage or local error. Prints one line saying which. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int usage(void) {
    fprintf(stderr, "usage: netcheck serve PORT... | tcp|udp|connect HOST PORT [SEC]\n");
    return 2;
}

static int serve_tcp(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) {
        perror("tcp bind");
        return 2;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        char buf[512];
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 2000) == 1) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n > 0)
                (void)!write(c, buf, n);
        }
        close(c);
    }
}

static int serve_udp(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(s, (struct sockaddr *)&a, sizeof a)) {
        perror("udp bind");
        return 2;
    }
    for (;;) {
        char buf[512];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n > 0)
            sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
    }
}

static int check(const char *mode, const char *host, int port, int seconds) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "netcheck: %s is not an IPv4 address\n", host);
        return 2;
    }
    int udp = strcmp(mode, "udp") == 0;
    int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    fcntl(s, F_SETFL, O_NONBLOCK);
    int ms = seconds * 1000;
    if (connect(s, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
        printf("%s %s:%d unreachable: %s\n", mode, host, port, strerror(errno));
        return 1;
    }
    if (!udp) {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&p, 1, ms) != 1) {
            printf("%s %s:%d timed out connecting\n", mode, host, port);
            return 1;
        }
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            printf("%s %s:%d refused: %s\n", mode, host, port, strerror(err));
            return 1;
        }
        if (strcmp(mode, "connect") == 0) {
            printf("%s %s:%d connected\n", mode, host, port);
            return 0;
        }
    }
    if (send(s, "ping", 4, 0) != 4) {
        printf("%s %s:%d send failed: %s\n", mode, host, port, strerror(errno));
        return 1;
    }
    struct pollfd p = {.fd = s, .events = POLLIN};
    char buf[16];
    if (poll(&p, 1, ms) == 1) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n == 4 && memcmp(buf, "ping", 4) == 0) {
            printf("%s %s:%d answered\n", mode, host, port);
            return 0;
        }
        printf("%s %s:%d no echo: %s\n", mode, host, port, n < 0 ? strerror(errno) : "short read");
        return 1;
    }
    printf("%s %s:%d timed out waiting for the echo\n", mode, host, port);
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        signal(SIGCHLD, SIG_IGN);
        for (int i = 2; i < argc; i++) {
            int port = atoi(argv[i]);
            if (fork() == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                return serve_tcp(port);
            }
            if (fork() == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                return serve_udp(port);
            }
        }
        /* Until TERM; the servers die with this process. */
        for (;;)
            pause();
    }
    if (argc == 4 || argc == 5) {
        int seconds = argc == 5 ? atoi(argv[4]) : 2;
        if (strcmp(argv[1], "tcp") && strcmp(argv[1], "udp") && strcmp(argv[1], "connect"))
            return usage();
        return check(argv[1], argv[2], atoi(argv[3]), seconds > 0 ? seconds : 2);
    }
    return usage();
}
