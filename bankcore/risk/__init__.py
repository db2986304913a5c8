"""Transfer risk control: signals → features → rules (hard floors, tunable thresholds) and a learned score."""
