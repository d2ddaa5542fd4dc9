"""Analysis of a results store: robustness metrics, correlation, speed, gallery."""
