from analytics.scorers.window cimport SortedWindow

cdef class Moves:
    cdef public SortedWindow _values
    cdef public Py_ssize_t _bins, _least
    cdef public double _share
    cdef public list _counts
    cdef public object _moves, _last
    cpdef band(self, double x)
    cpdef bint common(self, double x)
    cpdef learn(self, double x)
