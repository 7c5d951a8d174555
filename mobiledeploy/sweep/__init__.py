"""``mobiledeploy sweep``: the alpha x resolution x precision trade-off as one command.

- ``grid``: the sweep's options, checked before TensorFlow is imported, expanded into
  configs, each with a hash of its inputs (what makes a rerun resumable).
- ``run``: one config end to end (export, bench, eval, device estimates) and the
  executors that run many (local processes, Ray).
- ``pareto``: the Pareto front per target, the recommendation under constraints, the
  "slower than its fp32 sibling" warnings.
- ``report``: the results table (JSON, CSV, Markdown) and the self-contained HTML report
  with its PNG plots.
"""
