"""The report's statistics, pure numpy, scipy and pandas (no torch, no ray).

    curves.py    the curve forms fitted against compute: a power law for losses, a saturating
                 curve in [chance, 1] for scores (`fit_curve`)
    scaling.py   per-objective fits with bootstrap intervals over seeds (`fit_table`) and the
                 compute at which two objectives cross (`crossovers`, `crossover_sentence`)
    paired.py    paired differences of two objectives per task, across seeds and documents
                 (`paired_table`), the win matrix (`win_matrix`), and how many seeds a difference
                 needs (`seeds_needed`, `min_detectable_effect`)
"""
