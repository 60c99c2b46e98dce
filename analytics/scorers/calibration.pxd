cimport cython
from analytics.scorers.window cimport TopWindow

cdef class QuantileCalibrator:
    cdef public TopWindow _history
    cdef public double _q, _mature
    cdef public Py_ssize_t _warmup
    cdef public tuple _young
    cpdef double reference(self)

cdef class Cadence:
    cdef public double reference
    cdef public Py_ssize_t every
    cdef public object _gaps, _last

cdef class OnsetGate:
    cdef public double _peak, _damp, _decay, _rest_level, _alarm, echo_level, _rest_until
    cdef public Py_ssize_t _rest, _resting, _echo, _echoing
    cdef public object _rest_seconds
    cpdef double gated(self, double s, t=*)
    @cython.locals(peak=double)
    cpdef learn(self, double gated, t=*)
