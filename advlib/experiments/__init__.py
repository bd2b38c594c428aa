"""Per-notebook experiment plans: compose data, models, attacks and defenses into a paper's runs, with caching."""
