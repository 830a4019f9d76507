"""Backends start workers for the queued runs of a sweep: ``local`` (a process pool on this machine) and, later,
``slurm`` (array jobs). Every backend starts the same entry, ``python -m lsbench worker --sweep-dir DIR --index I``.
"""

BACKENDS = ("local", "slurm")
