#!/bin/sh
# Helm runs this when the plugin is installed or updated: it writes bgslot's manual pages into the
# plugin's man/man1, so `MANPATH="$(helm env HELM_PLUGINS)/bgslot/man:$MANPATH" man bgslot-deploy`
# works. Without a bgslot binary yet, it says how to get the pages later and lets the install go on.
if [ -n "${BGSLOT_BIN:-}" ]; then
  bgslot=$BGSLOT_BIN
elif [ -x "$HELM_PLUGIN_DIR/bin/bgslot" ]; then
  bgslot=$HELM_PLUGIN_DIR/bin/bgslot
elif command -v bgslot >/dev/null 2>&1; then
  bgslot=bgslot
else
  echo "bgslot plugin: bgslot is not installed yet; once it is, run: helm plugin update bgslot (or bgslot man DIR)" >&2
  exit 0
fi
"$bgslot" man "$HELM_PLUGIN_DIR/man/man1" >/dev/null || echo "bgslot plugin: could not write the manual pages" >&2
exit 0
