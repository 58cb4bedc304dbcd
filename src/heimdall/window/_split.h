/* A second thread for a large batch's scatter. Internal; included by _ring_core.h.
 *
 * A batch's rows go to random slots, each a few cache misses away, and a compaction moves a
 * slot's W - 1 rows every slack appends: the scatter is bound by memory latency, which a
 * second core hides as well as the first. So a batch of at least ``split_min_rows`` rows is
 * written by the calling thread and one helper thread: ``split_begin(fn, arg)`` posts
 * ``fn(arg)`` for the helper, the caller does its own share, and ``split_end()`` waits for the
 * helper's, or takes it back if the helper has not started it. The scatter splits the rows
 * by slot parity, so each slot still has one writer and its rows are written in batch order
 * (_write.h).
 *
 * (The key lookup stays on the caller: a caller has just made or touched its key objects, so
 * their cache lines sit in its core, and a helper reading half of them gains nothing.)
 *
 * ``fn`` touches no Python object that another thread could change and calls no Python API
 * that needs a thread state (no refcounts, no errors, no allocation by Python's allocator).
 * One job at a time: a caller claims the helper (``split_claim``, with the GIL held) before
 * ``split_begin`` and lets it go after ``split_end`` (``split_release``). A large scatter runs
 * without the GIL (_write.h), so two callers (of two streams) can meet here: the one that
 * cannot claim the helper does all its work itself.
 *
 * Hand-offs: a batch takes about a millisecond and a caller often sends the next one at
 * once, while a thread woken from a condition variable takes tens of microseconds to run. So
 * each side spins a little first: the helper for ``SPLIT_SPIN_NS`` after a job before it
 * sleeps, the caller while the helper finishes (yielding the CPU when it spins long).
 *
 * The helper is started on first use, and again in a child after fork (a thread does not
 * survive fork). If it cannot be started the work stays on one thread.
 */
#ifndef HEIMDALL_SPLIT_H
#define HEIMDALL_SPLIT_H

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

typedef void (*split_fn)(void *arg);

#define SPLIT_SPIN_NS 50000 /* how long an idle helper waits for the next job before it sleeps */

/* The job's ticket: its number times 4 plus its state. Posted by the caller; taken by the
 * helper, which then runs it and marks it done; or taken back by the caller, when the helper
 * has not taken it by the time the caller wants it (the helper is asleep, or its CPU is busy
 * with another process): the caller then runs it itself, or drops it. So the caller never
 * waits for a helper that is not running, only for one that has started the job. */
enum { JOB_POSTED = 1, JOB_TAKEN = 2, JOB_DONE = 3 }; /* 0: taken back, or none */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go;
    split_fn fn; /* the posted job's, written before its ticket */
    void *arg;
    unsigned long long ticket;
    int sleeping; /* the helper waits on ``go`` (read and written under seq_cst) */
    pid_t pid;    /* the process the helper runs in (0: none yet) */
} split;

/* Batches of at least this many rows are split (0: never); set by ``set_split``. */
static Py_ssize_t split_min_rows = 0;

static inline long long
split_clock_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void
split_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int
job_posted(unsigned long long t)
{
    return (t & 3) == JOB_POSTED;
}

/* The ticket of a posted job, once there is one (spinning, then sleeping). */
static unsigned long long
split_next(void)
{
    long long until = split_clock_ns() + SPLIT_SPIN_NS;
    unsigned long long t;
    for (unsigned k = 1;; k++) {
        t = __atomic_load_n(&split.ticket, __ATOMIC_ACQUIRE);
        if (job_posted(t))
            return t;
        split_pause();
        if ((k & 255) == 0 && split_clock_ns() > until)
            break;
    }
    pthread_mutex_lock(&split.mu);
    __atomic_store_n(&split.sleeping, 1, __ATOMIC_SEQ_CST);
    while (!job_posted(t = __atomic_load_n(&split.ticket, __ATOMIC_SEQ_CST)))
        pthread_cond_wait(&split.go, &split.mu);
    __atomic_store_n(&split.sleeping, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&split.mu);
    return t;
}

static void *
split_main(void *unused)
{
    (void)unused;
    for (;;) {
        unsigned long long t = split_next();
        split_fn fn = __atomic_load_n(&split.fn, __ATOMIC_RELAXED);
        void *arg = __atomic_load_n(&split.arg, __ATOMIC_RELAXED);
        unsigned long long taken = (t & ~3ULL) | JOB_TAKEN;
        /* the same ticket still posted: fn and arg are that job's */
        if (!__atomic_compare_exchange_n(&split.ticket, &t, taken, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue; /* taken back by the caller */
        fn(arg);
        __atomic_store_n(&split.ticket, (t & ~3ULL) | JOB_DONE, __ATOMIC_RELEASE);
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
    if (pthread_mutex_init(&split.mu, NULL) != 0 || pthread_cond_init(&split.go, NULL) != 0)
        return 0;
    split.ticket = 0;
    split.sleeping = 0;
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

static int split_busy; /* 1 while a caller holds the helper (split_claim) */

/* Whether a batch of ``n`` rows is worth a second thread and one can run; if so the helper
 * is claimed, and the caller releases it (split_release) after its split_end. Call with the
 * GIL held (split_ready may start the helper). */
static inline int
split_wanted(Py_ssize_t n)
{
    if (split_min_rows <= 0 || n < split_min_rows || !split_ready())
        return 0;
    int idle = 0;
    return __atomic_compare_exchange_n(&split_busy, &idle, 1, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static inline void
split_release(void)
{
    __atomic_store_n(&split_busy, 0, __ATOMIC_RELEASE);
}

/* Post ``fn(arg)`` for the helper (split_wanted said yes); the caller then does its share
 * and calls split_end. */
static void
split_begin(split_fn fn, void *arg)
{
    __atomic_store_n(&split.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&split.arg, arg, __ATOMIC_RELAXED);
    unsigned long long next = ((split.ticket >> 2) + 1) << 2 | JOB_POSTED;
    __atomic_store_n(&split.ticket, next, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&split.sleeping, __ATOMIC_SEQ_CST)) {
        /* the helper holds the mutex from its last look at the ticket until it waits */
        pthread_mutex_lock(&split.mu);
        pthread_cond_signal(&split.go);
        pthread_mutex_unlock(&split.mu);
    }
}

/* The job split_begin posted is done when this returns: by the helper, or, if the helper
 * had not taken it yet, here (``run_here``) or not at all. */
static void
split_end(int run_here)
{
    unsigned long long t = __atomic_load_n(&split.ticket, __ATOMIC_ACQUIRE);
    if (job_posted(t)
        && __atomic_compare_exchange_n(&split.ticket, &t, t & ~3ULL, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE)) {
        if (run_here)
            split.fn(split.arg);
        return;
    }
    for (unsigned k = 1; (__atomic_load_n(&split.ticket, __ATOMIC_ACQUIRE) & 3) != JOB_DONE;
         k++) {
        split_pause();
        if ((k & 1023) == 0)
            sched_yield(); /* the helper may be waiting for this CPU */
    }
}

#endif
