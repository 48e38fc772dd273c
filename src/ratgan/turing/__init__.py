"""Blinded visual Turing test with expert raters (paper Table 3).

- :mod:`ratgan.turing.study`: draw scans, store a study (answer key, raters, shuffled items,
  answers) in one SQLite file;
- :mod:`ratgan.turing.render`: the single rendering rule that makes every served image alike;
- :mod:`ratgan.turing.stats`: Table 3, accuracy intervals, Fisher test, Fleiss' kappa, CSV;
- :mod:`ratgan.turing.app`: the rating and admin web app (Flask, served by waitress).
"""
