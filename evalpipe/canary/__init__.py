"""The canary: known faults injected into the real engine, compared with the clean run, to
show which signal of evalpipe sees a bug of which kind and size, at how many items.

``grid`` reads what to inject (a YAML grid or the built-in default); ``plan`` turns it into
the runs to make (the clean baseline and its repeat, one run per fault, one per benign
variant), grouped one engine start each; ``table`` turns the comparisons into one row per
fault and size (pure). :mod:`evalpipe.api.canary` runs it; the text, JSON and dashboard page
only read its rows.
"""
