"""The GPU race (benchmarks/gpu_race.py): data, recipes, snapshots, scoring, report."""
