# shellcheck shell=bash
# Sourced by scripts that start servers on port 0 (conformance/run.sh, bench/compare.sh).
#
# listening_port LOG PID: the port of the first "listening on HOST:PORT" line a server
# wrote to LOG (roomcast serve and the peer servers print one once they listen, with the
# port the kernel picked), waiting up to 20 s, and not once the process PID is gone.
listening_port() {
  local log="$1" pid="$2" line
  for _ in $(seq 400); do
    if line=$(grep -m1 -o 'listening on [^ ]*:[0-9][0-9]*' "$log" 2>/dev/null); then
      echo "${line##*:}"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
