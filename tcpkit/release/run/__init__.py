"""The gate pipeline in papermill-sized modules (driven by :mod:`tcpkit.release.pipeline`).

* :mod:`tcpkit.release.run.params` - the parameters a notebook declares (papermill), gate values
  checked for name and type before a run;
* :mod:`tcpkit.release.run.paramtable` - `tcpkit params`: each parameter beside the value of every gate;
* :mod:`tcpkit.release.run.reuse` - which recorded run (passed or failed) a gate with the same run key reuses;
* :mod:`tcpkit.release.run.execute` - one gate run on a worker thread (papermill, metrics, model);
* :mod:`tcpkit.release.run.record` - signing, recording and freezing on the calling thread;
* :mod:`tcpkit.release.run.index` - ``reports/index.html``;
* :mod:`tcpkit.release.run.startup` - what the ``tcpkit`` process skips to start faster.
"""
