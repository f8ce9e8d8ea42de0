# chimed: `make run` starts the daemon on the embedded Chime service; `make test` installs
# everything (Debian packages where apt exists, a virtualenv, pip and npm packages) and tests.
# `make test-fast` and `make lint` need only the virtualenv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins libopus0 jq chromium \
	xvfb x11-xserver-utils
PROTOS := $(wildcard protos/chime/v1/*.proto) $(wildcard protos/chime/signaling/*.proto)
ARGS ?=

.PHONY: run test test-fast bench bench-audio bench-video lint proto proto-check api-check api-snapshot deps constraints system-deps web clean

run: deps
	$(BIN)/chimed $(ARGS)

test: deps
	$(BIN)/python -m pytest $(ARGS)

# The in-process tier: no browser, PulseAudio, daemon process or multi-second test.
FAST := not browser and not pulse and not daemon and not slow and not xvfb
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m "$(FAST)" $(ARGS)

bench: deps
	$(BIN)/python -m bench $(ARGS)

# `make bench` includes these; the audio figures alone (latency, active speaker, density), ~3 min.
bench-audio: deps
	$(BIN)/python -m bench --audio-only --out bench/results/audio.json $(ARGS)

# `make bench` includes these; the video figures alone (bare aiortc baselines, latency, CPU per
# stream sent, received and viewed, the service's forwarding, Chromium beside chimed), ~4 min.
bench-video: deps
	$(BIN)/python -m bench --video-only --out bench/results/video.json $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check daemon tests bench clients/python/chime/client.py
	$(BIN)/ruff format --check daemon tests bench clients/python/chime/client.py
	$(BIN)/mypy daemon/chimed clients/python/chime/client.py bench tests

# Regenerate the Python stubs (committed in clients/python) from protos/.
proto: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=clients/python --grpc_python_out=clients/python \
	  --mypy_out=clients/python --mypy_grpc_out=clients/python $(PROTOS)

# CI: the committed stubs must be exactly what `make proto` writes.
proto-check: proto
	git diff --exit-code -- clients/python
	test -z "$$(git status --porcelain -- clients/python)"

# The public API (chime.v1, see buf.yaml): lint at buf's STANDARD, and no change that breaks
# callers of the released API, as recorded in API_SNAPSHOT.
API_SNAPSHOT := protos/snapshots/chime-v1.binpb

api-check: $(VENV)/.installed
	$(BIN)/buf lint
	$(BIN)/buf breaking --against $(API_SNAPSHOT)

# Run on a release, deliberately: what API_SNAPSHOT holds is what api-check protects.
# Without source info, so comment edits leave it alone.
api-snapshot: $(VENV)/.installed
	$(BIN)/buf build --exclude-source-info -o $(API_SNAPSHOT)

deps: system-deps $(VENV)/.installed web

# Debian packages, installed only when missing and only where apt exists and we are root.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "note: missing system packages (install them yourself): $$missing"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# After a dependency change in pyproject.toml: the tested environment becomes the constraints.
constraints: $(VENV)/.installed
	{ echo "# The Python environment chimed is tested with: make deps installs with -c constraints.txt."; \
	  echo "# Regenerate after a dependency change with make constraints."; \
	  $(BIN)/pip freeze --exclude-editable; } > constraints.txt

# The embedded service's meeting page: amazon-chime-sdk-js bundled by esbuild into dist/.
WEB := daemon/chimed/embedded/web
NPM_FLAGS := --no-audit --no-fund --prefer-offline --loglevel=error

web: $(WEB)/dist/.built

$(WEB)/node_modules/.installed: $(WEB)/package.json $(wildcard $(WEB)/package-lock.json)
	cd $(WEB) && if [ -f package-lock.json ]; then npm ci $(NPM_FLAGS); else npm install $(NPM_FLAGS); fi
	touch $@

$(WEB)/dist/.built: $(WEB)/node_modules/.installed $(WEB)/build.mjs $(wildcard $(WEB)/src/*)
	cd $(WEB) && node build.mjs
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info $(WEB)/node_modules $(WEB)/dist
