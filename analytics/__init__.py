"""flowprobe analytics: anomaly scores written back as Prometheus series.

    flowprobe analytics --source history:data/history.sqlite3     (or python -m analytics)
    flowprobe analytics --source prometheus:http://127.0.0.1:9090

- source: where the series come from (the collector's history, or Prometheus);
- worker: scores each new point with its series' detector, then learns it;
- emit: /metrics (flowprobe_anomaly_score{workflow,env,signal}, ...) and the JSON API;
- state: the detectors on disk, so a restart resumes;
- scorers/: the detectors, behind one contract.
"""
