"""KerasTuner search over keras_team cuts, heads and learning rates (to come)."""
