# shellcheck shell=sh
# Sourced by the database stand-ins' entrypoints (copied into each build context).
# file_env VAR: VAR's value from the file VAR_FILE names (Docker's secrets, mounted under
# /run/secrets), as the official image's file_env does: both set is refused, the file read
# as the user this part runs as. VAR is always a literal name (the entrypoints' calls).
file_env() {
  eval "fe_value=\${$1:-} fe_file=\${$1_FILE:-}"
  if [ -n "$fe_value" ] && [ -n "$fe_file" ]; then
    printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$1" "$1_FILE"
    exit 1
  fi
  if [ -n "$fe_file" ]; then
    fe_value=$(cat -- "$fe_file") || exit 1
  fi
  eval "$1=\$fe_value"
  # shellcheck disable=SC2163 # the variable named by $1
  export "$1"
  unset "$1_FILE" fe_value fe_file
}
