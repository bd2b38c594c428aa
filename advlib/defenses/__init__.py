"""Defenses, one module per paper method (e.g. `advlib.defenses.mixgen`) plus the baselines they compare against."""
