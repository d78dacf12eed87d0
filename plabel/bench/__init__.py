"""Benchmarks (not used by a run): ``select`` (sharded selection vs the all-gather reference),
``speed`` (scoring and training steps vs bare loops, a large on-disk pool), and the process
spawner they share with the multi-process tests (``processes``)."""
