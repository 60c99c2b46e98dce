from analytics.scorers.window cimport SortedWindow

cdef class SeasonalZ:
    cdef public list _week, _day
    cdef public SortedWindow _all
    cdef public bint _own, _open
    cdef public Py_ssize_t _per_bucket, _min_bucket, _warmup, _settle, _tick, _slot
    cdef public double _scale_floor, _alpha, _near, _far, _slot_seconds
    cdef public object _explained
    cpdef statistic(self, double x, t=*)
    cpdef learn(self, double x, t=*)
