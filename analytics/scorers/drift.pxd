from analytics.scorers.robust cimport ValueZ

cdef class PageHinkley:
    cdef public double threshold, delta, alpha, _n, _mean, _up, _down, _min_up, _max_down
    cdef public Py_ssize_t min_instances
    cdef public bint _fired
    cpdef _reset(self)
    cpdef bint update(self, double x)

cdef class ShiftWatch:
    cdef public ValueZ _value
    cdef public Py_ssize_t _index, _span, _left
    cdef public double _clip
    cdef public PageHinkley _test
    cpdef learn(self, double x, list raws)
