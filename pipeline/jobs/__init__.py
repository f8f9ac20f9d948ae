"""Batch jobs: many models trained (optionally with k-fold dropout-rate selection) and exported from one TOML job
file (``batch``), in process or as Ray tasks (``on_ray``)."""
