"""The Chapter 5 line analysis: full-batch losses along the update directions of a training.

A ``linescan`` run trains like any run and, at every (or every k-th) step, measures the loss of the whole training
set (or a fixed subset) along the unit direction of the update the optimizer took, on a grid of step sizes.
"""
