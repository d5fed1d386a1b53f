#!/usr/bin/env bash
# grep and glob on the generated 50,000-file tree (kept in /var/tmp/mymcp-bench-tree) against rg, rg --files and find,
# side by side with the Go and Python mymcp: the rows of the one benchmark (bench/run) for this.
#
#   sudo bench/search.sh [bench/run options, e.g. --quick, --rounds N, --skip-python]
exec "$(dirname "$0")/run" --only search "$@"
