"""The project's benchmarks, kept out of the shipped packages (launcher, recsys_core, jobs).
Run from the repository root: `python -m benchmarks.NAME`."""
