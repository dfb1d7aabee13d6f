"""Variational Monte Carlo: sampling, optimisation, the training loop."""
