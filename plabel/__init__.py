"""plabel: semi-supervised learning with entropy-selected pseudo-labels, on Accelerate.

``plabel.load_run(folder)`` gives a trained run's model, preprocessing and class names
(``plabel.use.run``); the rest of the package is the training application.
"""

from typing import Any

__version__ = "0.3.3"


def __getattr__(name: str) -> Any:  # torch is imported only when the API is used, not by `import plabel`
    if name in ("load_run", "Run", "Predictions"):
        from plabel.use import run

        return getattr(run, name)
    raise AttributeError(f"module 'plabel' has no attribute {name!r}")


__all__ = ["Predictions", "Run", "__version__", "load_run"]
