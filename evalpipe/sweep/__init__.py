"""Sweeps: models × tasks × layouts (each CP layout with its baseline) × repeats as one job.

:mod:`~evalpipe.sweep.cells` holds the typed plan (cells, groups, pairs) and results;
:mod:`~evalpipe.sweep.plan` reads a plan file and expands it; :mod:`~evalpipe.sweep.group`
runs one group (one engine per (model, layout), every task of the pair) wherever it is
scheduled; the executors decide where: :mod:`~evalpipe.sweep.local` on this machine,
:mod:`~evalpipe.sweep.rayexec` on a Ray cluster (the optional extra ``evalpipe[ray]``;
nothing outside that module imports Ray).
"""
