cimport cython
from analytics.scorers.calibration cimport OnsetGate, QuantileCalibrator
from analytics.scorers.window cimport TopWindow

cdef class EnsembleScorer:
    cdef public list _members, _calibrators, _capped, _boosted, _outside, _block
    cdef public OnsetGate _gate
    cdef public object _shift, _moves, _routine, _cadence, _cached
    cdef public double _boost
    cdef public Py_ssize_t _every, _tick, _in_block
    @cython.locals(calibrator=QuantileCalibrator, history=TopWindow, n=Py_ssize_t, top=list, ratio=double, best=double, step=double, boost=double, boosted=bint)
    cpdef tuple _evaluate(self, x, t)
    @cython.locals(calibrator=QuantileCalibrator, tick=Py_ssize_t, first=bint)
    cpdef learn_one(self, x, t=*)
    cpdef double score_one(self, x, t=*)  # x stays the caller's float: each member is given it, not a copy
