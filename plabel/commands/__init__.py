"""The ``plabel`` commands: ``train``, ``score`` and ``export`` (reports and experiments live in
``plabel.experiments``, benchmarks in ``plabel.bench``)."""
