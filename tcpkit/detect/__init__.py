"""The science: simulation, baselines, scoring, distributed moments, attacks, benchmarks."""
