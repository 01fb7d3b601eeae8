/* The stat cache's check of every entry it holds, in C (optional; lstatcheck.py has the
 * same function in Python and says what it is for).
 *
 * stale(root, paths, count, rows, stride, trusted_before, threads) -> list[int]
 *
 * `paths` holds `count` paths relative to the directory `root`, NUL-separated (a
 * directory's key ends with "/", the top's is empty). Row i of `rows` (`stride` bytes
 * apart) starts with what the cache recorded of path i's lstat, little-endian:
 * size u64, mtime_ns i64, ctime_ns i64, inode u64, mode u32. Returned: the indexes, in
 * order, of the paths whose lstat now differs from their row, fails, or whose recorded
 * mtime or ctime is not older than `trusted_before` (racily clean: not to be trusted).
 *
 * Why C: a re-push of an unchanged 10,000-file tree is mostly lstat calls, and here a
 * system call costs ~3 us. Python adds an object and ~1 us per call and holds the
 * GIL; this code adds nothing per call and spreads the calls over `threads` threads
 * (git's preloaded index does the same), the GIL released throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROW_MIN 36
#define MAX_THREADS 16

typedef struct {
    int root;                 /* the directory the paths are relative to */
    const char *const *paths; /* count pointers into the caller's buffer */
    const unsigned char *rows;
    Py_ssize_t stride;
    long long trusted_before;
    Py_ssize_t begin, end;
    unsigned char *bad; /* one flag per path */
} Job;

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 1 if path i is stale: lstat differs from its row, fails, or the row is racily clean. */
static int check_one(const Job *job, Py_ssize_t i) {
    const unsigned char *row = job->rows + i * job->stride;
    int64_t mtime = (int64_t)get_u64(row + 8), ctime = (int64_t)get_u64(row + 16);
    if (mtime >= job->trusted_before || ctime >= job->trusted_before) return 1;
    const char *rel = job->paths[i];
    size_t len = strlen(rel);
    struct stat st;
    int rc;
    if (len == 0) {
        rc = fstat(job->root, &st);
    } else if (rel[len - 1] == '/') {
        /* A directory's key: lstat without the slash (with it, a symlink is followed). */
        char buf[PATH_MAX];
        if (len >= sizeof buf) return 1;
        memcpy(buf, rel, len - 1);
        buf[len - 1] = '\0';
        rc = fstatat(job->root, buf, &st, AT_SYMLINK_NOFOLLOW);
    } else {
        rc = fstatat(job->root, rel, &st, AT_SYMLINK_NOFOLLOW);
    }
    if (rc != 0) return 1;
    return (uint64_t)st.st_size != get_u64(row) || (int64_t)st.st_mtim.tv_sec * 1000000000 +
                                                           st.st_mtim.tv_nsec != mtime ||
           (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec != ctime ||
           (uint64_t)st.st_ino != get_u64(row + 24) || (uint32_t)st.st_mode != get_u32(row + 32);
}

static void *run(void *arg) {
    Job *job = arg;
    for (Py_ssize_t i = job->begin; i < job->end; i++) job->bad[i] = (unsigned char)check_one(job, i);
    return NULL;
}

static PyObject *stale(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *root_obj;
    Py_buffer paths, rows;
    Py_ssize_t count, stride;
    long long trusted_before;
    int threads;
    if (!PyArg_ParseTuple(args, "O&y*ny*nLi", PyUnicode_FSConverter, &root_obj, &paths, &count,
                          &rows, &stride, &trusted_before, &threads))
        return NULL;
    PyObject *result = NULL;
    const char **ptrs = NULL;
    unsigned char *bad = NULL;
    int root = -1;
    if (count < 0 || stride < ROW_MIN || rows.len / stride < count) {
        PyErr_SetString(PyExc_ValueError, "rows are shorter than count * stride");
        goto done;
    }
    /* The paths: count NUL-separated strings; the last one need not end in NUL. */
    const char *buf = paths.buf;
    ptrs = PyMem_Malloc(sizeof(char *) * (size_t)(count ? count : 1));
    bad = PyMem_Calloc((size_t)(count ? count : 1), 1);
    if (ptrs == NULL || bad == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    char *copy = NULL;
    if (count) {
        /* A copy with a NUL after the last path, so each is a C string. */
        copy = PyMem_Malloc((size_t)paths.len + 1);
        if (copy == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(copy, buf, (size_t)paths.len);
        copy[paths.len] = '\0';
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (at > paths.len) {
                PyErr_SetString(PyExc_ValueError, "fewer paths than count");
                PyMem_Free(copy);
                goto done;
            }
            ptrs[i] = copy + at;
            at += (Py_ssize_t)strlen(copy + at) + 1;
        }
    }
    root = open(PyBytes_AS_STRING(root_obj), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, root_obj);
        PyMem_Free(copy);
        goto done;
    }
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* Below a few hundred paths a thread costs more than it saves. */
    if (count / 256 + 1 < threads) threads = (int)(count / 256 + 1);
    Job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    Py_BEGIN_ALLOW_THREADS;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (Job){root, ptrs, rows.buf, stride, trusted_before, count * t / threads,
                        count * (t + 1) / threads, bad};
        if (t > 0) started[t] = pthread_create(&ids[t], NULL, run, &jobs[t]) == 0;
    }
    run(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            run(&jobs[t]); /* no thread: this one does its share */
    }
    Py_END_ALLOW_THREADS;
    PyMem_Free(copy);
    result = PyList_New(0);
    for (Py_ssize_t i = 0; result != NULL && i < count; i++) {
        if (!bad[i]) continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(result, index) < 0) Py_CLEAR(result);
        Py_XDECREF(index);
    }
done:
    if (root >= 0) close(root);
    PyMem_Free(ptrs);
    PyMem_Free(bad);
    PyBuffer_Release(&paths);
    PyBuffer_Release(&rows);
    Py_DECREF(root_obj);
    return result;
}

static PyMethodDef methods[] = {
    {"stale", stale, METH_VARARGS,
     "stale(root, paths, count, rows, stride, trusted_before, threads) -> list[int]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lstat",
                                    "The stat cache's lstat check, in C.", -1, methods};

PyMODINIT_FUNC PyInit__lstat(void) { return PyModule_Create(&module); }
