"""Samplers: Euler ODE, the TAFS annealed chain and the SDE baselines, one trajectory type."""
