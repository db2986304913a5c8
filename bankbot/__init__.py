"""The bankbot command line: setup, training, running, checks and benchmarks."""
