#!/usr/bin/env bash
# Screenshots of the explorers for docs/explorers.md, from a real JupyterLab in headless Chromium:
# the notebooks are copied to a scratch folder (JupyterLab autosaves; the committed ones stay
# without outputs), run top to bottom there, and each explorer's output is photographed.
# Needs: JupyterLab in the venv (.venv/bin/pip install jupyterlab), playwright-core
# (npm install playwright-core, in $PLAYWRIGHT_DIR), Debian's chromium, FAIRLENS_DATA_DIR. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PLAYWRIGHT_DIR:?set PLAYWRIGHT_DIR to the folder where npm install playwright-core was run}"
: "${FAIRLENS_DATA_DIR:?set FAIRLENS_DATA_DIR to the data root (bbq/ inside)}"
scratch=$(mktemp -d)
cp notebooks/*.ipynb "$scratch/"
mkdir -p "$scratch/settings/@jupyterlab/notebook-extension" "$scratch/settings/@jupyterlab/apputils-extension"
# no "Jupyter news?" pop-up over the outputs
echo '{"fetchNews": "false", "checkForUpdates": false}' > "$scratch/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
# render every cell (no virtual scrolling), so that every output can be photographed
echo '{"windowingMode": "none"}' > "$scratch/settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
token=fairlens-screenshots
root=$([ "$(id -u)" = 0 ] && echo --allow-root || true)
JUPYTERLAB_SETTINGS_DIR="$scratch/settings" .venv/bin/jupyter lab --no-browser --port 8899 $root \
  --IdentityProvider.token=$token --ServerApp.root_dir="$scratch" >"$scratch/lab.log" 2>&1 &
lab=$!
trap 'kill $lab 2>/dev/null; rm -rf "$scratch"' EXIT
for _ in $(seq 120); do  # until the server answers
  curl -sf "http://127.0.0.1:8899/api/status?token=$token" >/dev/null && break
  kill -0 $lab 2>/dev/null || { cat "$scratch/lab.log"; exit 1; }
  sleep 1
done
url="http://127.0.0.1:8899/lab?token=$token"
export NODE_PATH="$PLAYWRIGHT_DIR/node_modules"
node .ci/screenshots/shoot.js "$url" 02_steering_and_ablation.ipynb docs/images \
  explorer-ablation,explorer-steering,explorer-tokens "the gate fires on"
node .ci/screenshots/shoot.js "$url" 01_layer_separability.ipynb docs/images \
  explorer-separability "separability: "
