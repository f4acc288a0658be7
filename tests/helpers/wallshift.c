/* LD_PRELOAD shim: shifts ONLY the wall clock (CLOCK_REALTIME*, gettimeofday, time)
 * by the number of seconds in $WALLSHIFT_FILE (re-read at most every 50 ms of real
 * monotonic time). Monotonic/boottime are untouched, as with an NTP step. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <unistd.h>

static double offset = 0;
static struct timespec last_read = {0, 0};

static int raw_gettime(clockid_t c, struct timespec *ts) { return syscall(SYS_clock_gettime, c, ts); }

static double get_offset(void) {
    struct timespec now;
    raw_gettime(CLOCK_MONOTONIC, &now);
    double dt = (now.tv_sec - last_read.tv_sec) + (now.tv_nsec - last_read.tv_nsec) / 1e9;
    if (last_read.tv_sec == 0 || dt > 0.05) {
        last_read = now;
        const char *path = getenv("WALLSHIFT_FILE");
        if (path) {
            FILE *f = fopen(path, "r");
            if (f) { double v; if (fscanf(f, "%lf", &v) == 1) offset = v; fclose(f); }
        }
    }
    return offset;
}

static void shift(struct timespec *ts) {
    double off = get_offset();
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + (long long)(off * 1e9);
    ts->tv_sec = ns / 1000000000LL; ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t c, struct timespec *ts) {
    int r = raw_gettime(c, ts);
    if (r == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE)) shift(ts);
    return r;
}
int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts; raw_gettime(CLOCK_REALTIME, &ts); shift(&ts);
    if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return 0;
}
time_t time(time_t *t) {
    struct timespec ts; raw_gettime(CLOCK_REALTIME, &ts); shift(&ts);
    if (t) *t = ts.tv_sec; return ts.tv_sec;
}
