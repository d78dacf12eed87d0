"""``python -m plabel.report``: moved to ``plabel.experiments.entropy_report`` (also ``plabel report``);
kept so earlier commands still work."""

import sys

from plabel.experiments.entropy_report import report_main

if __name__ == "__main__":
    raise SystemExit(report_main(sys.argv[1:], prog="python -m plabel.report"))
