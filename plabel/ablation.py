"""``python -m plabel.ablation``: moved to ``python -m plabel.experiments.ablation``; kept so earlier commands still work."""

from plabel.experiments.ablation import main

if __name__ == "__main__":
    raise SystemExit(main())
