"""The Ray Tune glue, all of it: every module here imports Ray at the top, and nothing outside imports Ray.

* :mod:`~tinyray.tune.searcher`: ``TinySearcher``, a Tune ``Searcher`` around any registered searcher core;
* :mod:`~tinyray.tune.scheduler`: ``MOASHAScheduler``, a Tune ``TrialScheduler`` around :class:`tinyray.scheduler.MOASHA`;
* :mod:`~tinyray.tune.trainable`: ``run_trial``, the trainable around :func:`tinyray.train.train_candidate`;
* :mod:`~tinyray.tune.callbacks`: MLflow tracking, the progress line, and the stop on a full disk;
* :mod:`~tinyray.tune.runtime`: starting or joining Ray, running or restoring the Tune experiment, and the few
  uses of Ray's private API, each in one function;
* :mod:`~tinyray.tune.legacy`: the class paths experiments saved by tinyray 0.1 before this package pickled.

The pure cores (:mod:`tinyray.searchers`, :mod:`tinyray.scheduler`, :mod:`tinyray.front`, :mod:`tinyray.formula`,
:mod:`tinyray.train`) import no Ray, and this package is imported only when a search runs.
"""
