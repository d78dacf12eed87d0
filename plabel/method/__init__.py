"""The method as pure tensor functions: scores and rankings (``scores.py``), the reference
selection (``selection.py``), the combined loss (``loss.py``) and the alpha / learning-rate
schedules (``schedule.py``). Nothing here knows about processes, accelerators or configs."""
