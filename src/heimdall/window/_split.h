/* A large batch's scatter on two threads. Internal; included by _write.h only.
 *
 * A batch's rows go to random slots, each a few cache misses away, and a compaction moves a
 * slot's W - 1 rows every slack appends: the scatter is bound by memory latency, which a
 * second core hides as well as the first. So a batch of at least ``split_min_rows`` rows is
 * written by the calling thread and one helper thread, split by slot parity: each slot still
 * has one writer, and its rows are written in batch order. The helper touches no Python
 * object (it runs ``scatter_rows`` on the ring's C memory) and the caller holds the GIL
 * throughout and waits for it, so to Python the call is as atomic as before; readers in other
 * processes see each slot under its seqlock, as always.
 *
 * One job at a time: ``ring_scatter`` holds the GIL from its checks to its return, so no
 * second caller can reach ``split_scatter`` while the helper works.
 *
 * The helper is started on first use, and again in a child after fork (a thread does not
 * survive fork). If it cannot be started the scatter stays on one thread.
 */
#ifndef HEIMDALL_SPLIT_H
#define HEIMDALL_SPLIT_H

#include <pthread.h>
#include <unistd.h>

typedef struct {
    RingCore *ring;
    const long long *slots, *ts_in;
    const char *rows;
    Py_ssize_t n;
    long long now, tick0;
    long long counters[3]; /* late, out of order, expired: the helper's share */
} SplitJob;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    SplitJob *job; /* set: the helper has work; cleared by the helper when done */
    pid_t pid;     /* the process the helper runs in (0: none yet) */
} split;

/* Batches of at least this many rows are split (0: never); set by ``set_split``. */
static Py_ssize_t split_min_rows = 0;

static void *
split_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&split.mu);
    for (;;) {
        while (split.job == NULL)
            pthread_cond_wait(&split.go, &split.mu);
        SplitJob *j = split.job;
        pthread_mutex_unlock(&split.mu);
        scatter_rows(j->ring, j->slots, j->ts_in, j->rows, j->n, j->now, j->tick0, j->counters,
                     1, 1);
        pthread_mutex_lock(&split.mu);
        split.job = NULL;
        pthread_cond_signal(&split.done);
    }
    return NULL;
}

/* The helper of this process, started if need be; 0 if it cannot be. */
static int
split_ready(void)
{
    pid_t pid = getpid();
    if (split.pid == pid)
        return 1;
    /* first use, or a child after fork: fresh primitives, a new thread */
    if (pthread_mutex_init(&split.mu, NULL) != 0 || pthread_cond_init(&split.go, NULL) != 0
        || pthread_cond_init(&split.done, NULL) != 0)
        return 0;
    split.job = NULL;
    pthread_attr_t attr;
    pthread_t thread;
    if (pthread_attr_init(&attr) != 0)
        return 0;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int ok = pthread_create(&thread, &attr, split_main, NULL) == 0;
    pthread_attr_destroy(&attr);
    if (ok)
        split.pid = pid;
    return ok;
}

/* Scatter a validated batch on two threads if it is large enough; 1 if done, 0 if the
 * caller must (a small batch, or no helper). */
static int
split_scatter(RingCore *r, const long long *slots, const long long *ts_in, const char *rows,
              Py_ssize_t n, long long now, long long tick0)
{
    if (split_min_rows <= 0 || n < split_min_rows || !split_ready())
        return 0;
    SplitJob job = {r, slots, ts_in, rows, n, now, tick0, {0, 0, 0}};
    pthread_mutex_lock(&split.mu);
    split.job = &job;
    pthread_cond_signal(&split.go);
    pthread_mutex_unlock(&split.mu);
    scatter_rows(r, slots, ts_in, rows, n, now, tick0, r->counters, 0, 1);
    pthread_mutex_lock(&split.mu);
    while (split.job != NULL)
        pthread_cond_wait(&split.done, &split.mu);
    pthread_mutex_unlock(&split.mu);
    for (int k = 0; k < 3; k++)
        r->counters[k] += job.counters[k];
    return 1;
}

#endif
