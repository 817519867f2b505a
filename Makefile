# Quickstart: `make demo` (train a character LSTM on tinyshakespeare and sample) and `make test`.
# Both create .venv when missing. torch is pinned here to the 2.13.0 CPU wheel this project's machines
# carry; pyproject.toml itself accepts any torch 2.x.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_MINUTES ?= 5
# bf16 autocast on CPUs with bf16 arithmetic (AVX512-BF16, AMX): more steps in the demo's minutes
CPU_AMP := $(if $(shell grep -m1 -o -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null),--cpu-amp,)

# Real data sets live beside the project in ../shared/data when present (see README: Data).
ifneq ($(wildcard ../shared/data),)
export LSTMGEN_DATA ?= $(abspath ../shared/data)
endif

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/lstmgen train lm --data tinyshakespeare --tokenizer char --max-minutes $(DEMO_MINUTES) $(CPU_AMP) \
		--out runs/demo
	@echo; echo "== samples from runs/demo (loss curve: runs/demo/loss.png) =="
	$(BIN)/lstmgen generate runs/demo --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --seed 1
	@echo
	$(BIN)/lstmgen generate runs/demo --prompt "JULIET:" --max-new-tokens 300 --temperature 0.8 --seed 2

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .hypothesis
