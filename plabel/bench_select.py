"""``python -m plabel.bench_select``: moved to ``python -m plabel.bench.select``; kept so earlier commands still work."""

from plabel.bench.select import main

if __name__ == "__main__":
    main()
