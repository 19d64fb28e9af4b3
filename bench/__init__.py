"""Speed and memory benchmarks of the twin models against their references (timm, TensorFlow).

``python tools/main.py bench <config.yaml>`` runs the benchmark of the config's family (``bench/run.py``):
every contender (the torch twin, the paddle twin, timm's model, the TF graph, and variants such as
channels-last or a compiled graph) runs in its own child process (``bench/harness.py``), the contenders'
timed iterations are interleaved, and the figures are printed as ratios against a baseline measured in the
same run.  See ``bench/README.md``.  Never run by pytest (``tests/test_bench.py`` smoke-tests the harness).

Nothing here imports a framework at module level: the workers import the one they run.
"""
