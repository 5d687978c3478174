#!/usr/bin/env bash
# The chart's alert rules under promtool (tests/alerts/run.sh); needs no service.
exec "$(cd "$(dirname "$0")/../alerts" && pwd)/run.sh"
