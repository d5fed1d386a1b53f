#!/usr/bin/env bash
# bash_execute `true` at c=1 and c=8 and 1 MiB of output against a posix_spawn loop of the same shell,
# side by side with the Go and Python mymcp: the rows of the one benchmark (bench/run) for this.
#
#   sudo bench/bash.sh [bench/run options, e.g. --quick, --rounds N, --skip-python]
exec "$(dirname "$0")/run" --only shell "$@"
