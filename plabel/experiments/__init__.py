"""Experiments about the method (not used by a run): the ablation sweep (``ablation``) and the
article's entropy-vs-noise report (``entropy_report``)."""
