cimport cython

cdef class SortedWindow:
    cdef public Py_ssize_t size
    cdef public object _order
    cdef public object _sorted
    cpdef add(self, x)  # stored, not computed with: boxed once by the caller, not once a list it joins
    @cython.locals(n=Py_ssize_t, med=double, scale=double, floor=double)
    cpdef double robust_z(self, double x)

cdef class CompactWindow(SortedWindow):
    pass

cdef class TopWindow:
    cdef public Py_ssize_t size
    cdef public double q
    cdef public Py_ssize_t keep, _need, _count
    cdef public object _old
    cdef public list _expiring, _recent, _top
    @cython.locals(top=list, expiring=list, n=Py_ssize_t)
    cpdef add(self, x)  # stored, not computed with: boxed once by the caller, not once a list it joins
    cpdef double quantile(self)
