# Source on the GPU machine (device tool): makes `import wanrt` work from the repo root and
# installs the carried wheels (diffusers etc., see BENCHMARKS.md) into /tmp/site.
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/wanrt
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
