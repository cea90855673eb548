#!/bin/sh
# Rerun the dashboard's browser tests and keep their screenshots as docs/dashboard-running.png (after the second
# of six epochs, the run paused there by the test), docs/dashboard-done.png (the same page after the run ended) and
# docs/dashboard-robust.png (a robust run of two jobs).
set -e
cd "$(dirname "$0")/.."
POPVAE_DASHBOARD_SHOTS="$PWD/docs" .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_dashboard.py -k "live_run or robust_run"
ls -l docs/dashboard-running.png docs/dashboard-done.png docs/dashboard-robust.png
