"""Mistakes a folder listing shows, found before any image is read (seconds, not minutes).

Opening a labeled imagefolder through ``datasets`` reads every file's metadata first; on a loaded
machine with a large set that took minutes before a wrong test folder or an oversized hold-out
was reported. The same checks are made here from the class folders' names and file counts, by
``train.py`` right after its options are parsed and by ``plabel launch`` before it starts any
process. The loaders check again (they see more: labels in parquet files, unreadable images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from plabel.config import ConfigError, RunConfig, SourceConfig


def _folder_classes(cfg: SourceConfig, field: str) -> Optional[dict[str, int]]:
    """Class name -> image count of a local imagefolder source; None when it is anything else."""
    from plabel.data.hf_source import _LOCAL_COPY_HINT, _class_root, _is_imagefolder
    from plabel.data.pool_index import scan_folder

    if cfg.source != "hf" or not cfg.name:
        return None
    path = Path(cfg.name).expanduser()
    if not path.exists():
        if cfg.name.startswith(("/", ".", "~")) or path.suffix == ".parquet":  # the loader's own rule for a local path
            raise ConfigError(f"{field}.name: local path {cfg.name!r} does not exist; point it at {_LOCAL_COPY_HINT}")
        return None  # a hub name (owner/name): the loader fetches it
    if not _is_imagefolder(path):
        return None
    root = _class_root(path, cfg.split)
    try:
        index = scan_folder(root, field)
    except ConfigError:
        raise ConfigError(f"{field}.name: no image files under {str(root)!r}; a labeled imagefolder keeps images under root/<class>/") from None
    counts: dict[str, int] = {}
    for i in range(len(index)):
        parts = Path(index.name(i)).parts
        if len(parts) < 2:
            return None  # images beside the class folders: the loader names them
        counts[parts[0]] = counts.get(parts[0], 0) + 1
    return counts


def precheck(cfg: RunConfig) -> None:
    """Raise the first mistake a listing shows; say nothing when there is none."""
    data = cfg.data
    train = _folder_classes(data.train, "data.train")
    test = _folder_classes(data.test, "data.test") if data.test.source == "hf" else None
    if data.audit is not None and not Path(data.audit).expanduser().is_file():
        raise ConfigError(f"data.audit: {data.audit!r} does not exist; give a CSV of path,label rows for hand-checked pool images")
    if data.unlabeled.source in ("folder", "list") and data.unlabeled.root and not Path(data.unlabeled.root).expanduser().exists():
        raise ConfigError(f"data.unlabeled.root: {data.unlabeled.root!r} does not exist; point it at the folder (or list file) of unlabeled images")
    if train is None:
        return
    names = sorted(train)
    if test is not None:
        unknown = sorted(set(test) - set(train))
        if unknown:
            shown = lambda n: ", ".join(n[:10]) + (f", ... ({len(n)} in all)" if len(n) > 10 else "")  # noqa: E731
            raise ConfigError(f"data.test: class {unknown[0]!r} is not a training class; the test classes ({shown(sorted(test))}) "
                              f"must be named as the training classes ({shown(names)})")
    n, smallest = sum(train.values()), min(train.values())
    own = data.unlabeled.source != "none"
    if own and data.test.source == "holdout" and data.test_holdout * 2 > n:
        raise ConfigError(f"data.test_holdout: {data.test_holdout} would hold out more than half of the {n} labeled samples; "
                          "lower it, or give a separate labeled test set with data.test.source/name")
    if own and data.val_per_class and data.val_per_class >= smallest:
        raise ConfigError(f"data.val_per_class: {data.val_per_class} would leave no labeled image to train on in a class "
                          f"of {smallest}; lower it (0 = no validation)")
