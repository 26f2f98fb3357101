# sourced at the start of every device call: carried wheels + this checkout into /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null || exit 1
export PYTHONSAFEPATH=1 PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 MEDBENCH_EXPERTS=/tmp/experts
