#!/bin/sh
# Example jobpool task: the message body arrives on stdin, its metadata in JOBPOOL_* variables.
# Exit 0 to ack the message; any other code retries it (up to --max-attempts), then dead-letters.
set -eu
words=$(wc -w)
echo "message ${JOBPOOL_MESSAGE_ID:-?} (attempt ${JOBPOOL_ATTEMPT}, priority ${JOBPOOL_HEADER_PRIORITY:-none}): ${words} words"
if [ "$words" -eq 0 ]; then
  echo "empty message: nothing to count" >&2
  exit 1
fi
