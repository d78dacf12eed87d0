"""``python -m plabel.bench_speed``: moved to ``python -m plabel.bench.speed``; kept so earlier commands still work."""

from plabel.bench.speed import main

if __name__ == "__main__":
    main()
