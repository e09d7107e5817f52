#!/bin/bash
# The wheels bench/gpu.py needs on the device machine (its image has torch, numpy, pillow, pandas, scipy, scikit-learn,
# matplotlib, pyyaml, tifffile, click, packaging... but not these; vector labels (pyogrio, shapely, pyproj) are not on
# its path and would not fit the 64 MiB a call carries), for Python 3.12 on x86-64, into .whl/ (git-ignored
# through .git/info/exclude). Then, with the device tool:
#   run(carry=[".whl"], timeout_s=560, command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 bench/gpu.py")
set -e
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
py=${PYTHON:-python3}
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
  fastai==2.8.7 "fastcore>=1.8,<2" fasttransform==0.0.2 fastprogress==1.1.6 fastdownload==0.0.8 "plum-dispatch<2.10" \
  beartype==0.23.1 rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 \
  pyvips-binary==8.18.7 cffi==2.1.1 pycparser==3.12
$py -m pip wheel -q --no-deps -w .whl pyvips==3.2.0  # an sdist only: built here, pure Python (py3-none-any)
du -sh .whl; ls .whl
