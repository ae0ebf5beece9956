#!/bin/bash
# Session 17 (2026-12-07 16:48 UTC, commit f90f5f1, beside a `bench scale` run on the same 2 cores: read the ratios):
# a trial's MLflow calls in the driver, with MLflow's per-request Databricks probes searched for and skipped.
python benchmarks/tracking_calls.py 3 100 | tee benchmarks/data/tracking_calls_s17/tracking_calls.txt
