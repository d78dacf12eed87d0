"""Sweeps: a grid of rows x seeds run locally or as a SLURM array, and the table at the end."""
