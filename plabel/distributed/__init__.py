"""The distributed seam: which process acts (``processes.py``), every collective
(``collectives.py``), and the exact sharded selection a run uses (``sharded_selection.py``)."""
