#!/bin/sh
# Runs the bgslot binary for `helm bgslot ...`: $BGSLOT_BIN, else bin/bgslot in this plugin,
# else bgslot on PATH. Arguments are passed through untouched.
if [ -n "${BGSLOT_BIN:-}" ]; then
  exec "$BGSLOT_BIN" "$@"
elif [ -x "$HELM_PLUGIN_DIR/bin/bgslot" ]; then
  exec "$HELM_PLUGIN_DIR/bin/bgslot" "$@"
elif command -v bgslot >/dev/null 2>&1; then
  exec bgslot "$@"
fi
echo "error: the bgslot binary was not found: install it (cargo install --path .) or set BGSLOT_BIN" >&2
exit 1
