"""Token-level comparison of two runs' traces: the typed result (``types``), the pure
estimators (``stats``, ``loc``, ``inference``), the store reads (``runs``) and the JSON edge
(``json``, ``view``)."""
