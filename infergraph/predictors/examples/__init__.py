"""Example predictors: how models written elsewhere plug into infergraph."""
