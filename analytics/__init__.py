"""flowprobe analytics: anomaly scores, failure prediction and root-cause patterns.

Filled in by the analytics issue; the package exists so the layout and the
distribution are in place.
"""
