cimport cython
from analytics.scorers.window cimport SortedWindow

cdef class ValueZ:
    cdef public SortedWindow _window
    cdef public Py_ssize_t _warmup
    cpdef statistic(self, double x, t=*)
    cpdef learn(self, x, t=*)  # the caller's float joins the window as it is
    cpdef follow(self, double x, t=*)

cdef class DiffZ:
    cdef public SortedWindow _window
    cdef public Py_ssize_t _warmup, _every
    cdef public object _prev, _recent
    cpdef statistic(self, double x, t=*)
    cpdef learn(self, double x, t=*)
    cpdef follow(self, double x, t=*)

cdef class MeanZ:
    cdef public SortedWindow _window
    cdef public Py_ssize_t _warmup, _span, _points
    cdef public object _recent
    cdef public double _sum
    cpdef statistic(self, double x, t=*)
    cpdef learn(self, double x, t=*)
    cpdef follow(self, double x, t=*)

cdef class SpreadZ:
    cdef public SortedWindow _window
    cdef public Py_ssize_t _warmup, _span, _stride, _phase
    cdef public object _recent, _cached
    @cython.locals(n=Py_ssize_t, total=double, mean=double, d=double, ss=double, v=double, out=double)
    cpdef double _log_spread(self, double x)
    cpdef statistic(self, double x, t=*)
    cpdef learn(self, double x, t=*)
    cpdef follow(self, double x, t=*)
