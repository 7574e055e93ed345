/* Many SSE clients on one job, measuring publish -> receive latency of every `log` event.
 *
 * The instrument for the gateway's SSE fan-out benchmark (bench/gateway.sh). Plain epoll and
 * read(2), so that on a 2-core machine the clients cost as little as possible beside the gateway
 * (the compiled NIO client, `kiln-bench sse-clients`, spends ~10 us per event; this ~3 us).
 * The stand-in worker (`kiln-bench fake-worker`) puts its wall-clock send time into each log
 * line as `t=<nanoseconds>`; this client subtracts it from its own receive time (same host clock).
 *
 * usage: sseclients HOST PORT JOB CLIENTS GO_FILE GATEWAY_PID [EVENTS_PER_S [CASE]]
 * prints one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int opened, done;
    char tail[8192];
    size_t tail_len;
} client_t;

static double *lat;
static size_t nlat, caplat;
static char terminal[512];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_self(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static double cpu_of(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double peak_rss_mib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024;
}

/* One complete SSE event (without its blank line). */
static void on_event(client_t *c, const char *b, size_t n, uint64_t now) {
    const char *e = memmem(b, n, "\nevent: ", 8);
    if (e) {
        const char *type = e + 8;
        size_t left = n - (size_t)(type - b);
        if ((left >= 4 && !memcmp(type, "done", 4)) || (left >= 9 && !memcmp(type, "cancelled", 9)) ||
            (left >= 6 && !memcmp(type, "failed", 6))) {
            c->done = 1;
            if (!terminal[0]) snprintf(terminal, sizeof terminal, "%.*s", (int)(n < 500 ? n : 500), b);
            return;
        }
        if (!(left >= 3 && !memcmp(type, "log", 3))) return;
    }
    const char *t = memmem(b, n, "t=", 2);
    if (!t) return;
    uint64_t v = 0;
    for (t += 2; t < b + n && *t >= '0' && *t <= '9'; t++) v = v * 10 + (uint64_t)(*t - '0');
    if (!v) return;
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
    }
    lat[nlat++] = ((int64_t)now - (int64_t)v) / 1e6;
}

static void scan(client_t *c, const char *buf, size_t n, uint64_t now) {
    size_t start = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n') {
            on_event(c, buf + start, i - start, now);
            i++;
            start = i + 1;
        }
    }
    size_t rest = n - start;
    if (rest > sizeof c->tail) rest = sizeof c->tail;  /* an event never gets that long here */
    memmove(c->tail, buf + n - rest, rest);
    c->tail_len = rest;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT JOB CLIENTS GO_FILE GATEWAY_PID\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *job = argv[3], *go = argv[5];
    int port = atoi(argv[2]), n = atoi(argv[4]), gw = atoi(argv[6]);
    const char *rate = argc > 7 ? argv[7] : "null";
    const char *name = argc > 8 ? argv[8] : "sse_fanout";
    client_t *cs = calloc((size_t)n, sizeof *cs);
    int ep = epoll_create1(0);
    char req[512];
    const char *token = getenv("KILN_TOKEN");
    char auth[256] = "";
    if (token && strcmp(job, "floor") != 0) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    int reqlen = snprintf(req, sizeof req, "GET /build/%s/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n", job, host, auth);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
        if (write(fd, req, (size_t)reqlen) != reqlen) { perror("write"); return 1; }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    static char buf[1 << 16];
    static char joined[sizeof buf + 8192];
    struct epoll_event evs[256];
    int opened = 0, finished = 0, went = 0;
    double cpu0 = 0, gcpu0 = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (finished < n) {
        int k = epoll_wait(ep, evs, 256, 20);
        uint64_t now = now_ns();
        for (int j = 0; j < k; j++) {
            client_t *c = &cs[evs[j].data.u32];
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r <= 0) {
                    if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                        if (!c->done) { c->done = 1; finished++; }
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    }
                    break;
                }
                if (!c->opened) { c->opened = 1; opened++; }
                if (c->tail_len) {
                    memcpy(joined, c->tail, c->tail_len);
                    memcpy(joined + c->tail_len, buf, (size_t)r);
                    scan(c, joined, c->tail_len + (size_t)r, now);
                } else {
                    scan(c, buf, (size_t)r, now);
                }
                if (c->done) {
                    finished++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    break;
                }
                if (r < (ssize_t)sizeof buf) break;
            }
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double since = (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
        if (!went && (opened == n || since > 60)) {
            /* every stream open: settle, then tell the worker to start */
            usleep(500000);
            cpu0 = cpu_self();
            gcpu0 = cpu_of(gw);
            FILE *f = fopen(go, "w");
            if (f) { fputs("go", f); fclose(f); }
            went = 1;
        }
        if (since > 900) break;
    }
    double cpu = cpu_self() - cpu0, gcpu = cpu_of(gw) - gcpu0;
    if (!nlat && terminal[0]) fprintf(stderr, "no events measured; the stream ended with:\n%s\n", terminal);
    qsort(lat, nlat, sizeof *lat, cmp);
#define PCT(p) (nlat ? lat[(size_t)((double)nlat * (p) / 100) < nlat ? (size_t)((double)nlat * (p) / 100) : nlat - 1] : -1.0)
    printf("{\"case\": \"%s\", \"events_per_s\": %s, \"clients\": %d, \"clients_finished\": %d, \"events_received\": %zu, "
           "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f, \"gateway_peak_rss_mib\": %.1f, "
           "\"client_cpu_s\": %.2f, \"gateway_cpu_s\": %.2f}\n",
           name, rate, n, finished, nlat, PCT(50), PCT(99), nlat ? lat[nlat - 1] : -1.0, peak_rss_mib(gw), cpu, gcpu);
    return 0;
}
