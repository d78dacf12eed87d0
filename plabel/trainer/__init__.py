"""The trainer: a run from its folder to its summary (``run.py``), its rounds (``rounds.py``), the
training loop (``loop.py``), the scoring pass (``scoring_pass.py``), one round's selection
(``round_selection.py``), checkpoints (``checkpointer.py``), the run folder (``run_dir.py``),
outputs, tracking, setup and preemption."""
