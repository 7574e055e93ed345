/* The floor for SSE fan-out on this machine: a C server that does nothing but write each event to
 * every connection (two threads, one per core, like the gateway's two event loops), measured by
 * the same client (sseclients.c) in the same way. What the gateway cannot beat, whatever its code.
 *
 * usage: sse_floor PORT CLIENTS EVENTS RATE GO_FILE
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int *fds, nfds;
static char frame[512];
static size_t frame_len;
static pthread_barrier_t start, finish;
static volatile int stop;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *writer(void *arg) {
    long half = (long)arg;
    for (;;) {
        pthread_barrier_wait(&start);
        if (stop) return NULL;
        for (int i = (int)half; i < nfds; i += 2)
            if (write(fds[i], frame, frame_len) < 0) { /* a gone client: ignore */ }
        pthread_barrier_wait(&finish);
    }
}

static void broadcast(const char *type, uint64_t seq) {
    frame_len = (size_t)snprintf(frame, sizeof frame,
        "id: %llu\nevent: %s\ndata: {\"job_id\":\"floor\",\"lines\":[\"bench line t=%llu\"],\"seq\":%llu,\"type\":\"%s\"}\n\n",
        (unsigned long long)seq, type, (unsigned long long)now_ns(), (unsigned long long)seq, type);
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&finish);
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s PORT CLIENTS EVENTS RATE GO_FILE\n", argv[0]); return 2; }
    int port = atoi(argv[1]), events = atoi(argv[3]);
    double rate = atof(argv[4]);
    const char *go = argv[5];
    nfds = atoi(argv[2]);
    fds = calloc((size_t)nfds, sizeof *fds);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("listen"); return 1; }
    printf("floor listening\n");
    fflush(stdout);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    char req[1024];
    for (int i = 0; i < nfds; i++) {
        fds[i] = accept(ls, NULL, NULL);
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (read(fds[i], req, sizeof req) < 0) { perror("read"); return 1; }
        if (write(fds[i], head, strlen(head)) < 0) { perror("write"); return 1; }
    }
    while (access(go, F_OK) != 0) usleep(20000);
    pthread_barrier_init(&start, NULL, 3);
    pthread_barrier_init(&finish, NULL, 3);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, writer, (void *)i);
    struct timespec begin;
    clock_gettime(CLOCK_MONOTONIC, &begin);
    for (int e = 0; e < events; e++) {
        double due = e / rate;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (now.tv_sec - begin.tv_sec) + (now.tv_nsec - begin.tv_nsec) / 1e9;
        if (due > elapsed) usleep((useconds_t)((due - elapsed) * 1e6));
        broadcast("log", (uint64_t)e + 1);
    }
    broadcast("done", (uint64_t)events + 1);
    stop = 1;
    pthread_barrier_wait(&start);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    sleep(1);
    return 0;
}
