"""SavedModel, TF Serving and TFLite export of keras_team models (to come)."""
