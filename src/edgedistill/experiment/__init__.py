"""Experiments: recipe -> runs, the trained-model cache, results and reports."""
