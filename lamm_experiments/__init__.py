"""The experiments around LAMM (Gao et al., AAAI 2024, arXiv 2312.08212): the program beside the library.

* :mod:`lamm_experiments.protocols`: the benchmark protocols as data, the config of every table, method, dataset
  and shot count with its source (``python -m lamm_experiments.protocols``);
* :mod:`lamm_experiments.sweep`: the job list of a benchmark, run so that failures, restarts and several workers
  are safe (``scripts/sweep.py``), each job under a guard that stops it with its runner (:mod:`.jobproc`);
* :mod:`lamm_experiments.tables`: the paper's tables and the few-shot figure from an output tree, with the
  published numbers of :file:`reference/` beside ours (``scripts/make_tables.py``);
* :mod:`lamm_experiments.results`: a run's ``results.json`` read and checked (a damaged one is named, not used);
* :mod:`lamm_experiments.parse_results`: ``results.json`` files aggregated over seeds (``scripts/parse_results.py``);
* :mod:`lamm_experiments.continual`: the accuracy matrix, metrics, tables and plot of continual runs
  (``continual.py``, ``scripts/continual_table.py``);
* :mod:`lamm_experiments.interpret`: what a checkpoint learned (``python -m lamm_experiments.interpret``);
* :mod:`lamm_experiments.synthetic`: the offline dataset of coloured shapes;
* :mod:`lamm_experiments.tabular`: the one markdown table writer.

The on-disk layout of a run (file names, format tags, the checkpoint search) is :mod:`lamm_plugin.layout`, which
the trainers write and these modules read. Importing this package, or any of its modules, imports no torch, numpy
or Dassl: the functions that read checkpoints or draw images import what they need.
"""

__all__ = [
    "continual",
    "interpret",
    "jobproc",
    "parse_results",
    "protocols",
    "results",
    "sweep",
    "synthetic",
    "tables",
    "tabular",
]
